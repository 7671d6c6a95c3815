"""From an outbox row to what the renderer and the senders need, read once.

``build_notification`` turns a ``Snapshot`` (``outbound.snapshot``: the row, its contact,
ticket, line items and thread, read in the claim) into a ``Notification``: the
renderer's ``NotificationContext`` (plain dataclasses, see ``outbound.context``), the
contact, the thread's Message-IDs for ``In-Reply-To`` and ``References``, the stage's
WhatsApp template and the survey. After that nothing is read again: rendering and
sending happen outside any transaction, and a fallback to the other channel reuses the
same snapshot. ``load_notification`` and ``load_outbox`` read the snapshot one statement
at a time (previews, tests, databases without the one-statement claim).

``outbound.mime.compose_email`` builds the ``EmailMessage`` (RFC 5322 headers, RFC 3834 markers,
multipart/alternative text + HTML) from a rendered email.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from config.pipelines import Catalog, Stage
from config.settings import Settings
from models.base import utcnow
from models.identity import make_message_id
from models.survey import Survey
from models.ticket import Ticket
from outbound.context import (
    LineItemView,
    NotificationContext,
    PersonView,
    ProviderView,
    RecipientView,
    SurveyView,
    TicketRef,
    TicketView,
    VehicleView,
)
from outbound.render import stage_template_key
from outbound.snapshot import OUTBOX, OUTBOX_COLUMNS, REFERENCES_LIMIT, ContactInfo, Snapshot, read, thread_ids

__all__ = [
    "OUTBOX_COLUMNS", "REFERENCES_LIMIT", "ContactInfo", "Notification", "build_notification", "load_notification",
    "load_outbox", "renderer_key",
]

#: Outbox templates that are stage texts: the acknowledgement is the first stage's text.
STAGE_TEMPLATES = ("ack", "stage")
#: Outbox templates whose renderer key is the same word.
NOTICE_TEMPLATES = (
    "reply", "survey", "survey_thanks", "joined_ticket", "flagged_new_ticket", "optout_confirm",
    "optin_confirm",
)
ZERO = Decimal("0.00")
CENT = Decimal("0.01")
_LINE_KINDS = {"service": "servicio", "part": "refacción"}


@dataclass
class Notification:
    """One outbox row, ready to render and send on either channel.

    Attributes:
        context: the renderer's context; ``for_channel`` fills in the channel.
        contact: the recipient.
        from_address: our inbox for this ticket; From, Reply-To and envelope sender.
        message_id: the Message-ID minted for this row (without angle brackets).
        thread: Message-IDs of the ticket's mail, oldest first, for References.
        whatsapp_template: the stage's approved Content SID, if any.
        cancel_reason: set when the row must not be sent any more (a survey whose
            ticket was reopened, or that expired).
    """

    outbox_id: int
    template: str
    channel: str
    payload: dict[str, Any]
    attempts: int
    contact: ContactInfo
    ticket_id: int | None
    context: NotificationContext
    from_address: str
    message_id: str
    thread: list[str] = field(default_factory=list)
    whatsapp_template: str | None = None
    survey_id: int | None = None
    cancel_reason: str | None = None

    def for_channel(self, channel: str) -> NotificationContext:
        recipient = dataclasses.replace(self.context.recipient, channel=channel)  # type: ignore[arg-type]
        return dataclasses.replace(self.context, recipient=recipient)

    @property
    def whatsapp_variables(self) -> dict[str, str]:
        """The approved template's variables (see ``outbound.whatsapp``)."""
        ticket = self.context.ticket
        return {
            "1": self.context.recipient.name or "cliente",
            "2": str(ticket.number) if ticket else "",
            "3": ticket.stage if ticket else "",
            "4": ticket.pipeline_label if ticket else self.context.company_name,
        }


def renderer_key(template: str, payload: dict[str, Any], pipeline: str | None, catalog: Catalog) -> str:
    """The renderer's key for an outbox template (``pipeline``: the ticket's).

    Raises:
        LookupError: an outbox template nobody knows (a row written by newer code).
    """
    if template in STAGE_TEMPLATES:
        pipeline_id = payload.get("pipeline") or pipeline
        if not pipeline_id:
            raise LookupError(f"notification {template!r} without a pipeline")
        stage = payload.get("stage") or catalog.get_pipeline(pipeline_id).first.name
        return stage_template_key(pipeline_id, stage)
    if template in NOTICE_TEMPLATES:
        return template
    raise LookupError(f"unknown notification template {template!r}")


# -- the reads of the rarer templates, built once -------------------------------------------

_SURVEY = select(Survey.id, Survey.token, Survey.expires_at, Survey.answered_at, Survey.score).where(
    Survey.id == bindparam("sid")
)
_OTHER_OPEN = (
    select(Ticket.number, Ticket.subject)
    .where(Ticket.requester_id == bindparam("cid"), Ticket.state == "Abierto", Ticket.id != bindparam("tid"))
    .order_by(Ticket.id.desc())
    .limit(10)
)


def load_outbox(conn: Connection, outbox_id: int, *, settings: Settings, catalog: Catalog) -> Notification:
    """``load_notification`` for a row not claimed (previews, tests of every template).

    Raises:
        LookupError: no such row (and see ``load_notification``).
    """
    row = conn.execute(OUTBOX, {"oid": outbox_id}).first()
    if row is None:
        raise LookupError(f"no notification {outbox_id}")
    return load_notification(conn, row._mapping, settings=settings, catalog=catalog)


def load_notification(conn: Connection, row: Mapping[str, Any], *, settings: Settings,
                      catalog: Catalog) -> Notification:
    """Read what the outbox ``row`` needs, in the caller's transaction.

    Parameters:
        row: the outbox row's ``OUTBOX_COLUMNS`` by name (as ``UPDATE ... RETURNING`` gives them).

    Raises:
        LookupError: the contact is gone, or the template is unknown.
    """
    return build_notification(conn, read(conn, row), settings=settings, catalog=catalog)


def build_notification(conn: Connection, snap: Snapshot, *, settings: Settings, catalog: Catalog) -> Notification:
    """The ``Notification`` of ``snap``; reads more (on ``conn``) only for the templates
    that need it: a survey, the contact's other open tickets, a survey's score.

    Raises:
        LookupError: the contact is gone, or the template is unknown.
    """
    row = snap.row
    contact = snap.contact
    if contact is None:
        raise LookupError(f"notification {row['id']} has no contact")
    ticket = snap.ticket
    template = row["template"]
    payload = dict(row["payload"] or {})
    from_address = (ticket["inbox_address"] if ticket is not None else None) or settings.primary_inbox
    message_id = make_message_id(row["id"], from_address.rsplit("@", 1)[-1], settings.secret_key)
    stage = _stage(catalog, payload, ticket)
    ticket_view = _ticket_view(ticket, snap.items, stage, catalog, settings) if ticket is not None else None
    ctx = NotificationContext(
        template=renderer_key(template, payload, ticket["pipeline"] if ticket is not None else None, catalog),
        ticket=ticket_view,
        recipient=RecipientView(
            name=contact.name or "",
            role="fleet_manager" if row["audience"] == "fleet_manager" else "requester",
            channel="whatsapp" if row["channel"] == "whatsapp" else "email",
            timezone=contact.timezone or settings.timezone,
            locale=contact.locale or settings.locale,
        ),
        company_name=settings.company_name,
        reply_address=from_address,
        public_url=settings.public_url.rstrip("/"),
        note=payload.get("note") if template == "stage" else None,
        reopened=bool(payload.get("reopened")) if template == "stage" else False,
        previous_stage=payload.get("previous_stage"),
        staff_text=payload.get("text") if template == "reply" else None,
        score=payload.get("score"),
        quoted_number=payload.get("linked_number") or payload.get("quoted_number"),
    )
    note = Notification(
        outbox_id=row["id"],
        template=template,
        channel=row["channel"],
        payload=payload,
        attempts=row["attempts"],
        contact=contact,
        ticket_id=row["ticket_id"],
        context=ctx,
        from_address=from_address,
        message_id=message_id,
        whatsapp_template=stage.whatsapp_template if stage is not None and template in STAGE_TEMPLATES else None,
    )
    if ticket is not None:
        note.thread = thread_ids(snap.thread_latest, snap.thread_oldest, exclude=message_id)
    if template == "survey":
        _add_survey(conn, note, ticket, settings)
    elif template == "joined_ticket" and ticket is not None:
        others = [TicketRef(number=n, subject=s or "")
                  for n, s in conn.execute(_OTHER_OPEN, {"cid": contact.id, "tid": ticket["id"]})]
        note.context = dataclasses.replace(note.context, other_open_tickets=others)
    elif template == "survey_thanks" and ctx.score is None and payload.get("survey_id"):
        survey = conn.execute(_SURVEY, {"sid": payload["survey_id"]}).first()
        note.context = dataclasses.replace(note.context, score=survey.score if survey else None)
    return note


def _stage(catalog: Catalog, payload: dict[str, Any], ticket: Mapping[str, Any] | None) -> Stage | None:
    """The stage the message is about: the one entered (payload), else the current one."""
    pipeline_id = payload.get("pipeline") or (ticket["pipeline"] if ticket is not None else None)
    name = payload.get("stage") or (ticket["stage"] if ticket is not None else None)
    if not pipeline_id:
        return None
    try:
        pipeline = catalog.get_pipeline(pipeline_id)
        return pipeline.stage(name) if name else pipeline.first
    except LookupError:
        return None


def _ticket_view(t: Mapping[str, Any], items: Iterable[tuple[str, str, Any, Any]], stage: Stage | None,
                 catalog: Catalog, settings: Settings) -> TicketView:
    try:
        label = catalog.get_pipeline(t["pipeline"]).label
    except LookupError:
        label = t["pipeline"]
    stage_name = stage.name if stage is not None else t["stage"]
    state = stage.state if stage is not None else t["state"]
    warranty = bool(t["warranty"])
    lines = []
    for kind, description, quantity, unit_price in items:
        quantity = Decimal(quantity)
        price = ZERO if warranty else Decimal(unit_price)
        lines.append(LineItemView(
            kind=_LINE_KINDS.get(kind, "servicio"),  # type: ignore[arg-type]
            description=description, quantity=quantity, unit_price=price,
            amount=(quantity * price).quantize(CENT),
        ))
    assignee = None
    if t["assignee_id"] is not None:
        name = t["assignee_name"] or t["assignee_email"] or t["assignee_phone"] or f"contact {t['assignee_id']}"
        assignee = PersonView(name=name, email=t["assignee_email"], phone=t["assignee_phone"])
    return TicketView(
        number=t["number"],
        tag=f"[{settings.ticket_prefix}#{t['number']}]",
        subject=t["subject"] or "",
        pipeline_id=t["pipeline"],
        pipeline_label=label,
        stage=stage_name,
        stage_description=stage.description if stage is not None else "",
        state=state,
        portal_status=f"{state}-{stage_name}",
        kind="service" if t["kind"] == "service" else "attention",
        opened_at=t["created_at"],
        vehicle=VehicleView(vin=t["vin"], plate=t["plate"], make=t["make"], model=t["model"], year=t["year"])
        if t["vin"] is not None else None,
        provider=ProviderView(name=t["provider_name"], address=t["provider_address"], phone=t["provider_phone"])
        if t["provider_name"] is not None else None,
        appointment_at=t["appointment_at"],
        expected_end_at=t["expected_end_at"],
        line_items=lines,
        total=sum((line.amount for line in lines), ZERO),
        warranty=warranty,
        mileage=t["mileage"],
        account_executive=assignee,
    )


def _add_survey(conn: Connection, note: Notification, ticket: Mapping[str, Any] | None,
                settings: Settings) -> None:
    survey_id = note.payload.get("survey_id")
    survey = conn.execute(_SURVEY, {"sid": survey_id}).first() if survey_id else None
    if survey is None:
        note.cancel_reason = "the survey no longer exists"
        return
    note.survey_id = survey.id
    base = settings.public_url.rstrip("/")
    note.context = dataclasses.replace(
        note.context,
        survey=SurveyView(
            token=survey.token,
            urls={score: f"{base}/encuesta/{survey.token}?score={score}" for score in range(1, 6)},
            expires_at=survey.expires_at,
        ),
    )
    if survey.answered_at is not None:
        note.cancel_reason = "the survey was already answered"
    elif survey.expires_at <= utcnow():
        note.cancel_reason = "the survey expired before it could be sent"
    elif ticket is not None and ticket["state"] != "Cerrado":
        note.cancel_reason = "the ticket was reopened before its survey was sent"

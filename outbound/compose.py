"""From an outbox row to what the renderer and the senders need, read once.

``load_notification`` runs inside the claim transaction and copies everything a send
needs out of the database: the renderer's ``NotificationContext`` (plain dataclasses, see
``outbound.context``), the contact, the thread's Message-IDs for ``In-Reply-To`` and
``References``, the stage's WhatsApp template and the survey. After that nothing is read
again: rendering and sending happen outside any transaction, and a fallback to the other
channel reuses the same snapshot.

``compose_email`` builds the ``EmailMessage`` (RFC 5322 headers, RFC 3834 markers,
multipart/alternative text + HTML) from a rendered email.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from config.pipelines import Catalog, Stage
from config.settings import Settings
from models.base import utcnow
from models.contact import Contact
from models.identity import make_message_id
from models.message import Message
from models.outbox import Outbox
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

#: Outbox templates that are stage texts: the acknowledgement is the first stage's text.
STAGE_TEMPLATES = ("ack", "stage")
#: Outbox templates whose renderer key is the same word.
NOTICE_TEMPLATES = (
    "reply", "survey", "survey_thanks", "joined_ticket", "flagged_new_ticket", "optout_confirm",
    "optin_confirm",
)
#: How many Message-IDs go in References (the root plus the most recent ones).
REFERENCES_LIMIT = 10
_LINE_KINDS = {"service": "servicio", "part": "refacción"}


@dataclass
class Notification:
    """One outbox row, ready to render and send on either channel.

    Attributes:
        context: the renderer's context; ``for_channel`` fills in the channel.
        contact: the recipient (detached ORM row, relations loaded).
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
    contact: Contact
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


def renderer_key(template: str, payload: dict[str, Any], ticket: Ticket | None, catalog: Catalog) -> str:
    """The renderer's key for an outbox template.

    Raises:
        LookupError: an outbox template nobody knows (a row written by newer code).
    """
    if template in STAGE_TEMPLATES:
        pipeline_id = payload.get("pipeline") or (ticket.pipeline if ticket else None)
        if not pipeline_id:
            raise LookupError(f"notification {template!r} without a pipeline")
        stage = payload.get("stage") or catalog.get_pipeline(pipeline_id).first.name
        return stage_template_key(pipeline_id, stage)
    if template in NOTICE_TEMPLATES:
        return template
    raise LookupError(f"unknown notification template {template!r}")


def load_notification(session: Session, row: Outbox, *, settings: Settings, catalog: Catalog) -> Notification:
    """Read what ``row`` needs, in the caller's transaction (see the module docstring).

    Raises:
        LookupError: the contact is gone, or the template is unknown.
    """
    payload = dict(row.payload or {})
    contact = session.get(Contact, row.contact_id, options=[selectinload(Contact.emails)]) if row.contact_id else None
    if contact is None:
        raise LookupError(f"notification {row.id} has no contact")
    ticket = None
    if row.ticket_id is not None:
        ticket = session.get(
            Ticket,
            row.ticket_id,
            options=[
                joinedload(Ticket.vehicle),
                joinedload(Ticket.provider),
                joinedload(Ticket.assignee).selectinload(Contact.emails),
                selectinload(Ticket.line_items),
            ],
        )
    from_address = (ticket.inbox_address if ticket is not None else None) or settings.primary_inbox
    message_id = make_message_id(row.id, from_address.rsplit("@", 1)[-1], settings.secret_key)
    stage = _stage(catalog, payload, ticket)
    ctx = NotificationContext(
        template=renderer_key(row.template, payload, ticket, catalog),
        ticket=_ticket_view(ticket, stage, catalog, settings) if ticket is not None else None,
        recipient=RecipientView(
            name=contact.name or "",
            role="fleet_manager" if row.audience == "fleet_manager" else "requester",
            channel="whatsapp" if row.channel == "whatsapp" else "email",
            timezone=contact.timezone or settings.timezone,
            locale=contact.locale or settings.locale,
        ),
        company_name=settings.company_name,
        reply_address=from_address,
        public_url=settings.public_url.rstrip("/"),
        note=payload.get("note") if row.template == "stage" else None,
        reopened=bool(payload.get("reopened")) if row.template == "stage" else False,
        previous_stage=payload.get("previous_stage"),
        staff_text=payload.get("text") if row.template == "reply" else None,
        score=payload.get("score"),
        quoted_number=payload.get("linked_number") or payload.get("quoted_number"),
    )
    note = Notification(
        outbox_id=row.id,
        template=row.template,
        channel=row.channel,
        payload=payload,
        attempts=row.attempts,
        contact=contact,
        ticket_id=row.ticket_id,
        context=ctx,
        from_address=from_address,
        message_id=message_id,
        whatsapp_template=stage.whatsapp_template if stage is not None and row.template in STAGE_TEMPLATES else None,
    )
    if ticket is not None:
        note.thread = _thread(session, ticket.id, exclude=message_id)
    if row.template == "survey":
        _add_survey(session, note, ticket, settings)
    elif row.template == "joined_ticket" and ticket is not None:
        note.context = dataclasses.replace(note.context, other_open_tickets=_other_open(session, ticket, contact))
    elif row.template == "survey_thanks" and ctx.score is None and payload.get("survey_id"):
        score = session.scalar(select(Survey.score).where(Survey.id == payload["survey_id"]))
        note.context = dataclasses.replace(note.context, score=score)
    return note


def compose_email(note: Notification, subject: str, text: str, html: str, *, company_name: str,
                  now: datetime) -> EmailMessage:
    """The message for ``note``: threading headers, RFC 3834 markers, text + HTML parts.

    Raises:
        ValueError: the contact has no e-mail address.
    """
    to = note.contact.email
    if not to:
        raise ValueError("the contact has no e-mail address")
    msg = EmailMessage()
    msg["From"] = Address(company_name, addr_spec=note.from_address)
    msg["To"] = Address(note.contact.name or "", addr_spec=to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{note.message_id}>"
    if note.thread:
        msg["In-Reply-To"] = f"<{note.thread[-1]}>"
        msg["References"] = " ".join(f"<{mid}>" for mid in note.thread)
    msg["Reply-To"] = note.from_address
    # RFC 3834: automatic, so that autoresponders (and Exchange) do not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg


# -- internals ------------------------------------------------------------------------------


def _stage(catalog: Catalog, payload: dict[str, Any], ticket: Ticket | None) -> Stage | None:
    """The stage the message is about: the one entered (payload), else the current one."""
    pipeline_id = payload.get("pipeline") or (ticket.pipeline if ticket else None)
    name = payload.get("stage") or (ticket.stage if ticket else None)
    if not pipeline_id:
        return None
    try:
        pipeline = catalog.get_pipeline(pipeline_id)
        return pipeline.stage(name) if name else pipeline.first
    except LookupError:
        return None


def _ticket_view(ticket: Ticket, stage: Stage | None, catalog: Catalog, settings: Settings) -> TicketView:
    try:
        label = catalog.get_pipeline(ticket.pipeline).label
    except LookupError:
        label = ticket.pipeline
    stage_name = stage.name if stage is not None else ticket.stage
    state = stage.state if stage is not None else ticket.state
    warranty = bool(ticket.warranty)
    items = [
        LineItemView(
            kind=_LINE_KINDS.get(item.kind, "servicio"),  # type: ignore[arg-type]
            description=item.description,
            quantity=Decimal(item.quantity),
            unit_price=Decimal(0) if warranty else Decimal(item.unit_price),
            amount=item.amount,
        )
        for item in ticket.line_items
    ]
    vehicle = ticket.vehicle
    provider = ticket.provider
    assignee = ticket.assignee
    return TicketView(
        number=ticket.number,
        tag=f"[{settings.ticket_prefix}#{ticket.number}]",
        subject=ticket.subject or "",
        pipeline_id=ticket.pipeline,
        pipeline_label=label,
        stage=stage_name,
        stage_description=stage.description if stage is not None else "",
        state=state,
        portal_status=f"{state}-{stage_name}",
        kind="service" if ticket.kind == "service" else "attention",
        opened_at=ticket.created_at,
        vehicle=VehicleView(vin=vehicle.vin, plate=vehicle.plate, make=vehicle.make, model=vehicle.model,
                            year=vehicle.year) if vehicle is not None else None,
        provider=ProviderView(name=provider.name, address=provider.address, phone=provider.phone)
        if provider is not None else None,
        appointment_at=ticket.appointment_at,
        expected_end_at=ticket.expected_end_at,
        line_items=items,
        total=sum((i.amount for i in items), Decimal("0.00")),
        warranty=warranty,
        mileage=ticket.mileage,
        account_executive=PersonView(name=assignee.display(), email=assignee.email, phone=assignee.phone)
        if assignee is not None else None,
    )


def _thread(session: Session, ticket_id: int, *, exclude: str) -> list[str]:
    """The root and the latest Message-IDs of the ticket's mail, oldest first."""
    base = select(Message.external_id).where(
        Message.ticket_id == ticket_id,
        Message.channel == "email",
        Message.external_id != exclude,
        Message.external_id.not_like("local.%"),
    )
    latest = list(session.scalars(base.order_by(Message.id.desc()).limit(REFERENCES_LIMIT)))
    latest.reverse()
    if len(latest) == REFERENCES_LIMIT:
        root = session.scalar(base.order_by(Message.id).limit(1))
        if root is not None and root != latest[0]:
            latest = [root, *latest[1:]]
    return latest


def _add_survey(session: Session, note: Notification, ticket: Ticket | None, settings: Settings) -> None:
    survey = session.get(Survey, note.payload.get("survey_id")) if note.payload.get("survey_id") else None
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
    elif ticket is not None and ticket.state != "Cerrado":
        note.cancel_reason = "the ticket was reopened before its survey was sent"


def _other_open(session: Session, ticket: Ticket, contact: Contact) -> list[TicketRef]:
    rows = session.execute(
        select(Ticket.number, Ticket.subject)
        .where(Ticket.requester_id == contact.id, Ticket.state == "Abierto", Ticket.id != ticket.id)
        .order_by(Ticket.id.desc())
        .limit(10)
    )
    return [TicketRef(number=number, subject=subject or "") for number, subject in rows]

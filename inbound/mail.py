"""The mail handler: parse, classify, thread and store committed raw mail.

Called by ``inbound.process.Processor`` for a batch inside one transaction, in two steps:
``prepare`` does everything that needs no database (parsing happens once; the parsed
message feeds classification, forward detection, threading and storage) and names what
threading will look up, so that the batch asks for all of it at once; ``handle`` then
decides and adds the rows, which the batch writes in one flush.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.pipelines import Catalog
from config.settings import Settings
from inbound.bounce import BounceReport
from inbound.classify import Classification, classify
from inbound.forward import Forwarded, find_forward
from inbound.parse import Address, ParsedMessage, UnparseableMessage, parse_message
from inbound.process import Outcome, Quarantine, RawRow
from inbound.quotes import cut_reply
from inbound.store import FileData, attach_files
from inbound.thread import Decision, cited_numbers, decide, header_ids, is_duplicate
from models.base import utcnow
from models.contact import Contact, ContactEmail, get_or_create_by_email, normalize_email
from models.deferred import deferring
from models.identity import is_own_message_id, own_outbox_id, synthetic_message_id
from models.lookups import Keys
from models.outbox import DeliveryEvent, Outbox
from models.ticket import Ticket
from models.tickets import (
    NewMessage,
    add_message,
    add_message_later,
    add_participant,
    flag,
    open_ticket,
    subject_key,
    touch,
)

log = logging.getLogger("helpdesk.inbound.mail")


@dataclass
class MailPlan:
    """One raw mail as read without the database: parsed once, for every later step.

    ``error`` is set when the mail cannot be processed (it is quarantined with it).
    """

    error: str | None = None
    parsed: ParsedMessage | None = None
    verdict: Classification | None = None
    message_id: str = ""
    forwarded: Forwarded | None = None
    subject: str = ""
    text: str = ""
    reply_text: str = ""
    cited: list[tuple[int, str]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """message, auto_reply, bounce or loop (the classification's)."""
        return self.verdict.kind if self.verdict is not None else "message"


class MailHandler:
    """Parse, classify, thread and store raw mails (SMTP, IMAP, the pipe, the CLI)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.own = set(settings.inbox_map)

    def prepare(self, raw: RawRow) -> MailPlan:
        """Everything that needs no database; never raises (errors go into the plan)."""
        settings = self.settings
        try:
            parsed = parse_message(raw.data)
        except UnparseableMessage as exc:
            return MailPlan(error=f"unparseable message: {exc.reason}")
        verdict = classify(
            parsed, own_addresses=self.own,
            is_own_message_id=lambda mid: is_own_message_id(mid, settings.secret_key),
        )
        plan = MailPlan(parsed=parsed, verdict=verdict,
                        message_id=parsed.message_id or synthetic_id(raw.data))
        if verdict.kind in ("loop", "bounce"):
            return plan
        sender = parsed.from_
        if not sender.email:
            plan.error = "no sender address (From) to thread or answer"
            return plan
        if settings.is_staff(sender.email):
            forwarded = find_forward(parsed)
            if forwarded is not None and (
                not forwarded.from_.email or settings.is_staff(forwarded.from_.email)
            ):
                forwarded = None  # staff forwarding staff: an ordinary message
            plan.forwarded = forwarded
        forwarded = plan.forwarded
        plan.subject = (forwarded.subject if forwarded and forwarded.subject else parsed.subject) or ""
        plan.text = forwarded.text if forwarded else parsed.text
        plan.reply_text = cut_reply(forwarded.text) if forwarded else parsed.reply_text
        texts = [plan.reply_text] + ([forwarded.text] if forwarded else [])
        plan.cited = cited_numbers(parsed.subject or plan.subject, texts, settings.ticket_prefix)
        return plan

    def keys(self, plan: MailPlan, keys: Keys) -> None:
        """What handling ``plan`` will look up, for ``Lookups.prefetch``."""
        parsed = plan.parsed
        if plan.error or parsed is None or plan.kind in ("loop", "bounce"):
            return
        keys.message_ids.add(plan.message_id)
        for mid in header_ids(parsed.in_reply_to) + header_ids(parsed.references):
            keys.message_ids.add(mid)
            outbox_id = own_outbox_id(mid, self.settings.secret_key)
            if outbox_id is not None:
                keys.outbox_ids.add(outbox_id)
        author = plan.forwarded.from_ if plan.forwarded else parsed.from_
        for address in [author.email, parsed.from_.email, *parsed.cc]:
            if address:
                keys.emails.add(normalize_email(address))
        keys.numbers.update(number for number, _ in plan.cited)
        keys.subject_keys.add(subject_key(parsed.subject or plan.subject))

    def handle(self, session: Session, raw: RawRow, plan: MailPlan, catalog: Catalog) -> Outcome:
        """Thread and store one prepared mail; returns what happened (kept on the row)."""
        settings = self.settings
        if plan.error is not None:
            raise Quarantine(plan.error)
        assert plan.parsed is not None and plan.verdict is not None
        if plan.kind == "loop":
            log.warning("mail loop dropped (raw %s): %s", raw.id, plan.verdict.reason)
            return f"loop dropped: {plan.verdict.reason}"
        if plan.kind == "bounce":
            return record_bounce(session, plan.verdict.bounce, settings)
        if is_duplicate(session, "email", plan.message_id):
            return f"duplicate of <{plan.message_id}>"
        # A concurrent twin (same Message-ID by another door) makes the flush fail; the
        # Processor then runs this again and the duplicate check above sees the winner.
        # Messages and participants are plain INSERTs after the flush (models.deferred).
        with deferring(session):
            return thread_and_store(session, raw, plan, settings, catalog)


def synthetic_id(data: bytes) -> str:
    return synthetic_message_id(hashlib.sha256(data).hexdigest())


def thread_and_store(
    session: Session, raw: RawRow, plan: MailPlan, settings: Settings, catalog: Catalog,
) -> Outcome:
    parsed, forwarded, kind = plan.parsed, plan.forwarded, plan.kind
    assert parsed is not None
    sender = parsed.from_
    author: Address = forwarded.from_ if forwarded else sender
    contact = get_or_create_by_email(session, author.email or "", author.name or "")
    decision = decide(
        session, contact=contact, subject=parsed.subject or plan.subject,
        in_reply_to=parsed.in_reply_to, reference_ids=parsed.references,
        texts=[], settings=settings, candidates=plan.cited,
    )
    if kind == "auto_reply" and (decision.ticket is None or decision.threaded_by == "subject"):
        return "auto-reply ignored (no ticket opened, nothing answered)"
    new = NewMessage(
        channel="email", external_id=plan.message_id, subject=parsed.subject, text=plan.text,
        reply_text=plan.reply_text, html=parsed.html, sender=_display(sender), raw_id=raw.id,
        threaded_by=decision.threaded_by, forwarded_by=sender.email if forwarded else None,
        created_at=utcnow(),
    )
    ticket = _ticket_for(session, decision, contact, plan.subject, parsed, raw, kind, settings, catalog)
    if decision.ticket is not None:
        add_participant(session, ticket, contact, "cc")
        touch(session, ticket)
    if forwarded is not None:
        staff = get_or_create_by_email(session, sender.email or "", sender.name or "", role="staff")
        add_participant(session, ticket, staff, "forwarder")
    files = [
        FileData(a.filename or "adjunto", a.content_type, a.data, a.sha256, a.inline, a.content_id)
        for a in parsed.attachments
    ]
    if files:
        attach_files(session, add_message(session, ticket, contact, new), files)
    else:
        add_message_later(session, ticket, contact, new)
    verb = "added to" if decision.ticket is not None else "opened"
    how = f"{kind}, " if kind != "message" else ""
    # The number of a new ticket is known after the batch's flush: say it then.
    return lambda: f"{how}{verb} ticket {ticket.number} by {decision.threaded_by}"


def _ticket_for(
    session: Session, decision: Decision, contact: Contact, subject: str, parsed: ParsedMessage,
    raw: RawRow, kind: str, settings: Settings, catalog: Catalog,
) -> Ticket:
    if decision.ticket is not None:
        if decision.flag_reason:
            flag(decision.ticket, decision.flag_reason)
        return decision.ticket
    inbox, pipeline = route(parsed, raw, settings)
    ticket = open_ticket(
        session, catalog=catalog, settings=settings, pipeline_id=pipeline, requester=contact,
        subject=subject or "(sin asunto)", inbox_address=inbox,
        acknowledge=kind == "message", linked_number=decision.linked_number,
        attention_reason=decision.flag_reason, flush=False,
    )
    for address in parsed.cc:
        if address and address.lower() not in settings.inbox_map and address != contact.email:
            add_participant(session, ticket, get_or_create_by_email(session, address), "cc")
    return ticket


def route(parsed: ParsedMessage, raw: RawRow, settings: Settings) -> tuple[str, str]:
    """(inbox address, pipeline) from the recipients: the envelope first, then To and Cc."""
    candidates: list[str] = []
    if raw.envelope_to:
        candidates += [a.strip().lower() for a in raw.envelope_to.split(",")]
    candidates += parsed.to + parsed.cc
    for address in candidates:
        pipeline = settings.inbox_map.get(address)
        if pipeline is not None:
            return address, pipeline
    return settings.primary_inbox, settings.default_pipeline


def record_bounce(session: Session, report: BounceReport | None, settings: Settings) -> str:
    """Mark the notification a bounce is about as bounced; never answer a bounce."""
    if report is None:
        return "bounce without details ignored"
    row: Outbox | None = None
    outbox_id = own_outbox_id(report.original_message_id, settings.secret_key)
    if outbox_id is not None:
        row = session.get(Outbox, outbox_id)
    if row is None and report.original_message_id:
        row = session.scalar(select(Outbox).where(Outbox.provider_id == report.original_message_id))
    if row is None and report.recipients:
        since = utcnow() - timedelta(days=7)
        emails = [r.email.lower() for r in report.recipients]
        row = session.scalar(
            select(Outbox)
            .join(ContactEmail, ContactEmail.contact_id == Outbox.contact_id)
            .where(ContactEmail.email.in_(emails), Outbox.channel == "email", Outbox.created_at >= since,
                   Outbox.status.in_(("sent", "delivered")))
            .order_by(Outbox.id.desc())
            .limit(1)
        )
    permanent = any(r.permanent for r in report.recipients) or not report.recipients
    detail = "; ".join(f"{r.email} {r.status}" for r in report.recipients) or "delivery failed"
    if row is None:
        return f"bounce for an unknown message ({detail})"
    if permanent:
        session.execute(
            update(Outbox).where(Outbox.id == row.id).values(status="bounced", last_error=f"bounce: {detail}"[:2000])
        )
    if row.provider_id:
        with session.begin_nested():
            exists = session.scalar(select(DeliveryEvent.id).where(
                DeliveryEvent.provider_id == row.provider_id, DeliveryEvent.status == "bounced"))
            if exists is None:
                session.add(DeliveryEvent(provider_id=row.provider_id, status="bounced", outbox_id=row.id,
                                          error_code=report.recipients[0].status if report.recipients else None))
    kind = "permanent" if permanent else "temporary"
    return f"{kind} bounce of notification {row.id} ({detail})"


def _display(address: Address) -> str:
    if address.name:
        return f"{address.name} <{address.email}>"
    return address.email or ""

"""The mail handler: parse, classify, thread and store one committed raw message.

Called by ``inbound.process.Processor`` inside one transaction. Parsing happens once; the
parsed message feeds classification, forward detection, threading and storage.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.pipelines import Catalog
from config.settings import Settings
from inbound.bounce import BounceReport
from inbound.classify import classify
from inbound.forward import Forwarded, find_forward
from inbound.parse import Address, ParsedMessage, UnparseableMessage, parse_message
from inbound.process import Quarantine
from inbound.quotes import cut_reply
from inbound.store import FileData, attach_files
from inbound.thread import Decision, decide, is_duplicate
from models.base import utcnow
from models.contact import Contact, ContactEmail, get_or_create_by_email
from models.identity import is_own_message_id, own_outbox_id, synthetic_message_id
from models.message import RawMessage
from models.outbox import DeliveryEvent, Outbox
from models.ticket import Ticket
from models.tickets import NewMessage, add_message, add_participant, flag, open_ticket

log = logging.getLogger("helpdesk.inbound.mail")


def handle(session: Session, raw: RawMessage, settings: Settings, catalog: Catalog) -> str:
    """Process one raw mail; returns what happened, in a few words (kept on the row)."""
    try:
        parsed = parse_message(raw.data)
    except UnparseableMessage as exc:
        raise Quarantine(f"unparseable message: {exc.reason}") from exc
    own = set(settings.inbox_map)
    verdict = classify(
        parsed, own_addresses=own,
        is_own_message_id=lambda mid: is_own_message_id(mid, settings.secret_key),
    )
    if verdict.kind == "loop":
        log.warning("mail loop dropped (raw %s): %s", raw.id, verdict.reason)
        return f"loop dropped: {verdict.reason}"
    if verdict.kind == "bounce":
        return record_bounce(session, verdict.bounce, settings)
    message_id = parsed.message_id or synthetic_id(raw.data)
    if is_duplicate(session, "email", message_id):
        return f"duplicate of <{message_id}>"
    # A concurrent twin (same Message-ID by another door) makes an insert below fail;
    # the Processor then runs this again and the duplicate check above sees the winner.
    return thread_and_store(session, raw, parsed, message_id, verdict.kind, settings, catalog)


def synthetic_id(data: bytes) -> str:
    return synthetic_message_id(hashlib.sha256(data).hexdigest())


def thread_and_store(
    session: Session, raw: RawMessage, parsed: ParsedMessage, message_id: str, kind: str,
    settings: Settings, catalog: Catalog,
) -> str:
    sender = parsed.from_
    if not sender.email:
        raise Quarantine("no sender address (From) to thread or answer")
    forwarded: Forwarded | None = None
    if settings.is_staff(sender.email):
        forwarded = find_forward(parsed)
        if forwarded is not None and (not forwarded.from_.email or settings.is_staff(forwarded.from_.email)):
            forwarded = None  # staff forwarding staff: an ordinary message
    author: Address = forwarded.from_ if forwarded else sender
    contact = get_or_create_by_email(session, author.email or "", author.name or "")
    subject = (forwarded.subject if forwarded and forwarded.subject else parsed.subject) or ""
    text = forwarded.text if forwarded else parsed.text
    reply_text = cut_reply(forwarded.text) if forwarded else parsed.reply_text
    decision = decide(
        session, contact=contact, subject=parsed.subject or subject,
        in_reply_to=parsed.in_reply_to, reference_ids=parsed.references,
        texts=[reply_text] + ([forwarded.text] if forwarded else []), settings=settings,
    )
    if kind == "auto_reply" and (decision.ticket is None or decision.threaded_by == "subject"):
        return "auto-reply ignored (no ticket opened, nothing answered)"
    new = NewMessage(
        channel="email", external_id=message_id, subject=parsed.subject, text=text,
        reply_text=reply_text, html=parsed.html, sender=_display(sender), raw_id=raw.id,
        threaded_by=decision.threaded_by, forwarded_by=sender.email if forwarded else None,
        created_at=utcnow(),
    )
    ticket = _ticket_for(session, decision, contact, subject, parsed, raw, kind, settings, catalog)
    message = add_message(session, ticket, contact, new)
    if decision.ticket is not None:
        add_participant(session, ticket, contact, "cc")
        ticket.updated_at = utcnow()
    if forwarded is not None:
        staff = get_or_create_by_email(session, sender.email, sender.name or "", role="staff")
        add_participant(session, ticket, staff, "forwarder")
    files = [
        FileData(a.filename or "adjunto", a.content_type, a.data, a.sha256, a.inline, a.content_id)
        for a in parsed.attachments
    ]
    if files:
        attach_files(session, message, files)
    verb = "added to" if decision.ticket is not None else "opened"
    how = f"{kind}, " if kind != "message" else ""
    return f"{how}{verb} ticket {ticket.number} by {decision.threaded_by}"


def _ticket_for(
    session: Session, decision: Decision, contact: Contact, subject: str, parsed: ParsedMessage,
    raw: RawMessage, kind: str, settings: Settings, catalog: Catalog,
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
        attention_reason=decision.flag_reason,
    )
    for address in parsed.cc:
        if address and address.lower() not in settings.inbox_map and address != contact.email:
            add_participant(session, ticket, get_or_create_by_email(session, address), "cc")
    return ticket


def route(parsed: ParsedMessage, raw: RawMessage, settings: Settings) -> tuple[str, str]:
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

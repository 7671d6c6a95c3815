"""Opening tickets and finding them: the unit-of-work operations on tickets.

Each function works inside the caller's transaction (``with factory.begin() as s``), so
an inbound message, its ticket and its acknowledgement commit together or not at all.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.pipelines import Catalog
from config.settings import Settings
from models.base import storable, utcnow
from models.contact import Contact
from models.db import next_sequence_value
from models.message import Message
from models.notify import acks_in_last_hour, enqueue
from models.numbers import make_number
from models.ticket import Participant, Ticket

_SUBJECT_PREFIX = re.compile(
    r"^\s*((re|rv|fw|fwd|tr|aw|wg|r|rif|reenviar|reenviado|respuesta|res)\s*(\[\d+\])?\s*[:：]\s*)+",
    re.I,
)
_TAG = re.compile(r"\[[A-Z0-9]+#\d+\]\s*", re.I)


def subject_key(subject: str | None) -> str:
    """The subject without reply prefixes, tags, case, accents and spacing: the key for
    'same sender, same subject' threading."""
    text = _TAG.sub("", subject or "")
    previous = None
    while previous != text:
        previous = text
        text = _SUBJECT_PREFIX.sub("", text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.casefold().split())[:200]


def find_by_number(session: Session, number: int) -> Ticket | None:
    return session.scalar(select(Ticket).where(Ticket.number == number))


def allocate_number(session: Session, settings: Settings) -> int:
    return make_number(settings.ticket_start + next_sequence_value(session) - 1)


def add_participant(session: Session, ticket: Ticket, contact: Contact, role: str) -> None:
    """Make ``contact`` a participant unless it already is one."""
    if contact.id is None:
        session.flush()
    exists = session.scalar(
        select(Participant.id).where(
            Participant.ticket_id == ticket.id, Participant.contact_id == contact.id
        )
    )
    if exists is None:
        session.add(Participant(ticket_id=ticket.id, contact_id=contact.id, role=role))


def is_participant(session: Session, ticket: Ticket, contact: Contact) -> bool:
    return (
        session.scalar(
            select(Participant.id).where(
                Participant.ticket_id == ticket.id, Participant.contact_id == contact.id
            )
        )
        is not None
    )


@dataclass
class NewMessage:
    """What a ticket's first (or next) message holds, whatever its channel."""

    channel: str  # email | whatsapp | note
    text: str
    external_id: str | None = None
    subject: str | None = None
    reply_text: str | None = None
    html: str | None = None
    sender: str | None = None
    raw_id: int | None = None
    threaded_by: str = "new"
    forwarded_by: str | None = None
    created_at: datetime | None = None


def add_message(
    session: Session, ticket: Ticket, contact: Contact | None, msg: NewMessage, direction: str = "in"
) -> Message:
    row = Message(
        ticket_id=ticket.id,
        channel=msg.channel,
        direction=direction,
        external_id=msg.external_id or f"local.{uuid.uuid4().hex}",
        contact_id=contact.id if contact is not None else None,
        sender=storable(msg.sender or (contact.display() if contact is not None else None)),
        subject=storable(msg.subject),
        text=storable(msg.text) or "",
        reply_text=storable(msg.reply_text),
        html=storable(msg.html),
        threaded_by=msg.threaded_by,
        forwarded_by=msg.forwarded_by,
        raw_id=msg.raw_id,
        created_at=msg.created_at or utcnow(),
    )
    session.add(row)
    return row


def open_ticket(
    session: Session,
    *,
    catalog: Catalog,
    settings: Settings,
    pipeline_id: str,
    requester: Contact,
    subject: str,
    message: NewMessage | None = None,
    inbox_address: str | None = None,
    kind: str = "attention",
    acknowledge: bool = True,
    linked_number: int | None = None,
    attention_reason: str | None = None,
    parent: Ticket | None = None,
    ack_channel: str | None = None,
) -> Ticket:
    """A new ticket in the first stage of its pipeline, with its first message and the
    acknowledgement (when the first stage notifies and the sender is under the hourly cap),
    on ``ack_channel`` when given (a WhatsApp message is acknowledged on WhatsApp)."""
    pipeline = catalog.get_pipeline(pipeline_id)
    first = pipeline.first
    if requester.id is None:
        session.add(requester)
        session.flush()
    ticket = Ticket(
        number=allocate_number(session, settings),
        kind=kind,
        pipeline=pipeline.id,
        stage=first.name,
        state=first.state,
        subject=(storable(subject) or "").strip()[:1000],
        subject_key=subject_key(storable(subject)),
        inbox_address=inbox_address,
        requester_id=requester.id,
        company_id=requester.company_id,
        linked_number=linked_number,
        needs_attention=attention_reason is not None,
        attention_reason=attention_reason,
        parent_id=parent.id if parent is not None else None,
    )
    ticket.requester = requester
    session.add(ticket)
    session.flush()
    session.add(Participant(ticket_id=ticket.id, contact_id=requester.id, role="requester"))
    if message is not None:
        add_message(session, ticket, requester, message)
    if acknowledge and first.notify and acks_in_last_hour(session, requester) < settings.ack_limit_per_hour:
        template = "flagged_new_ticket" if linked_number is not None else "ack"
        enqueue(
            session,
            ticket=ticket,
            contact=requester,
            template=template,
            payload={"pipeline": pipeline.id, "stage": first.name, "linked_number": linked_number},
            channel=ack_channel,
        )
    return ticket


def flag(ticket: Ticket, reason: str) -> None:
    """Ask staff to look at the ticket (a late reply, a stranger's message...)."""
    ticket.needs_attention = True
    ticket.attention_reason = reason if not ticket.attention_reason else (
        f"{ticket.attention_reason}; {reason}"
    )[:2000]

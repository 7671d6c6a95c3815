"""Opening tickets and finding them: the unit-of-work operations on tickets.

Each function works inside the caller's transaction (``with factory.begin() as s``), so
an inbound message, its ticket and its acknowledgement commit together or not at all.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import event
from sqlalchemy.orm import Session

from config.pipelines import Catalog
from config.settings import Settings
from models import deferred
from models.base import storable, utcnow
from models.contact import Contact
from models.db import next_sequence_values
from models.deferred import defer, defer_new, is_deferring
from models.lookups import lookups
from models.message import Message
from models.notify import enqueue
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
    if subject is None or len(subject) > 1000:
        return _subject_key(subject)
    return _remembered_key(subject)


@lru_cache(maxsize=4096)
def _remembered_key(subject: str) -> str:
    """``subject_key`` remembered: threading a mail asks for its key three times (the
    batch's keys, the subject lookup, a new ticket), and a conversation repeats it."""
    return _subject_key(subject)


def _subject_key(subject: str | None) -> str:
    text = _TAG.sub("", subject or "")
    previous = None
    while previous != text:
        previous = text
        text = _SUBJECT_PREFIX.sub("", text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.casefold().split())[:200]


def find_by_number(session: Session, number: int) -> Ticket | None:
    return lookups(session).ticket_by_number(number)


_UNNUMBERED = "helpdesk.unnumbered"


@event.listens_for(Session, "before_flush")
def _number_new_tickets(session: Session, _context: object, _instances: object) -> None:
    """Give the tickets opened since the last flush their numbers, in one round trip.

    Why at the flush: a batch of inbound mail opens dozens of tickets and writes them in
    one flush; asking the sequence once per ticket was a round trip each. Numbers follow
    the order in which the tickets were opened.
    """
    _number(session, lambda ticket: ticket in session)


def _number_deferred(session: Session, tickets: list[Ticket]) -> None:
    """The same for the new tickets of a mail batch, right before they are written
    (``models.deferred``: they are never in the session)."""
    ids = {id(ticket) for ticket in tickets}
    _number(session, lambda ticket: id(ticket) in ids)


deferred.before_write(Ticket.__table__, _number_deferred)


def _number(session: Session, ready: Callable[[Ticket], bool]) -> None:
    """Number the waiting tickets for which ``ready`` holds; the others keep waiting."""
    waiting: list[tuple[Ticket, int]] = session.info.get(_UNNUMBERED) or []
    if not waiting:
        return
    due = [(t, start) for t, start in waiting if t.number is None and ready(t)]
    left = [(t, start) for t, start in waiting if t.number is None and not ready(t)]
    if left:
        session.info[_UNNUMBERED] = left
    else:
        session.info.pop(_UNNUMBERED, None)
    if not due:
        return
    values = next_sequence_values(session, len(due))
    for (ticket, start), value in zip(due, values, strict=True):
        ticket.number = make_number(start + value - 1)


@event.listens_for(Session, "after_soft_rollback")
def _forget_unnumbered(session: Session, _previous: object) -> None:
    session.info.pop(_UNNUMBERED, None)


def add_participant(session: Session, ticket: Ticket, contact: Contact, role: str) -> None:
    """Make ``contact`` a participant unless it already is one (either may be new)."""
    known = lookups(session)
    if known.is_participant(ticket, contact):
        return
    _add_participant(session, ticket, contact, role)


def _add_participant(session: Session, ticket: Ticket, contact: Contact, role: str) -> None:
    if is_deferring(session):
        defer(session, Participant.__table__, {"role": role}, {"ticket_id": ticket, "contact_id": contact})
    else:
        session.add(Participant(ticket=ticket, contact=contact, role=role))
    lookups(session).added_participant(ticket, contact)


def is_participant(session: Session, ticket: Ticket, contact: Contact) -> bool:
    return lookups(session).is_participant(ticket, contact)


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


def _message_values(contact: Contact | None, msg: NewMessage, direction: str) -> dict[str, object]:
    return {
        "channel": msg.channel,
        "direction": direction,
        "external_id": msg.external_id or f"local.{uuid.uuid4().hex}",
        "sender": storable(msg.sender or (contact.display() if contact is not None else None)),
        "subject": storable(msg.subject),
        "text": storable(msg.text) or "",
        "reply_text": storable(msg.reply_text),
        "html": storable(msg.html),
        "threaded_by": msg.threaded_by,
        "forwarded_by": msg.forwarded_by,
        "raw_id": msg.raw_id,
        "created_at": msg.created_at or utcnow(),
    }


def add_message(
    session: Session, ticket: Ticket, contact: Contact | None, msg: NewMessage, direction: str = "in"
) -> Message:
    if deferred.has_deferred(session):
        deferred.flush(session)  # deferred messages first: ids stay in arrival order
    values = _message_values(contact, msg, direction)
    if is_deferring(session):
        # The ticket or contact may be new to the batch: written by the flush above but
        # never in the session, so the row names them by id (a relationship would make
        # the ORM insert them a second time).
        row = Message(ticket_id=ticket.id, contact_id=contact.id if contact is not None else None, **values)
    else:
        row = Message(ticket=ticket, contact=contact, **values)
    session.add(row)
    lookups(session).added_message(row.channel, row.external_id, ticket)
    return row


def add_message_later(session: Session, ticket: Ticket, contact: Contact, msg: NewMessage) -> None:
    """``add_message`` for a batch inside ``models.deferred.deferring``: the row is
    written right after the next flush and never becomes an ORM object (a message that
    carries files needs its ORM row for them: use ``add_message``)."""
    if not is_deferring(session):
        add_message(session, ticket, contact, msg)
        return
    values = _message_values(contact, msg, "in")
    defer(session, Message.__table__, values, {"ticket_id": ticket, "contact_id": contact})
    lookups(session).added_message(msg.channel, str(values["external_id"]), ticket)


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
    flush: bool = True,
) -> Ticket:
    """A new ticket in the first stage of its pipeline, with its first message and the
    acknowledgement (when the first stage notifies and the sender is under the hourly cap),
    on ``ack_channel`` when given (a WhatsApp message is acknowledged on WhatsApp).

    With ``flush=False`` nothing is written yet: the ticket gets its number and id at
    the caller's next flush, which writes a whole batch at once (inbound mail)."""
    pipeline = catalog.get_pipeline(pipeline_id)
    first = pipeline.first
    later = is_deferring(session)
    if requester.id is None and not later:
        session.add(requester)
    values = {
        "kind": kind,
        "pipeline": pipeline.id,
        "stage": first.name,
        "state": first.state,
        "subject": (storable(subject) or "").strip()[:1000],
        "subject_key": subject_key(storable(subject)),
        "inbox_address": inbox_address,
        "requester": requester,
        "company_id": requester.company_id,
        "linked_number": linked_number,
        "needs_attention": attention_reason is not None,
        "attention_reason": attention_reason,
        "parent": parent,
    }
    if later:  # a mail batch: a plain INSERT after the flush (models.deferred)
        now = utcnow()
        ticket = deferred.new_object(Ticket, number=None, created_at=now, updated_at=now, **values)
        defer_new(session, ticket, _TICKET_COLUMNS, {"requester_id": requester, "parent_id": parent})
    else:
        ticket = Ticket(**values)
        session.add(ticket)
    session.info.setdefault(_UNNUMBERED, []).append((ticket, settings.ticket_start))
    known = lookups(session)
    known.added_ticket(ticket)
    _add_participant(session, ticket, requester, "requester")
    if message is not None:
        add_message(session, ticket, requester, message)
    if acknowledge and first.notify and known.acks_in_last_hour(requester) < settings.ack_limit_per_hour:
        template = "flagged_new_ticket" if linked_number is not None else "ack"
        enqueue(
            session,
            ticket=ticket,
            contact=requester,
            template=template,
            payload={"pipeline": pipeline.id, "stage": first.name, "linked_number": linked_number},
            channel=ack_channel,
            flush=False,
        )
    if flush:
        deferred.flush(session) if later else session.flush()
    return ticket


#: The columns a new ticket of a mail batch is written with; the others take their
#: defaults. Read off the ticket when it is written, so a reply in the same batch that
#: touches it (``updated_at``) is written with it.
_TICKET_COLUMNS = (
    "number", "kind", "pipeline", "stage", "state", "subject", "subject_key", "inbox_address", "company_id",
    "linked_number", "needs_attention", "attention_reason", "created_at", "updated_at",
)


def touch(session: Session, ticket: Ticket) -> None:
    """Mark the ticket as updated now (a message joined it); it may be new to the batch."""
    deferred.change(session, ticket, updated_at=utcnow())


def flag(ticket: Ticket, reason: str) -> None:
    """Ask staff to look at the ticket (a late reply, a stranger's message...)."""
    ticket.needs_attention = True
    ticket.attention_reason = reason if not ticket.attention_reason else (
        f"{ticket.attention_reason}; {reason}"
    )[:2000]

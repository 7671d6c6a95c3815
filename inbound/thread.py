"""Finding the ticket a mail belongs to, in the order design.md gives, never a duplicate.

1. the Message-ID is stored already            → nothing to add (duplicate)
2. In-Reply-To (``message_id``), then References, name a message we stored or sent
3. the subject tag or a valid number in the subject or new text → that ticket, when the
   sender may write into it; otherwise a new ticket that links to it, flagged for staff
4. the same sender, the same subject, an open ticket inside the window → that ticket
5. otherwise a new ticket
Every decision says why (``threaded_by``), so an operator can read it in ``helpdesk show``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from models.base import utcnow
from models.contact import Contact
from models.identity import own_outbox_id
from models.lookups import lookups
from models.message import Message
from models.numbers import find_numbers
from models.ticket import Ticket
from models.tickets import find_by_number, is_participant, subject_key


@dataclass
class Decision:
    """Where a message goes: an existing ticket, or a new one (``ticket`` None)."""

    ticket: Ticket | None
    threaded_by: str
    linked_number: int | None = None
    flag_reason: str | None = None


def is_duplicate(session: Session, channel: str, external_id: str) -> bool:
    if channel == "email":
        return lookups(session).is_stored(external_id)
    return session.scalar(select(Message.id).where(
        Message.channel == channel, Message.external_id == external_id)) is not None


def header_ids(ids: list[str]) -> list[str]:
    """The ids worth looking up, most recent reference first, at most 50."""
    return list(dict.fromkeys(reversed(ids)))[:50]


def by_headers(session: Session, ids: list[str], settings: Settings) -> Ticket | None:
    """The ticket of the most recent message id in ``ids`` that we stored or sent."""
    if not ids:
        return None
    ids = header_ids(ids)
    known = lookups(session)
    for mid in ids:
        outbox_id = own_outbox_id(mid, settings.secret_key)
        if outbox_id is not None:
            ticket = known.outbox_ticket(outbox_id)
            if ticket is not None:
                return ticket
    stored = known.message_tickets(ids)
    for mid in ids:
        if mid in stored:
            return stored[mid]
    sent = known.sent_tickets(ids)
    for mid in ids:
        if mid in sent:
            return sent[mid]
    return None


def may_write_into(session: Session, ticket: Ticket, contact: Contact, settings: Settings) -> bool:
    """Whether ``contact`` may add to ``ticket``: a participant, someone of its company
    (a contact of it or its mail domain), or staff. A stranger who knows or guesses a
    number never writes into someone else's ticket."""
    if contact.id is not None and ticket.requester_id == contact.id:
        return True
    if contact.email and settings.is_staff(contact.email):
        return True
    if ticket.company_id is not None and contact.company_id == ticket.company_id:
        return True
    domain = ticket.company.mail_domain if ticket.company is not None else None
    if domain and contact.email and contact.email.rsplit("@", 1)[-1].lower() == domain.lower():
        return True
    return is_participant(session, ticket, contact)


def cited_numbers(subject: str, texts: list[str], prefix: str) -> list[tuple[int, str]]:
    """(number, how) for every ticket number the subject tag, subject or texts cite."""
    tag = _TAGS.get(prefix)
    if tag is None:
        tag = _TAGS[prefix] = re.compile(rf"\[\s*{re.escape(prefix)}\s*#\s*(\d+)\s*\]", re.I)
    candidates: list[tuple[int, str]] = []
    for match in tag.finditer(subject or ""):
        candidates.append((int(match.group(1)), "tag"))
    for number in find_numbers(subject, prefix):
        candidates.append((number, "number"))
    for text in texts:
        for number in find_numbers(text, prefix):
            candidates.append((number, "number"))
    return candidates


_TAGS: dict[str, re.Pattern[str]] = {}


def by_number(
    session: Session, subject: str, texts: list[str], contact: Contact, settings: Settings,
    candidates: list[tuple[int, str]] | None = None,
) -> Decision | None:
    if candidates is None:
        candidates = cited_numbers(subject, texts, settings.ticket_prefix)
    refused: int | None = None
    for number, how in candidates:
        ticket = find_by_number(session, number)
        if ticket is None:
            continue
        if may_write_into(session, ticket, contact, settings):
            return Decision(ticket, how)
        refused = refused or number
    if refused is not None:
        return Decision(None, "new", linked_number=refused,
                        flag_reason=f"cites ticket {refused} but is not one of its participants")
    return None


def by_subject(session: Session, contact: Contact, subject: str, settings: Settings) -> Ticket | None:
    key = subject_key(subject)
    if not key:
        return None
    since = utcnow() - timedelta(hours=settings.subject_window_hours)
    return lookups(session).open_by_subject(contact, key, since)


def after_close(ticket: Ticket, how: str, settings: Settings) -> Decision:
    """A message for a closed ticket: inside the follow-up window it joins and flags the
    ticket; after it, it opens a new ticket that refers to the old number."""
    if ticket.state != "Cerrado":
        return Decision(ticket, how)
    closed = ticket.closed_at or ticket.updated_at
    if closed >= utcnow() - timedelta(days=settings.followup_days):
        return Decision(ticket, how, flag_reason="message after the ticket was closed")
    return Decision(None, "new", linked_number=ticket.number)


def decide(
    session: Session,
    *,
    contact: Contact,
    subject: str,
    in_reply_to: list[str],
    reference_ids: list[str],
    texts: list[str],
    settings: Settings,
    candidates: list[tuple[int, str]] | None = None,
) -> Decision:
    """Steps 2 to 5 (the caller has checked step 1, the duplicate)."""
    ticket = by_headers(session, in_reply_to, settings)
    if ticket is not None:
        return after_close(ticket, "message_id", settings)
    ticket = by_headers(session, reference_ids, settings)
    if ticket is not None:
        return after_close(ticket, "references", settings)
    decision = by_number(session, subject, texts, contact, settings, candidates)
    if decision is not None:
        return after_close(decision.ticket, decision.threaded_by, settings) if decision.ticket else decision
    ticket = by_subject(session, contact, subject, settings)
    if ticket is not None:
        return Decision(ticket, "subject")
    return Decision(None, "new")

"""The reads that threading makes, answered for a whole batch of messages at once.

Why: one mail is threaded by up to a dozen reads (its Message-ID, its In-Reply-To and
References, the numbers it cites, its sender and copied addresses, their company, their
open tickets, participants, acknowledgements this hour). Asked one by one they cost a
round trip each, and each query first flushed what the previous message wrote: about 13
round trips and 5 ms of CPU a mail. ``Lookups.prefetch`` asks each of them once for the
whole batch (about ten queries per hundred mails) and the batch then writes everything
in one flush.

The answers are kept together with what the transaction itself creates (``added_*``),
so a reply in the same batch as its request finds the new ticket, and the batch decides
exactly as one message at a time would. A key that was not prefetched is asked on first
use, one query, so the same code serves a single message (the careful path, the
WhatsApp handler, the CLI) without a warm-up.

One ``Lookups`` lives in ``session.info`` for one transaction: it is dropped at commit
and rollback (``lookups``), never reused on stale data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, any_, bindparam, event, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, SessionTransaction, joinedload, selectinload

from models.base import utcnow
from models.contact import Company, Contact, ContactEmail, company_for_domain, find_by_email
from models.message import Message
from models.outbox import Outbox
from models.ticket import Participant, Ticket

_KEY = "helpdesk.lookups"
# Automatic answers to a sender's message: capped per sender per hour.
ACK_TEMPLATES = ("ack", "joined_ticket", "flagged_new_ticket")


@dataclass
class Keys:
    """What a batch will ask about, gathered before any of it is handled."""

    message_ids: set[str] = field(default_factory=set)  # own, In-Reply-To, References
    outbox_ids: set[int] = field(default_factory=set)  # decoded from our own Message-IDs
    emails: set[str] = field(default_factory=set)  # lower case
    numbers: set[int] = field(default_factory=set)
    subject_keys: set[str] = field(default_factory=set)


def _stored_mail(ids: list[str]) -> Select[tuple[str, int]]:
    """(Message-ID, ticket id) of the stored e-mail messages among ``ids``."""
    return select(Message.external_id, Message.ticket_id).where(
        Message.channel == "email", Message.external_id.in_(ids))


#: ``_stored_mail`` and ``_sent_rows`` on PostgreSQL, in one statement (one round trip
#: and one array of ids instead of two), each row tagged with the question it answers:
#: ``m`` a stored mail, ``s`` a sent notification. Stored mail is one unique-index probe
#: per id. Why not ``IN``: until autovacuum has analyzed a growing ``messages`` table
#: the planner believes it tiny and reads every e-mail row of it through the index's
#: first column (6 ms a batch at 10,000 messages, and growing with the table); a probe
#: per id cannot be planned so (``LIMIT 1`` keeps the subquery from being flattened into
#: a hash join), 0.8 ms.
_STORED_OR_SENT_PG = text(
    "SELECT 'm', m.external_id, m.ticket_id FROM unnest(CAST(:ids AS varchar[])) AS k(id) "
    "CROSS JOIN LATERAL (SELECT external_id, ticket_id FROM messages "
    "WHERE channel = 'email' AND external_id = k.id LIMIT 1) AS m "
    "UNION ALL SELECT 's', provider_id, ticket_id FROM outbox "
    "WHERE provider_id = ANY(CAST(:ids AS varchar[])) AND ticket_id IS NOT NULL"
)


def _stored_or_sent_pg(session: Session, ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """(stored mail: Message-ID → ticket id, sent rows: provider id → ticket id) for ``ids``."""
    answers: dict[str, dict[str, int]] = {"m": {}, "s": {}}
    for tag, external_id, ticket_id in session.execute(_STORED_OR_SENT_PG, {"ids": ids}):
        answers[tag][external_id] = ticket_id
    return answers["m"], answers["s"]


def _among(column: ColumnElement[Any], values: list[Any], postgresql: bool) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``= ANY(array)``, one parameter however many
    values: a batch asks for a hundred and more, and the server planned a long IN list
    of parameters at a cost the array does not have."""
    if not postgresql:
        return column.in_(values)
    return column == any_(bindparam(None, values, type_=ARRAY(column.type)))


def _sent_rows(ids: list[str]) -> Select[tuple[str, int]]:
    """(provider id, ticket id) of the sent notifications among ``ids``."""
    return select(Outbox.provider_id, Outbox.ticket_id).where(
        Outbox.provider_id.in_(ids), Outbox.ticket_id.is_not(None))


def lookups(session: Session) -> Lookups:
    """The transaction's Lookups (created on first use)."""
    found = session.info.get(_KEY)
    if found is None:
        found = session.info[_KEY] = Lookups(session)
    return found


def reset(session: Session) -> Lookups:
    """A fresh Lookups: after a savepoint rollback the old answers may be wrong."""
    session.info[_KEY] = Lookups(session)
    return session.info[_KEY]


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    """The answers hold for one transaction: drop them when it ends (commit, rollback,
    close)."""
    if transaction.parent is None:
        session.info.pop(_KEY, None)


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, _previous: SessionTransaction) -> None:
    """A savepoint rolled back: what the batch had added may be gone with it."""
    session.info.pop(_KEY, None)


class Lookups:
    """Cached answers for one transaction; see the module docstring."""

    def __init__(self, session: Session) -> None:
        self.session = session
        # external Message-ID (email) → its ticket; None: known not to be stored
        self._messages: dict[str, Ticket | None] = {}
        self._outbox: dict[int, Ticket | None] = {}  # own outbox id → ticket
        self._sent: dict[str, Ticket | None] = {}  # provider Message-ID of a sent row → ticket
        self._contacts: dict[str, Contact | None] = {}  # address → contact
        self._companies: dict[str, Company | None] = {}  # mail domain → company
        self._numbers: dict[int, Ticket | None] = {}
        # Participants known from the database, for the ticket and contact ids prefetched.
        self._participant_rows: set[tuple[int, int]] = set()
        self._participants_of: set[int] = set()
        self._participants_for: set[int] = set()
        self._new_participants: set[tuple[int, int]] = set()  # (id(ticket), id(contact))
        # Open tickets by (requester id, subject key), as stored; newest first.
        self._open: dict[tuple[int, str], list[Ticket]] = {}
        self._open_for: set[int] = set()
        self._open_keys: set[str] = set()
        self._new_tickets: list[Ticket] = []
        self._new_contacts: set[int] = set()  # id(contact)
        self._acks_stored: dict[int, int] = {}  # contact id → acks in the last hour, stored
        self._acks_queued: dict[int, int] = {}  # id(contact) → acks queued by this transaction
        self._keep: list[object] = []  # new objects keyed by id(): keep them alive

    # -- warming ---------------------------------------------------------------------

    def prefetch(self, keys: Keys) -> None:
        """Ask the database once for every key of the batch."""
        s = self.session
        by_message: dict[str, int] = {}  # Message-ID of a stored mail → ticket id
        by_sent: dict[str, int] = {}  # provider id of a sent row → ticket id
        by_outbox: dict[int, int] = {}  # our outbox id → ticket id
        pg = s.get_bind().dialect.name == "postgresql"
        if keys.message_ids:
            ids = list(keys.message_ids)
            if pg:
                by_message, by_sent = _stored_or_sent_pg(s, ids)
            else:
                by_message = dict(s.execute(_stored_mail(ids)).all())
                by_sent = dict(s.execute(_sent_rows(ids)).all())
        if keys.outbox_ids:
            by_outbox = dict(s.execute(
                select(Outbox.id, Outbox.ticket_id)
                .where(Outbox.id.in_(list(keys.outbox_ids)), Outbox.ticket_id.is_not(None))).all())
        tickets: dict[int, Ticket] = {}
        wanted = {*by_message.values(), *by_sent.values(), *by_outbox.values()}
        if wanted or keys.numbers:
            query = select(Ticket).options(joinedload(Ticket.company))
            if keys.numbers:
                query = query.where(Ticket.id.in_(list(wanted)) | Ticket.number.in_(list(keys.numbers)))
            else:
                query = query.where(Ticket.id.in_(list(wanted)))
            for ticket in s.scalars(query).unique():
                tickets[ticket.id] = ticket
                if ticket.number in keys.numbers:
                    self._numbers[ticket.number] = ticket
        for mid in keys.message_ids:
            self._messages[mid] = tickets.get(by_message[mid]) if mid in by_message else None
            self._sent[mid] = tickets.get(by_sent[mid]) if mid in by_sent else None
        for oid in keys.outbox_ids:
            self._outbox[oid] = tickets.get(by_outbox[oid]) if oid in by_outbox else None
        for number in keys.numbers:
            self._numbers.setdefault(number, None)
        contact_ids: list[int] = []
        if keys.emails:
            emails = list(keys.emails)
            for email in emails:
                self._contacts.setdefault(email, None)
            rows = s.execute(
                select(ContactEmail.email, Contact).join(Contact, Contact.id == ContactEmail.contact_id)
                .options(selectinload(Contact.emails))
                .where(_among(ContactEmail.email, emails, pg))
            ).all()
            for email, contact in rows:
                self._contacts[email] = contact
                contact_ids.append(contact.id)
            domains = {e.rsplit("@", 1)[-1] for e in emails if "@" in e}
            for domain in domains:
                self._companies.setdefault(domain, None)
            if domains:
                for company in s.scalars(select(Company).where(func.lower(Company.mail_domain).in_(domains))):
                    self._companies[(company.mail_domain or "").lower()] = company
        if contact_ids:
            self._acks_stored.update(dict(s.execute(
                select(Outbox.contact_id, func.count(Outbox.id))
                .where(Outbox.contact_id.in_(contact_ids), Outbox.template.in_(ACK_TEMPLATES),
                       Outbox.created_at >= utcnow() - timedelta(hours=1))
                .group_by(Outbox.contact_id)).all()))
            for cid in contact_ids:
                self._acks_stored.setdefault(cid, 0)
            if keys.subject_keys:
                self._open_for.update(contact_ids)
                self._open_keys.update(keys.subject_keys)
                for ticket in s.scalars(
                    select(Ticket).options(joinedload(Ticket.company))
                    .where(Ticket.requester_id.in_(contact_ids), Ticket.state == "Abierto",
                           Ticket.subject_key.in_(list(keys.subject_keys)))
                    .order_by(Ticket.id.desc())
                ).unique():
                    self._open.setdefault((ticket.requester_id or 0, ticket.subject_key), []).append(ticket)
                    tickets[ticket.id] = ticket
        if tickets and contact_ids:
            self._participants_of.update(tickets)
            self._participants_for.update(contact_ids)
            self._participant_rows.update(s.execute(
                select(Participant.ticket_id, Participant.contact_id)
                .where(Participant.ticket_id.in_(list(tickets)), Participant.contact_id.in_(contact_ids))
            ).all())

    # -- reads -----------------------------------------------------------------------

    def message_tickets(self, ids: Iterable[str]) -> dict[str, Ticket]:
        """The tickets of the e-mail messages with these Message-IDs (stored or added)."""
        return self._tickets_by(self._messages, list(ids), _stored_mail)

    def is_stored(self, external_id: str) -> bool:
        """Whether an e-mail message with this Message-ID is stored (or added here)."""
        if external_id not in self._messages:
            self.message_tickets([external_id])
        return external_id in self._messages and self._messages[external_id] is not None

    def outbox_ticket(self, outbox_id: int) -> Ticket | None:
        """The ticket of our notification ``outbox_id``."""
        if outbox_id not in self._outbox:
            ticket_id = self.session.scalar(select(Outbox.ticket_id).where(Outbox.id == outbox_id))
            self._outbox[outbox_id] = self.session.get(Ticket, ticket_id) if ticket_id is not None else None
        return self._outbox[outbox_id]

    def sent_tickets(self, ids: Iterable[str]) -> dict[str, Ticket]:
        """The tickets of sent rows whose provider id is one of ``ids``."""
        return self._tickets_by(self._sent, list(ids), _sent_rows)

    def _tickets_by(self, cache: dict[str, Ticket | None], ids: list[str],
                    query: Callable[[list[str]], Select[tuple[str, int]]]) -> dict[str, Ticket]:
        """``ids`` → ticket through ``cache``, asking ``query`` for the ids not in it yet."""
        unknown = [m for m in ids if m not in cache]
        if unknown:
            rows = dict(self.session.execute(query(unknown)).all())
            for mid in unknown:
                cache[mid] = self.session.get(Ticket, rows[mid]) if mid in rows else None
        return {m: t for m in ids if (t := cache.get(m)) is not None}

    def contact_by_email(self, address: str) -> Contact | None:
        if address not in self._contacts:
            self._contacts[address] = find_by_email(self.session, address)
        return self._contacts[address]

    def company_for_domain(self, domain: str) -> Company | None:
        domain = domain.lower()
        if domain not in self._companies:
            self._companies[domain] = company_for_domain(self.session, domain)
        return self._companies[domain]

    def ticket_by_number(self, number: int) -> Ticket | None:
        if number not in self._numbers:
            self._numbers[number] = self.session.scalar(select(Ticket).where(Ticket.number == number))
        return self._numbers[number]

    def is_participant(self, ticket: Ticket, contact: Contact) -> bool:
        if (id(ticket), id(contact)) in self._new_participants:
            return True
        if ticket.id is None or contact.id is None:
            return False  # one of them is new: no stored row can join them
        if ticket.id in self._participants_of and contact.id in self._participants_for:
            return (ticket.id, contact.id) in self._participant_rows
        return self.session.scalar(select(Participant.id).where(
            Participant.ticket_id == ticket.id, Participant.contact_id == contact.id)) is not None

    def open_by_subject(self, contact: Contact, key: str, since: datetime) -> Ticket | None:
        """The contact's newest open ticket with this subject key, touched since ``since``."""
        for ticket in reversed(self._new_tickets):
            if ticket.requester is contact and ticket.subject_key == key and ticket.state == "Abierto":
                return ticket
        if contact.id is None:
            return None
        if contact.id in self._open_for and key in self._open_keys:
            candidates = self._open.get((contact.id, key), [])
        else:
            candidates = list(self.session.scalars(
                select(Ticket).where(Ticket.requester_id == contact.id, Ticket.state == "Abierto",
                                     Ticket.subject_key == key, Ticket.updated_at >= since)
                .order_by(Ticket.id.desc()).limit(1)))
        for ticket in candidates:  # updated_at as it is now, this batch's changes included
            if ticket.state == "Abierto" and ticket.updated_at >= since:
                return ticket
        return None

    def acks_in_last_hour(self, contact: Contact) -> int:
        """Automatic answers sent to (or queued for) ``contact`` in the last hour."""
        queued = self._acks_queued.get(id(contact), 0)
        if id(contact) in self._new_contacts or contact.id is None:
            return queued
        if contact.id in self._acks_stored:
            return self._acks_stored[contact.id] + queued
        # Not prefetched: the query sees this transaction's flushed rows, queued included.
        return int(self.session.scalar(
            select(func.count(Outbox.id)).where(
                Outbox.contact_id == contact.id, Outbox.template.in_(ACK_TEMPLATES),
                Outbox.created_at >= utcnow() - timedelta(hours=1))) or 0)

    # -- what this transaction adds ----------------------------------------------------

    def added_message(self, channel: str, external_id: str, ticket: Ticket) -> None:
        if channel == "email":
            self._messages[external_id] = ticket

    def added_contact(self, contact: Contact, address: str | None = None) -> None:
        self._new_contacts.add(id(contact))
        self._keep.append(contact)
        if address is not None:
            self._contacts[address] = contact

    def added_ticket(self, ticket: Ticket) -> None:
        self._new_tickets.append(ticket)

    def added_participant(self, ticket: Ticket, contact: Contact) -> None:
        self._new_participants.add((id(ticket), id(contact)))
        self._keep.append((ticket, contact))

    def queued_ack(self, contact: Contact) -> None:
        if contact.id is not None and contact.id not in self._acks_stored and id(contact) not in self._new_contacts:
            return  # counted by the next query, which sees the flushed row
        self._acks_queued[id(contact)] = self._acks_queued.get(id(contact), 0) + 1
        self._keep.append(contact)

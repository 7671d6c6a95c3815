"""Deciding who is told what, on which channel: outbox rows, written in the caller's
transaction.

Rows are only *planned* here; sending is the worker's. New row ids are collected on the
session and handed, after the commit, to whatever publisher the runtime installed
(``install_publisher``), so models never import the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from models import deferred
from models.base import utcnow
from models.contact import Contact
from models.lookups import ACK_TEMPLATES, lookups
from models.outbox import Outbox
from models.ticket import Ticket

Publisher = Callable[[list[int]], None]
_NEW_ROWS = "helpdesk.outbox_new"
__all__ = ["ACK_TEMPLATES", "acks_in_last_hour", "choose_channel", "enqueue", "install_publisher"]


def email_possible(contact: Contact) -> bool:
    return contact.email is not None


def whatsapp_possible(contact: Contact) -> bool:
    return bool(contact.phone) and not contact.whatsapp_opt_out


def choose_channel(contact: Contact, exclude: Iterable[str] = ()) -> str | None:
    """The contact's preferred channel, or the other one when the first is impossible."""
    order = ["whatsapp", "email"] if contact.preferred_channel == "whatsapp" else ["email", "whatsapp"]
    for channel in order:
        if channel in exclude:
            continue
        if channel == "email" and email_possible(contact):
            return channel
        if channel == "whatsapp" and whatsapp_possible(contact):
            return channel
    return None


def audience_contacts(session: Session, ticket: Ticket, audience: Iterable[str]) -> list[tuple[str, Contact]]:
    """(role, contact) for each audience entry, without repeating a contact."""
    seen: set[int] = set()
    result: list[tuple[str, Contact]] = []
    for role in audience:
        if role == "requester":
            contacts = [ticket.requester] if ticket.requester else []
        elif role == "fleet_manager":
            if ticket.company_id is None:
                contacts = []
            else:
                contacts = list(
                    session.scalars(
                        select(Contact)
                        .where(Contact.company_id == ticket.company_id, Contact.role == "fleet_manager")
                        .order_by(Contact.id)
                    )
                )
        else:
            contacts = []
        for contact in contacts:
            if contact is not None and contact.id not in seen:
                seen.add(contact.id)
                result.append((role, contact))
    return result


def enqueue(
    session: Session,
    *,
    ticket: Ticket | None,
    contact: Contact,
    template: str,
    payload: dict[str, Any] | None = None,
    audience: str = "requester",
    channel: str | None = None,
    not_before: datetime | None = None,
    flush: bool = True,
) -> Outbox | None:
    """Add one outbox row (or none when the contact cannot be reached at all).

    ``flush=False`` leaves the row (and a new ticket or contact it names) to the
    caller's next flush, so that a batch writes all its rows at once; its id is known
    after that flush, and it is published after the commit either way. Inside a mail
    batch (``models.deferred.deferring``) that row is a plain INSERT after the flush and
    None is returned.
    """
    channel = channel or choose_channel(contact)
    if channel is None:
        return None
    values: dict[str, Any] = {
        "channel": channel, "template": template, "audience": audience, "payload": dict(payload or {}),
        "status": "pending", "next_attempt_at": not_before or utcnow(),
    }
    row: Outbox | deferred.Written
    if not flush and deferred.is_deferring(session):
        # A mail batch (models.deferred): a plain row after the flush; the id it gets
        # there is what the publisher sends after the commit.
        row = deferred.Written()
        deferred.defer(session, Outbox.__table__, values, {"ticket_id": ticket, "contact_id": contact}, row)
    else:
        row = Outbox(ticket=ticket, contact=contact, **values)
        session.add(row)
        if flush:
            session.flush()
    session.info.setdefault(_NEW_ROWS, []).append(row)
    if template in ACK_TEMPLATES:
        lookups(session).queued_ack(contact)
    return row if isinstance(row, Outbox) else None


def acks_in_last_hour(session: Session, contact: Contact) -> int:
    return lookups(session).acks_in_last_hour(contact)


def install_publisher(factory: sessionmaker[Session], publish: Publisher) -> None:
    """After each commit of a session from ``factory``, publish its new outbox ids."""

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        rows = session.info.pop(_NEW_ROWS, None)
        ids = [row.id for row in rows or () if row.id is not None]  # None: rolled back
        if ids:
            publish(ids)

    @event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        session.info.pop(_NEW_ROWS, None)

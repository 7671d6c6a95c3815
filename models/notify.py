"""Deciding who is told what, on which channel: outbox rows, written in the caller's
transaction.

Rows are only *planned* here; sending is the worker's. New row ids are collected on the
session and handed, after the commit, to whatever publisher the runtime installed
(``install_publisher``), so models never import the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from models.base import utcnow
from models.contact import NEW_CONTACTS, Contact
from models.outbox import Outbox
from models.ticket import Ticket

Publisher = Callable[[list[int]], None]
_NEW_IDS = "helpdesk.outbox_new"
_ACKS = "helpdesk.acks_queued"
# Automatic answers to a sender's message: capped per sender per hour.
ACK_TEMPLATES = ("ack", "joined_ticket", "flagged_new_ticket")


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
) -> Outbox | None:
    """Add one outbox row (or none when the contact cannot be reached at all)."""
    channel = channel or choose_channel(contact)
    if channel is None:
        return None
    row = Outbox(
        ticket_id=ticket.id if ticket is not None else None,
        contact_id=contact.id,
        channel=channel,
        template=template,
        audience=audience,
        payload=dict(payload or {}),
        status="pending",
        next_attempt_at=not_before or utcnow(),
    )
    session.add(row)
    session.flush()
    session.info.setdefault(_NEW_IDS, []).append(row.id)
    if template in ACK_TEMPLATES:
        acks = session.info.setdefault(_ACKS, {})
        acks[contact.id] = acks.get(contact.id, 0) + 1
    return row


def acks_in_last_hour(session: Session, contact: Contact) -> int:
    if contact.id in session.info.get(NEW_CONTACTS, ()):
        # Created in this transaction: only what this transaction queued counts.
        return session.info.get(_ACKS, {}).get(contact.id, 0)
    since = utcnow() - timedelta(hours=1)
    return int(
        session.scalar(
            select(func.count(Outbox.id)).where(
                Outbox.contact_id == contact.id,
                Outbox.template.in_(ACK_TEMPLATES),
                Outbox.created_at >= since,
            )
        )
        or 0
    )


def install_publisher(factory: sessionmaker[Session], publish: Publisher) -> None:
    """After each commit of a session from ``factory``, publish its new outbox ids."""

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        ids = session.info.pop(_NEW_IDS, None)
        if ids:
            publish(ids)

    @event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        session.info.pop(_NEW_IDS, None)

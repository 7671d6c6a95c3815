"""JSON shapes of tickets, messages and notifications: the contract of ``--json``.

design.md fixes the keys other tools rely on; extra keys may be added, none removed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.contact import Contact
from models.message import Message
from models.outbox import Outbox
from models.ticket import Ticket


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def person(contact: Contact | None) -> dict[str, Any] | None:
    if contact is None:
        return None
    return {"name": contact.name or None, "email": contact.email, "phone": contact.phone}


def ticket_summary(ticket: Ticket) -> dict[str, Any]:
    return {
        "number": ticket.number,
        "kind": ticket.kind,
        "pipeline": ticket.pipeline,
        "subject": ticket.subject,
        "stage": ticket.stage,
        "state": ticket.state,
        "portal_status": ticket.portal_status,
        "requester": person(ticket.requester),
        "needs_attention": ticket.needs_attention,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
    }


def message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "channel": message.channel,
        "direction": message.direction,
        "sender": message.sender,
        "subject": message.subject,
        "text": message.text,
        "reply_text": message.reply_text,
        "message_id": message.external_id,
        "threaded_by": message.threaded_by,
        "forwarded_by": message.forwarded_by,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size, "sha256": a.sha256,
             "url": a.source_url}
            for a in message.attachments
        ],
        "created_at": iso(message.created_at),
    }


def outbox_view(row: Outbox, number: int | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "ticket": number,
        "channel": row.channel,
        "template": row.template,
        "stage": (row.payload or {}).get("stage"),
        "audience": row.audience,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at),
        "provider_id": row.provider_id,
        "last_error": row.last_error,
        "created_at": iso(row.created_at),
        "sent_at": iso(row.sent_at),
    }


def ticket_detail(session: Session, ticket: Ticket) -> dict[str, Any]:
    data = ticket_summary(ticket)
    messages = session.scalars(select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id))
    outbox = session.scalars(select(Outbox).where(Outbox.ticket_id == ticket.id).order_by(Outbox.id))
    data.update(
        {
            "priority": ticket.priority,
            "company": ticket.company.name if ticket.company else None,
            "vehicle": (
                {"vin": ticket.vehicle.vin, "plate": ticket.vehicle.plate, "make": ticket.vehicle.make,
                 "model": ticket.vehicle.model}
                if ticket.vehicle else None
            ),
            "provider": ticket.provider.name if ticket.provider else None,
            "parent": ticket.parent.number if ticket.parent else None,
            "linked_number": ticket.linked_number,
            "attention_reason": ticket.attention_reason,
            "warranty": ticket.warranty,
            "mileage": ticket.mileage,
            "line_items": [
                {"kind": i.kind, "description": i.description, "quantity": str(i.quantity),
                 "unit_price": str(i.unit_price), "amount": str(i.amount)}
                for i in ticket.line_items
            ],
            "total": str(ticket.total),
            "participants": [
                {"role": p.role, **(person(p.contact) or {})} for p in ticket.participants
            ],
            "messages": [message_view(m) for m in messages],
            "history": [
                {"from": h.from_stage, "to": h.to_stage, "by": h.by, "at": iso(h.at), "note": h.note,
                 "reopen": h.reopen}
                for h in ticket.history
            ],
            "notifications": [outbox_view(o, ticket.number) for o in outbox],
            "closed_at": iso(ticket.closed_at),
        }
    )
    return data

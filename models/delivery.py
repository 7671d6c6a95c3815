"""Delivery reports applied to notifications: statuses only move forward.

sent → delivered → read; ``failed`` and ``undelivered`` are final and never replace a
delivery already reported. Error 63016 (free text outside the customer's 24-hour window)
plans the same notification again as the approved template. Shared by the status
webhook (inbound) and the sender, which replays reports that arrived before it had
recorded the provider id.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.contact import Contact
from models.notify import enqueue, whatsapp_possible
from models.outbox import DeliveryEvent, Outbox
from models.ticket import Ticket

#: Twilio statuses that move a notification forward, by rank.
PROGRESS = {"sent": 1, "delivered": 2, "read": 3}
FAILURES = ("failed", "undelivered")
OUTSIDE_WINDOW = "63016"
ERROR_TEXT = {
    OUTSIDE_WINDOW: "outside the WhatsApp 24-hour window; resent as the approved template",
    "63024": "invalid message recipient",
    "63003": "the channel could not find the destination address",
}



def apply_event(session: Session, row: Outbox, status: str, error_code: str | None,
                error_message: str | None = None) -> str:
    """Move ``row`` to ``status`` if that is forward; plan the template resend on 63016.

    Public because the sender may record its provider id after Twilio's first callback
    arrived: it can replay the stored events with ``apply_recorded_events``.
    """
    current = row.status
    if status in PROGRESS:
        if current in FAILURES or PROGRESS.get(current, 0) >= PROGRESS[status]:
            return f"notification {row.id}: {status} ignored (already {current})"
        row.status = status
        return f"notification {row.id}: {current} → {status}"
    if status in FAILURES:
        if current in ("delivered", "read"):
            return f"notification {row.id}: {status} ignored (already {current})"
        row.status = status
        detail = error_message or ERROR_TEXT.get(error_code or "", "")
        row.last_error = f"{status} {error_code or ''}: {detail}".replace(" :", ":").strip()[:2000]
        outcome = f"notification {row.id}: {current} → {status} ({error_code or 'no code'})"
        if error_code == OUTSIDE_WINDOW:
            resend = resend_as_template(session, row)
            if resend is not None:
                outcome += f"; resent as template (notification {resend.id})"
        return outcome
    return f"notification {row.id}: {status} noted"


def resend_as_template(session: Session, row: Outbox) -> Outbox | None:
    """A new outbox row copying ``row`` that the sender must send as the approved template.

    Once per original: the copy names it in ``resend_of``. A template itself refused, or a
    contact who opted out of WhatsApp meanwhile, gets no WhatsApp resend (the contact's
    other channel is used when there is one).
    """
    payload = dict(row.payload or {})
    if payload.get("force_template") or row.contact_id is None:
        return None
    siblings = session.scalars(
        select(Outbox).where(Outbox.contact_id == row.contact_id, Outbox.template == row.template,
                             Outbox.id > row.id)
    )
    if any((s.payload or {}).get("resend_of") == row.id for s in siblings):
        return None
    contact = session.get(Contact, row.contact_id)
    if contact is None:
        return None
    ticket = session.get(Ticket, row.ticket_id) if row.ticket_id is not None else None
    payload.update(force_template=True, resend_of=row.id)
    return enqueue(session, ticket=ticket, contact=contact, template=row.template, payload=payload,
                   audience=row.audience, channel="whatsapp" if whatsapp_possible(contact) else None)


def apply_recorded_events(session: Session, row: Outbox) -> list[str]:
    """Apply callbacks stored before ``row`` had its provider id (call after setting it)."""
    if not row.provider_id:
        return []
    events = list(session.scalars(
        select(DeliveryEvent).where(DeliveryEvent.provider_id == row.provider_id,
                                    DeliveryEvent.outbox_id.is_(None)).order_by(DeliveryEvent.id)
    ))
    outcomes = []
    for event in events:
        event.outbox_id = row.id
        outcomes.append(apply_event(session, row, event.status, event.error_code))
    return outcomes

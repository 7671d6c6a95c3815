"""Twilio status callbacks: what happened to a WhatsApp notification after we sent it.

Recorded synchronously, in the request, unlike inbound messages: a callback is a few
fields with no customer content, recording it is one small idempotent transaction (the
``DeliveryEvent`` unique key on (MessageSid, status) makes a repeat a no-op), and answering
Twilio only after the commit means a callback that could not be stored is answered 503
rather than acknowledged and lost.

Statuses only move forward: sent → delivered → read; ``failed`` and ``undelivered`` are
final, and never replace a delivery already reported. Error 63016 (a free-form message
outside the customer's 24-hour window) plans the same notification again as the approved
template: a new outbox row with ``payload["force_template"] = True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.delivery import apply_event
from models.outbox import DeliveryEvent, Outbox


class BadCallback(ValueError):
    """A callback without MessageSid or MessageStatus."""


@dataclass(frozen=True)
class StatusCallback:
    sid: str
    status: str
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> StatusCallback:
        """Raises: BadCallback when the fields that identify the event are missing."""

        def field(*names: str) -> str:  # PostgreSQL text cannot hold NUL
            return next((form[n] for n in names if form.get(n)), "").replace("\x00", "").strip()

        sid = field("MessageSid", "SmsSid")
        status = field("MessageStatus", "SmsStatus").lower()
        if not sid or not status or len(sid) > 200 or len(status) > 20:
            raise BadCallback("a status callback needs MessageSid and MessageStatus")
        code = field("ErrorCode")[:20] or None
        message = field("ErrorMessage")[:500] or None
        return cls(sid=sid, status=status, error_code=code, error_message=message)


def record_status(session: Session, callback: StatusCallback) -> str:
    """Store the event once and apply it to its notification; return what happened."""
    row = session.scalar(select(Outbox).where(Outbox.provider_id == callback.sid).limit(1))
    event = DeliveryEvent(provider_id=callback.sid, status=callback.status,
                          error_code=callback.error_code, outbox_id=row.id if row else None)
    try:
        with session.begin_nested():
            session.add(event)
            session.flush()
    except IntegrityError:
        return f"{callback.sid} {callback.status}: already recorded"
    if row is None:
        return f"{callback.sid} {callback.status}: no notification with this id (kept)"
    return apply_event(session, row, callback.status, callback.error_code, callback.error_message)

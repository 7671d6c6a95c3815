"""Notifications waiting to go out, and the delivery reports that come back.

The outbox is the only way out: a stage change writes its rows in the same transaction,
and senders claim a row with one conditional UPDATE before sending, so a job delivered
twice sends once and a worker that dies mid-send leaves a claim that expires.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from models.contact import Contact
    from models.ticket import Ticket

# pending → sending → sent → (delivered → read) | failed | bounced | undelivered
OUTBOX_STATUSES = (
    "pending", "sending", "sent", "delivered", "read", "failed", "bounced", "undelivered",
    "cancelled",
)
FINAL_STATUSES = ("sent", "delivered", "read", "failed", "bounced", "undelivered", "cancelled")


class Outbox(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_contact_template", "contact_id", "template", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    channel: Mapped[str] = mapped_column(String(10))  # email | whatsapp
    template: Mapped[str] = mapped_column(String(120))
    audience: Mapped[str] = mapped_column(String(20), default="requester")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claim_token: Mapped[str | None] = mapped_column(String(40))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_id: Mapped[str | None] = mapped_column(String(998), index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Set on new rows so that one flush writes a batch's tickets and contacts first.
    ticket: Mapped[Ticket | None] = relationship()
    contact: Mapped[Contact | None] = relationship()


class DeliveryEvent(Base):
    """A status callback (Twilio) or bounce; (provider id, status) is stored once."""

    __tablename__ = "delivery_events"
    __table_args__ = (UniqueConstraint("provider_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(998))
    status: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(20))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def retry(session: Session, outbox_id: int) -> Outbox:
    """Put a failed (or bounced/undelivered) notification back in the queue, now.

    Raises:
        LookupError: no such row, or it is not in a state that can be retried.
    """
    row = session.get(Outbox, outbox_id)
    if row is None:
        raise LookupError(f"no notification {outbox_id}")
    if row.status not in ("failed", "bounced", "undelivered", "cancelled"):
        raise LookupError(f"notification {outbox_id} is {row.status}; only failed ones are retried")
    row.status = "pending"
    row.attempts = 0
    row.next_attempt_at = utcnow()
    row.claim_token = None
    row.claimed_at = None
    row.last_error = None
    # Published after the commit like a new row (``models.notify`` keeps the rows themselves).
    session.info.setdefault("helpdesk.outbox_new", []).append(row)
    return row

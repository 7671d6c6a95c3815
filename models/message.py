"""What came in and went out: raw messages as received, parsed messages, attachments.

The door commits a ``RawMessage`` (bytes only) before it answers; everything else is
derived from that row afterwards, so a crash after the answer loses nothing and a fix to
the parser can be replayed over quarantined rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from models.contact import Contact
    from models.ticket import Ticket

SOURCES = ("smtp", "imap", "pipe", "whatsapp", "cli")
RAW_STATUSES = ("pending", "processing", "done", "quarantined")


class RawMessage(Base):
    """Bytes exactly as a door received them, and what became of them."""

    __tablename__ = "raw_messages"
    __table_args__ = (Index("ix_raw_messages_status", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(10))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    envelope_from: Mapped[str | None] = mapped_column(String(320))
    envelope_to: Mapped[str | None] = mapped_column(Text)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    outcome: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Message(Base):
    """One message of a ticket's conversation, in or out, on any channel."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        Index("ix_messages_ticket_created", "ticket_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(10))  # email | whatsapp | note
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    # Message-ID (without <>) for mail, MessageSid for WhatsApp: unique per channel.
    external_id: Mapped[str] = mapped_column(String(998))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    sender: Mapped[str | None] = mapped_column(String(400))
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, default="")
    reply_text: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    threaded_by: Mapped[str | None] = mapped_column(String(20))
    forwarded_by: Mapped[str | None] = mapped_column(String(320))
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), index=True)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="message", cascade="all, delete-orphan", order_by="Attachment.id"
    )
    # Set on new rows so that one flush writes a batch's tickets, then their messages.
    ticket: Mapped[Ticket] = relationship()
    contact: Mapped[Contact | None] = relationship()


class Blob(Base):
    """Attachment bytes, stored once by content hash however often they are sent."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    # Display data only, never a path.
    filename: Mapped[str] = mapped_column(String(400), default="")
    content_type: Mapped[str] = mapped_column(String(200), default="application/octet-stream")
    size: Mapped[int] = mapped_column(Integer, default=0)
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    content_id: Mapped[str | None] = mapped_column(String(400))
    # WhatsApp media not fetched yet: the URL is kept and the fetch retried.
    source_url: Mapped[str | None] = mapped_column(Text)
    # Retry bookkeeping for that fetch (inbound.media): tries so far, last error, next try.
    fetch_attempts: Mapped[int] = mapped_column(Integer, default=0)
    fetch_error: Mapped[str | None] = mapped_column(Text)
    fetch_after: Mapped[datetime | None] = mapped_column(UTCDateTime)

    message: Mapped[Message] = relationship(back_populates="attachments")

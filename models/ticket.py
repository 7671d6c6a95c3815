"""Tickets (attention and service), vehicles, providers, line items and stage history.

An attention ticket is the conversation a customer follows; a service ticket is the
billable maintenance event under it (seed 000). Both share one table: they have the same
number space, the same stage mechanics and the same threading.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow
from models.contact import Company, Contact

KINDS = ("attention", "service")
PRIORITIES = ("baja", "normal", "alta", "urgente")
ITEM_KINDS = ("service", "part")
ZERO = Decimal("0.00")


class Vehicle(Base):
    __tablename__ = "vehicles"

    id: Mapped[int] = mapped_column(primary_key=True)
    vin: Mapped[str] = mapped_column(String(17), unique=True)
    plate: Mapped[str | None] = mapped_column(String(15), index=True)
    make: Mapped[str | None] = mapped_column(String(60))
    model: Mapped[str | None] = mapped_column(String(60))
    year: Mapped[int | None] = mapped_column(Integer)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True)


class Provider(Base):
    """A workshop or agency that performs the service (seed 000: 'proveedor')."""

    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    address: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(String(40))


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_requester_state", "requester_id", "state"),
        Index("ix_tickets_state_stage", "state", "pipeline", "stage"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    kind: Mapped[str] = mapped_column(String(10), default="attention")
    pipeline: Mapped[str] = mapped_column(String(40))
    stage: Mapped[str] = mapped_column(String(80))
    # Denormalised from the stage so that "open tickets of this sender" is one index scan.
    state: Mapped[str] = mapped_column(String(10), default="Abierto")
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    subject: Mapped[str] = mapped_column(Text, default="")
    subject_key: Mapped[str] = mapped_column(String(200), default="", index=True)
    inbox_address: Mapped[str | None] = mapped_column(String(320))
    requester_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True)
    vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    provider_id: Mapped[int | None] = mapped_column(ForeignKey("providers.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    linked_number: Mapped[int | None] = mapped_column(Integer)
    needs_attention: Mapped[bool] = mapped_column(Boolean, default=False)
    attention_reason: Mapped[str | None] = mapped_column(Text)
    appointment_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expected_end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mileage: Mapped[int | None] = mapped_column(Integer)
    warranty: Mapped[bool] = mapped_column(Boolean, default=False)
    comments: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_outbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    requester: Mapped[Contact | None] = relationship(foreign_keys=[requester_id])
    assignee: Mapped[Contact | None] = relationship(foreign_keys=[assignee_id])
    company: Mapped[Company | None] = relationship()
    vehicle: Mapped[Vehicle | None] = relationship()
    provider: Mapped[Provider | None] = relationship()
    parent: Mapped[Ticket | None] = relationship(remote_side=[id])
    line_items: Mapped[list[LineItem]] = relationship(
        back_populates="ticket", cascade="all, delete-orphan", order_by="LineItem.id"
    )
    participants: Mapped[list[Participant]] = relationship(
        back_populates="ticket", cascade="all, delete-orphan", order_by="Participant.id"
    )
    history: Mapped[list[StageHistory]] = relationship(
        back_populates="ticket", cascade="all, delete-orphan", order_by="StageHistory.id"
    )

    @property
    def raised_at(self) -> datetime:
        """Seed 000's 'levantamiento': when the ticket was opened."""
        return self.created_at

    @property
    def portal_status(self) -> str:
        return f"{self.state}-{self.stage}"

    @property
    def is_open(self) -> bool:
        return self.state == "Abierto"

    @property
    def total(self) -> Decimal:
        return sum((item.amount for item in self.line_items), ZERO)


class LineItem(Base):
    """A service or part on a service ticket. Warranty work bills zero (seed 003)."""

    __tablename__ = "line_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="service")
    description: Mapped[str] = mapped_column(Text)
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 3), default=Decimal(1))
    unit_price: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=ZERO)

    ticket: Mapped[Ticket] = relationship(back_populates="line_items")

    @property
    def amount(self) -> Decimal:
        if self.ticket is not None and self.ticket.warranty:
            return ZERO
        return (Decimal(self.quantity) * Decimal(self.unit_price)).quantize(Decimal("0.01"))


class Participant(Base):
    """Everyone who may write into a ticket: requester, copied people, forwarders."""

    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("ticket_id", "contact_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    role: Mapped[str] = mapped_column(String(20), default="cc")

    ticket: Mapped[Ticket] = relationship(back_populates="participants")
    contact: Mapped[Contact] = relationship()


class StageHistory(Base):
    __tablename__ = "stage_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(80))
    to_stage: Mapped[str] = mapped_column(String(80))
    by: Mapped[str | None] = mapped_column(String(320))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)
    reopen: Mapped[bool] = mapped_column(Boolean, default=False)

    ticket: Mapped[Ticket] = relationship(back_populates="history")

"""Shared set-up of the outbound tests: tickets with a thread, stage moves, outbox reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from config.settings import Settings
from models.base import utcnow
from models.contact import Contact, ContactEmail
from models.outbox import Outbox
from models.stages import move_stage
from models.ticket import LineItem, Provider, Ticket, Vehicle
from models.tickets import NewMessage, find_by_number, open_ticket
from outbound.deliver import Deliverer
from tests.support.ports import wait_until
from worker.relay import OutboundService
from worker.runtime import Runtime

FIRST_MESSAGE_ID = "CAF1rst.1234@mail.customer.example"
CUSTOMER = "ana.lopez@customer.example"
PHONE = "+5215512345678"


def build_runtime(make_settings: Callable[..., Settings], **overrides: Any) -> Runtime:
    """A runtime on the test's database with fast retries and sweeps."""
    values: dict[str, Any] = {
        "send_backoff_seconds": 0.05, "send_backoff_max_seconds": 0.2, "sweep_interval_seconds": 0.1,
    }
    values.update(overrides)
    return Runtime.build(make_settings(**values))


@contextmanager
def delivering(make_settings: Callable[..., Settings], **overrides: Any) -> Iterator[tuple[Runtime, Deliverer]]:
    """A runtime (``build_runtime``) and a Deliverer on it, both closed afterwards."""
    rt = build_runtime(make_settings, **overrides)
    deliverer = Deliverer(rt.sessions, rt.settings, rt.catalog)
    try:
        yield rt, deliverer
    finally:
        deliverer.close()
        rt.close()


def open_email_ticket(rt: Runtime, *, acknowledge: bool = False, email: str = CUSTOMER,
                      phone: str | None = None, preferred: str = "email", pipeline: str = "mantenimiento",
                      first_message_id: str = FIRST_MESSAGE_ID, subject: str = "Servicio de frenos") -> int:
    """A ticket opened by the customer's first mail; returns its number."""
    with rt.transaction() as session:
        contact = Contact(name="Ana López", phone=phone, preferred_channel=preferred)
        if email:
            contact.emails.append(ContactEmail(email=email))
        session.add(contact)
        session.flush()
        ticket = open_ticket(
            session, catalog=rt.catalog, settings=rt.settings, pipeline_id=pipeline, requester=contact,
            subject=subject, inbox_address="soporte@jhleasing.mx", acknowledge=acknowledge,
            message=NewMessage(channel="email", text="Mi camioneta hace ruido al frenar.", subject=subject,
                               external_id=first_message_id, sender=email),
        )
        return ticket.number


def add_service_data(rt: Runtime, number: int) -> None:
    """Vehicle, provider, appointment, expected end and line items, as in seed 000."""
    with rt.transaction() as session:
        ticket = find_by_number(session, number)
        assert ticket is not None
        vin = f"3N1CN7AD5KL{number % 1000000:06d}"
        ticket.vehicle = Vehicle(vin=vin, plate="ABC-123-D", make="Nissan", model="Versa", year=2022)
        name = "Taller Frenos del Valle"
        ticket.provider = session.scalar(select(Provider).where(Provider.name == name)) or Provider(
            name=name, address="Av. Insurgentes Sur 1234, CDMX", phone="+525555512345"
        )
        ticket.appointment_at = utcnow() + timedelta(days=2)
        ticket.expected_end_at = utcnow() + timedelta(days=4)
        ticket.mileage = 45210
        ticket.line_items = [
            LineItem(kind="service", description="Cambio de balatas delanteras", quantity=Decimal(1),
                     unit_price=Decimal("1850.00")),
            LineItem(kind="part", description="Balatas cerámicas", quantity=Decimal(2),
                     unit_price=Decimal("640.50")),
        ]


def move(rt: Runtime, number: int, stage: str, note: str | None = None) -> None:
    """A stage change committed through the runtime's sessions (so the publisher runs)."""
    with rt.transaction() as session:
        ticket = find_by_number(session, number)
        assert ticket is not None
        move_stage(session, ticket, stage, catalog=rt.catalog, settings=rt.settings, note=note)


def outbox_rows(rt: Runtime, template: str | None = None) -> list[Outbox]:
    with rt.sessions() as session:
        query = select(Outbox).order_by(Outbox.id)
        if template:
            query = query.where(Outbox.template == template)
        return list(session.scalars(query))


def ticket_row(rt: Runtime, number: int) -> Ticket:
    with rt.sessions() as session:
        ticket = find_by_number(session, number)
        assert ticket is not None
        return ticket


@contextmanager
def running(rt: Runtime, namespace: str, **kwargs: Any) -> Iterator[OutboundService]:
    """The outbound chain on Redis under the test's namespace, stopped at the end."""
    kwargs.setdefault("threads", 2)
    kwargs.setdefault("worker_timeout_ms", 50)
    service = OutboundService.redis(rt, namespace=namespace, **kwargs)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def wait_status(rt: Runtime, outbox_id: int, *statuses: str, timeout: float = 15.0) -> Outbox:
    """Wait until the row reaches one of ``statuses``; return it."""

    def reached() -> Outbox | None:
        with rt.sessions() as session:
            row = session.get(Outbox, outbox_id)
            return row if row is not None and row.status in statuses else None

    def describe() -> str:
        with rt.sessions() as session:
            row = session.get(Outbox, outbox_id)
            return f"notification {outbox_id} is {row.status if row else None}: {row.last_error if row else ''}"

    return wait_until(reached, timeout=timeout, message=describe)

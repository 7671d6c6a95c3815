"""The send step's database work: on PostgreSQL the claim (with every read) and the record
are one statement each, on a connection each worker thread keeps; elsewhere they are a
few statements in a transaction. Either way the mail and the rows written must be the
same, the claim token must guard the record, and a connection the database dropped must
not cost a send.

Every test runs on SQLite and PostgreSQL; the relay is ``SmtpSink`` on a free port.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from config.settings import Settings
from models.base import utcnow
from models.contact import Contact, ContactEmail
from models.message import Message
from models.outbox import Outbox
from models.ticket import Ticket
from models.tickets import find_by_number
from outbound.compose import Notification, load_outbox
from outbound.connections import ThreadConnections
from outbound.context import NotificationContext, RecipientView
from outbound.deliver import Outcome
from outbound.email import ENCODED_WIRE_POLICY, wire_bytes
from outbound.mime import compose_email
from outbound.record import record_sent, record_sent_at_once
from outbound.render import Renderer
from outbound.snapshot import CLAIM, REFERENCES_LIMIT, ContactInfo
from tests.outbound_helpers import (
    FIRST_MESSAGE_ID,
    add_service_data,
    delivering,
    move,
    open_email_ticket,
    outbox_rows,
    ticket_row,
)
from tests.support import fixtures
from tests.support.smtp_sink import SmtpSink
from tests.support.tcp_proxy import TcpProxy
from worker.runtime import Runtime

smtp_sink = fixtures.smtp_sink

pytestmark = pytest.mark.timeout(60)


def add_thread(rt: Runtime, number: int, count: int) -> list[str]:
    """``count`` more customer mails on the ticket; returns every mail id, oldest first."""
    with rt.transaction() as session:
        ticket = find_by_number(session, number)
        assert ticket is not None
        for i in range(count):
            session.add(Message(ticket_id=ticket.id, channel="email", direction="in", external_id=f"m{i}@mail.example",
                                text=f"Mensaje {i}", sender="ana.lopez@customer.example"))
    return [FIRST_MESSAGE_ID, *(f"m{i}@mail.example" for i in range(count))]


def test_a_long_thread_is_referenced_by_its_root_and_its_latest_mail(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url) as (rt, deliverer):
        number = open_email_ticket(rt)
        ids = add_thread(rt, number, 14)
        move(rt, number, "Cita agendada")
        [row] = outbox_rows(rt, "stage")
        assert deliverer.deliver(row.id) == Outcome.SENT
        [mail] = smtp_sink.wait_for_mail(1)
        references = mail.message["References"].split()
        assert references == [f"<{mid}>" for mid in [ids[0], *ids[-(REFERENCES_LIMIT - 1):]]]
        assert mail.message["In-Reply-To"] == f"<{ids[-1]}>"


def test_the_mail_sent_shows_what_the_row_reads_step_by_step(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    """The one-statement claim (PostgreSQL) reads what the step-by-step reads read."""
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url) as (rt, deliverer):
        number = open_email_ticket(rt)
        add_service_data(rt, number)
        with rt.transaction() as session:
            ticket = find_by_number(session, number)
            assert ticket is not None
            executive = Contact(name="Luis Pérez", phone="+525555000111", role="staff")
            executive.emails += [ContactEmail(email="luis@jhleasing.mx"), ContactEmail(email="lp@jhleasing.mx")]
            ticket.assignee = executive
        shows = {"Enviado a cliente": ("Cotización adjunta.", f"[JHL#{number}]"),
                 "Entrega vehículo": ("Luis Pérez", "luis@jhleasing.mx", "Taller Frenos del Valle")}
        for count, (stage, shown) in enumerate(shows.items(), start=1):
            move(rt, number, stage, note="Cotización adjunta.")
            row = outbox_rows(rt, "stage")[-1]
            with rt.engine.connect() as conn:
                expected = load_outbox(conn, row.id, settings=rt.settings, catalog=rt.catalog)
            rendered = Renderer().email(expected.for_channel("email"))
            assert deliverer.deliver(row.id) == Outcome.SENT
            mail = smtp_sink.wait_for_mail(count)[-1]
            assert mail.message["Subject"] == rendered.subject
            assert mail.message["References"] == " ".join(f"<{mid}>" for mid in expected.thread)
            text = mail.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
            assert text == rendered.text and all(s in text for s in shown)
            html = mail.message.get_body(("html",)).get_content().replace("\r\n", "\n")
            assert html == rendered.html


def _claim(rt: Runtime, outbox_id: int, token: str) -> None:
    now = utcnow()
    with rt.engine.begin() as conn:
        assert conn.execute(CLAIM, {"oid": outbox_id, "now": now, "stale": now - timedelta(minutes=5),
                                    "token": token}).first() is not None


def _record(rt: Runtime, row: Outbox, token: str) -> bool:
    """Record a send of ``row`` as the send step does on this database."""
    fields = {"oid": row.id, "token": token, "ticket_id": row.ticket_id, "survey_id": None, "channel": "email",
              "provider_id": f"hd.{row.id}.test@jhleasing.mx", "sender": "JHLeasing <soporte@jhleasing.mx>",
              "subject": "Asunto", "text": "Texto", "now": utcnow()}
    if rt.engine.dialect.name == "postgresql":
        with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return record_sent_at_once(conn, **fields)
    with rt.engine.begin() as conn:
        return record_sent(conn, reply=False, **fields)


def test_a_record_under_a_claim_taken_over_writes_nothing_and_the_holder_records_everything(rt: Runtime) -> None:
    number = open_email_ticket(rt)
    move(rt, number, "Cita agendada")
    [row] = outbox_rows(rt, "stage")
    before = ticket_row(rt, number)
    _claim(rt, row.id, "holder")
    assert not _record(rt, row, "someone-else")
    with rt.sessions() as session:
        assert session.get(Outbox, row.id).status == "sending"  # type: ignore[union-attr]
        assert session.scalars(select(Message).where(Message.outbox_id == row.id)).all() == []
    assert ticket_row(rt, number).last_outbound_at is None
    assert _record(rt, row, "holder")
    with rt.sessions() as session:
        sent = session.get(Outbox, row.id)
        assert sent is not None and sent.status == "sent" and sent.claim_token is None
        [out] = session.scalars(select(Message).where(Message.outbox_id == row.id)).all()
        assert (out.direction, out.threaded_by, out.external_id, out.text) == (
            "out", "notification", sent.provider_id, "Texto")
    after = ticket_row(rt, number)
    assert after.last_outbound_at is not None and after.updated_at == before.updated_at
    assert not _record(rt, row, "holder")  # the claim is spent: a second record changes nothing


def test_a_database_connection_dropped_between_sends_is_replaced_without_losing_the_send(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, database_url: str
) -> None:
    """PostgreSQL through a TCP proxy that cuts every connection between two sends; the
    worker thread's kept connection is dead, and the next send must open a new one at
    once rather than fail. (SQLite has no connection to lose: both sends just go.)"""
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start() if url.get_backend_name() == "postgresql" \
        else None
    overrides = {"database_url": url.set(port=proxy.port).render_as_string(hide_password=False)} if proxy else {}
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url, **overrides) as (rt, deliverer):
        first, second = open_email_ticket(rt), open_email_ticket(rt, email="b@customer.example",
                                                                 first_message_id="b@mail.example")
        move(rt, first, "Cita agendada")
        move(rt, second, "Cita agendada")
        rows = outbox_rows(rt, "stage")
        assert deliverer.deliver(rows[0].id) == Outcome.SENT
        if proxy is not None:
            proxy.cut()
            proxy.restore()
        assert deliverer.deliver(rows[1].id) == Outcome.SENT
        assert len(smtp_sink.wait_for_mail(2)) == 2
        assert [r.status for r in outbox_rows(rt, "stage")] == ["sent", "sent"]
        if proxy is not None:
            proxy.stop()


def _note(name: str, thread: list[str]) -> Notification:
    contact = ContactInfo(id=1, name=name, email="jose@customer.example", phone=None, whatsapp_address=None,
                          whatsapp_opt_out=False, last_whatsapp_in_at=None, preferred_channel="email",
                          timezone=None, locale=None)
    return Notification(
        outbox_id=7, template="stage", channel="email", payload={}, attempts=1, contact=contact, ticket_id=1,
        context=NotificationContext(template="reply", ticket=None, recipient=RecipientView(name=name)),
        from_address="soporte@jhleasing.mx", message_id=f"hd.7.{uuid.uuid4().hex[:16]}@jhleasing.mx", thread=thread,
    )


@pytest.mark.parametrize("name", ["Ana", "José Ñúñez", "José Ñúñez Castañeda de la Fuente y Hernández Villaseñor"])
@pytest.mark.parametrize("threads", [0, 1, 10])
def test_a_composed_mail_reads_back_as_written_with_long_names_and_threads(name: str, threads: int) -> None:
    note = _note(name, [f"id{i}.{'x' * 30}@mail.customer.example" for i in range(threads)])
    subject = "[JHL#104236] Cita agendada — revisión de frenos, ñandú " * 2
    text = "Hola José,\nya programamos la cita.\r\nLínea con = y =_ y —.\n" * 40 + "x" * 300
    html = "<p>Hola José</p>\n<p>=_hd.</p>\r\n" * 40
    msg = compose_email(note, subject, text, html, company_name="JHLeasing", now=datetime(2026, 3, 1, tzinfo=UTC))
    data = wire_bytes(msg)
    assert data == msg.as_bytes(policy=ENCODED_WIRE_POLICY)
    parsed = BytesParser(policy=policy.default).parsebytes(data)
    assert parsed["Subject"] == " ".join(subject.split())
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == text.replace("\r\n", "\n")
    assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n") == html.replace("\r\n", "\n")


def test_a_ticket_touched_by_a_send_keeps_its_updated_at(rt: Runtime) -> None:
    number = open_email_ticket(rt)
    with rt.transaction() as session:
        session.execute(update(Ticket).where(Ticket.number == number)
                        .values(updated_at=datetime(2026, 1, 1, tzinfo=UTC)))
    move(rt, number, "Cita agendada")
    [row] = outbox_rows(rt, "stage")
    stamped = ticket_row(rt, number).updated_at
    _claim(rt, row.id, "t")
    assert _record(rt, row, "t")
    assert ticket_row(rt, number).updated_at == stamped


def test_worker_threads_keep_at_most_their_share_of_the_pool_and_give_it_back_on_close(rt: Runtime) -> None:
    """More worker threads than ``keep`` borrow a connection per call instead of holding
    one, so the publisher and the sweeper still find one in the pool."""
    connections = ThreadConnections(rt.engine, keep=2)
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(3):
            value = connections.run(lambda conn: conn.execute(text("SELECT 1")).scalar_one())
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [1] * 18
    assert rt.engine.pool.checkedout() == 2  # type: ignore[attr-defined]
    connections.close()
    assert rt.engine.pool.checkedout() == 0  # type: ignore[attr-defined]

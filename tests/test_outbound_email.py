"""Notifications by email: through Redis and the worker to a real SMTP relay (aiosmtpd).

Every test runs on SQLite and PostgreSQL; the relay is ``SmtpSink`` on a free port, the
broker the shared Redis under a namespace of the test's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from email import policy
from email.parser import BytesParser

import pytest
from sqlalchemy import select

from config.settings import Settings
from models.identity import own_outbox_id
from models.message import Message
from outbound.deliver import Deliverer, Outcome
from tests.cli_helpers import helpdesk
from tests.outbound_helpers import (
    CUSTOMER,
    FIRST_MESSAGE_ID,
    build_runtime,
    delivering,
    move,
    open_email_ticket,
    outbox_rows,
    running,
    ticket_row,
    wait_status,
)
from tests.support import fixtures
from tests.support.fixtures import RELAY_PASSWORD, RELAY_USER
from tests.support.ports import wait_until
from tests.support.smtp_sink import SmtpSink
from worker.relay import OutboundService, Sweeper

smtp_sink = fixtures.smtp_sink
smtp_relay_tls = fixtures.smtp_relay_tls

pytestmark = pytest.mark.timeout(90)


def test_a_stage_change_puts_one_mail_at_the_relay_with_the_tag_the_stage_text_and_threading(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str
) -> None:
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url)
    try:
        number = open_email_ticket(rt)
        with running(rt, redis_namespace):
            move(rt, number, "Cita agendada", note="Llevar la tarjeta de circulación.")
            [mail] = smtp_sink.wait_for_mail(1)
            [row] = outbox_rows(rt, "stage")
            wait_status(rt, row.id, "sent")
            move(rt, number, "Cotización solicitada")
            second = smtp_sink.wait_for_mail(2)[1]
        msg = mail.message
        assert f"[JHL#{number}]" in msg["Subject"] and "Cita agendada" in msg["Subject"]
        text = msg.get_body(("plain",)).get_content()
        assert "Ya programamos la cita" in text and "Llevar la tarjeta de circulación." in text
        html = msg.get_body(("html",)).get_content()
        assert "Cita agendada" in html and html.lstrip().startswith("<!DOCTYPE html>")
        assert msg["From"].addresses[0].addr_spec == "soporte@jhleasing.mx"
        assert msg["From"].addresses[0].display_name == "JHLeasing"
        assert msg["Reply-To"] == "soporte@jhleasing.mx" and mail.rcpt_tos == (CUSTOMER,)
        assert msg["Auto-Submitted"] == "auto-generated" and msg["X-Auto-Response-Suppress"] == "All"
        assert own_outbox_id(msg["Message-ID"], "test-secret") == row.id
        assert msg["In-Reply-To"] == f"<{FIRST_MESSAGE_ID}>"
        assert msg["References"] == f"<{FIRST_MESSAGE_ID}>"
        # The next notification answers the previous one and keeps the root.
        assert second.message["In-Reply-To"] == msg["Message-ID"]
        assert second.message["References"].split() == [f"<{FIRST_MESSAGE_ID}>", msg["Message-ID"]]
        assert len(smtp_sink.messages) == 2
        sent = wait_status(rt, row.id, "sent")
        assert sent.provider_id == msg["Message-ID"].strip("<>") and sent.attempts == 1
        with rt.sessions() as session:
            out = session.scalars(select(Message).where(Message.outbox_id == row.id)).one()
        assert (out.direction, out.channel, out.external_id) == ("out", "email", sent.provider_id)
        assert "Ya programamos la cita" in out.text
        assert ticket_row(rt, number).last_outbound_at is not None
    finally:
        rt.close()


def test_the_same_job_delivered_twice_sends_one_mail(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str
) -> None:
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url)
    try:
        number = open_email_ticket(rt)
        move(rt, number, "Cita agendada")
        [row] = outbox_rows(rt)
        service = OutboundService.redis(rt, namespace=redis_namespace, threads=4, worker_timeout_ms=50,
                                        sweep=False, publish=False)
        service.actor.send(row.id)
        service.actor.send(row.id)
        with service:
            wait_status(rt, row.id, "sent")
            service.broker.join("outbox", timeout=10_000)
        # And the send step itself, twice at the same moment:
        move(rt, number, "En servicio")
        new_id = outbox_rows(rt)[-1].id
        deliverer = Deliverer(rt.sessions, rt.settings, rt.catalog)
        outcomes: list[Outcome] = []
        threads = [threading.Thread(target=lambda: outcomes.append(deliverer.deliver(new_id))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deliverer.close()
        assert sorted(outcomes) == [Outcome.SENT, Outcome.SKIPPED]
        assert len(smtp_sink.messages) == 2
        assert len({m.message["Message-ID"] for m in smtp_sink.messages}) == 2
    finally:
        rt.close()


def test_a_relay_answering_451_twice_then_accepting_gives_one_mail(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str
) -> None:
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url)
    try:
        number = open_email_ticket(rt)
        smtp_sink.fail_next(2, 451, "4.3.0 try later")
        with running(rt, redis_namespace):
            move(rt, number, "Cita agendada")
            [row] = outbox_rows(rt)
            sent = wait_status(rt, row.id, "sent")
        assert len(smtp_sink.messages) == 1
        assert sent.attempts == 3 and sent.last_error is None
    finally:
        rt.close()


def test_550_fails_without_retry_and_outbox_retry_sends_it_again(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str,
    cli_env: dict[str, str],
) -> None:
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url)
    try:
        number = open_email_ticket(rt)
        smtp_sink.reject_all(550, "5.7.1 mailbox unavailable")
        with running(rt, redis_namespace) as service:
            move(rt, number, "Cita agendada")
            [row] = outbox_rows(rt)
            failed = wait_status(rt, row.id, "failed")
            assert failed.attempts == 1 and "550" in (failed.last_error or "")
            assert service.sweeper is not None and row.id not in service.sweeper.due_ids()
            assert smtp_sink.messages == []
            smtp_sink.reset()
            helpdesk(cli_env, "outbox", "--retry", str(row.id))
            sent = wait_status(rt, row.id, "sent")
        assert len(smtp_sink.messages) == 1 and sent.last_error is None
    finally:
        rt.close()


def test_ten_sends_share_one_relay_connection(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url) as (rt, deliverer):
        ids = []
        for i in range(10):
            open_email_ticket(rt, email=f"user{i}@customer.example", first_message_id=f"m{i}@x", acknowledge=True)
        ids = [row.id for row in outbox_rows(rt, "ack")]
        assert len(ids) == 10
        started = time.perf_counter()
        outcomes = [deliverer.deliver(i) for i in ids]
        elapsed = time.perf_counter() - started
        assert outcomes == [Outcome.SENT] * 10
        smtp_sink.wait_for_mail(10)
        assert smtp_sink.connections == 1
        assert {m.connection for m in smtp_sink.messages} == {1}
        print(f"10 claim+render+send+record on one connection: {elapsed * 100:.1f} ms each")


def test_starttls_and_auth_relay(make_settings: Callable[..., Settings], smtp_relay_tls: SmtpSink) -> None:
    url = f"{smtp_relay_tls.url}?cafile={smtp_relay_tls.cert_path}"
    with delivering(make_settings, outbound_smtp_url=url) as (rt, deliverer):
        open_email_ticket(rt, acknowledge=True)
        [row] = outbox_rows(rt, "ack")
        assert deliverer.deliver(row.id) == Outcome.SENT
        [mail] = smtp_relay_tls.wait_for_mail(1)
        assert mail.tls and mail.login == RELAY_USER
        assert RELAY_PASSWORD not in mail.data.decode()


def test_a_relay_refusing_our_login_keeps_the_notification_pending(
    make_settings: Callable[..., Settings], smtp_relay_tls: SmtpSink
) -> None:
    url = (f"smtp://{RELAY_USER.replace('@', '%40')}:wrong@{smtp_relay_tls.host}:{smtp_relay_tls.port}"
           f"?cafile={smtp_relay_tls.cert_path}")
    with delivering(make_settings, outbound_smtp_url=url, send_backoff_seconds=60) as (rt, deliverer):
        open_email_ticket(rt, acknowledge=True)
        [row] = outbox_rows(rt, "ack")
        assert deliverer.deliver(row.id) == Outcome.RETRY
        [row] = outbox_rows(rt, "ack")
        assert row.status == "pending" and "refused our login" in (row.last_error or "")
        assert smtp_relay_tls.messages == []


def test_without_a_relay_an_acknowledgement_is_written_as_a_parseable_eml(
    make_settings: Callable[..., Settings],
) -> None:
    rt = build_runtime(make_settings)
    outbox_dir = rt.settings.outbox_dir
    try:
        with OutboundService.embedded(rt, threads=1, worker_timeout_ms=50):
            number = open_email_ticket(rt, acknowledge=True)
            [row] = outbox_rows(rt, "ack")
            sent = wait_status(rt, row.id, "sent")
        [path] = wait_until(lambda: list(outbox_dir.glob("*.eml")))
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert f"[JHL#{number}]" in msg["Subject"]
        assert msg["Message-ID"] == f"<{sent.provider_id}>"
        assert str(number) in msg.get_body(("plain",)).get_content()
        assert not list(outbox_dir.glob(".tmp-*"))
    finally:
        rt.close()


def test_sweeper_sends_rows_nobody_published(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url)
    try:
        number = open_email_ticket(rt)
        move(rt, number, "Cita agendada")  # no publisher installed: only the sweeper knows
        sent: list[list[int]] = []
        sweeper = Sweeper(rt.sessions, rt.settings, lambda job: sent.append(job) or True, grace=0)
        assert sweeper.sweep() == 1 and sent == [[outbox_rows(rt)[0].id]]
    finally:
        rt.close()

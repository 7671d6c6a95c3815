"""The relay, the sweeper and ``helpdesk worker``: a notification is sent exactly once even
when the broker is unreachable, loses its queue, or a worker dies mid-send."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis
from sqlalchemy import update

from config.settings import Settings
from models.base import utcnow
from models.outbox import Outbox
from outbound.deliver import Outcome, backoff_delay
from tests.cli_helpers import HELPDESK, helpdesk
from tests.outbound_helpers import build_runtime, delivering, move, open_email_ticket, outbox_rows, running, wait_status
from tests.support import fixtures
from tests.support.ports import free_port, wait_until
from tests.support.smtp_sink import SmtpSink
from worker.actors import declare
from worker.broker import close_broker, redis_broker
from worker.relay import OutboundService
from worker.runtime import Runtime

smtp_sink = fixtures.smtp_sink

pytestmark = pytest.mark.timeout(90)


def burst(rt: Runtime, count: int, start: int = 0) -> list[int]:
    """``count`` tickets, each moved to a notifying stage; returns the ticket numbers."""
    numbers = []
    for i in range(start, start + count):
        number = open_email_ticket(rt, email=f"user{i}@customer.example", first_message_id=f"first{i}@x")
        move(rt, number, "Cita agendada")
        numbers.append(number)
    return numbers


def assert_each_sent_once(rt: Runtime, sink: SmtpSink, count: int) -> None:
    rows = outbox_rows(rt)
    assert len(rows) == count
    for row in rows:
        wait_status(rt, row.id, "sent")
    mail = sink.wait_for_mail(count)
    ids = [m.message["Message-ID"] for m in mail]
    assert len(ids) == count and len(set(ids)) == count
    assert sorted(i.strip("<>") for i in ids) == sorted(r.provider_id for r in outbox_rows(rt))


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert backoff_delay(1, 30, 3600, rng=lambda: 0.0) == 15
    assert backoff_delay(1, 30, 3600, rng=lambda: 1.0) == 30
    assert backoff_delay(3, 30, 3600, rng=lambda: 1.0) == 120
    assert backoff_delay(20, 30, 3600, rng=lambda: 1.0) == 3600
    assert 1800 <= backoff_delay(20, 30, 3600) <= 3600


def test_a_broker_outage_during_a_burst_delays_but_never_loses_a_notification(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str
) -> None:
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url)
    dead = redis_broker(f"redis://127.0.0.1:{free_port()}/0", redis_namespace)
    try:
        with running(rt, redis_namespace, sweep_grace=0.2) as service:
            service.relay.retarget(declare(dead, service.deliverer).send)
            burst(rt, 20)  # every commit succeeds although nothing can be published
            assert {row.status for row in outbox_rows(rt)} == {"pending"}
            assert smtp_sink.messages == []
            service.relay.retarget(service.actor.send)  # Redis is back
            assert_each_sent_once(rt, smtp_sink, 20)
        assert len(smtp_sink.messages) == 20
    finally:
        close_broker(dead)
        rt.close()


def test_losing_the_queue_mid_burst_still_sends_every_notification_once(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str, redis_url: str
) -> None:
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url)
    client = redis.Redis.from_url(redis_url)
    try:
        producer = OutboundService.redis(rt, namespace=redis_namespace, consume=False, sweep=False).start()
        burst(rt, 10)
        keys = list(client.scan_iter(match=f"{redis_namespace}*"))
        assert keys, "the first half of the burst should be queued in Redis"
        client.delete(*keys)  # what a restart of a Redis that keeps nothing on disk does
        burst(rt, 10, start=10)
        producer.stop()
        with running(rt, redis_namespace, sweep_grace=0.2):
            assert_each_sent_once(rt, smtp_sink, 20)
        assert len(smtp_sink.messages) == 20
    finally:
        client.close()
        rt.close()


def test_a_worker_killed_mid_send_has_its_claim_expire_and_the_row_sent_again(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str
) -> None:
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url, send_claim_seconds=2)
    try:
        open_email_ticket(rt, email="a@customer.example", first_message_id="a@x", acknowledge=True)
        open_email_ticket(rt, email="b@customer.example", first_message_id="b@x", acknowledge=True)
        abandoned, busy = (row.id for row in outbox_rows(rt, "ack"))
        now = utcnow()
        with rt.transaction() as session:  # two workers claimed a row each; the first one died
            session.execute(update(Outbox).where(Outbox.id == abandoned).values(
                status="sending", claim_token="dead-worker", claimed_at=now - timedelta(seconds=3), attempts=1))
            session.execute(update(Outbox).where(Outbox.id == busy).values(
                status="sending", claim_token="live-worker", claimed_at=now + timedelta(seconds=60), attempts=1))
        with running(rt, redis_namespace, sweep_grace=0.2):
            sent = wait_status(rt, abandoned, "sent")
            [mail] = smtp_sink.wait_for_mail(1)
        assert sent.attempts == 2 and mail.rcpt_tos == ("a@customer.example",)
        [_, still] = outbox_rows(rt, "ack")
        assert (still.status, still.claim_token) == ("sending", "live-worker")
    finally:
        rt.close()


def test_a_relay_that_keeps_deferring_fails_the_row_after_the_last_attempt(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url, max_send_attempts=3) as (rt, deliverer):
        open_email_ticket(rt, acknowledge=True)
        [row] = outbox_rows(rt, "ack")
        smtp_sink.reject_all(451, "4.3.0 busy")
        outcomes = [deliverer.deliver(row.id)]
        while outcomes[-1] in (Outcome.RETRY, Outcome.SKIPPED):
            outcomes.append(wait_until(lambda: (o := deliverer.deliver(row.id)) != Outcome.SKIPPED and o))
        assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.FAILED]
        [row] = outbox_rows(rt, "ack")
        assert row.status == "failed" and row.attempts == 3 and "gave up after 3 attempts" in row.last_error


@pytest.mark.parametrize("processes", [1, 2])
def test_helpdesk_worker_sends_what_the_cli_queued_and_stops_on_sigterm(
    processes: int, cli_env: dict[str, str], smtp_sink: SmtpSink, redis_namespace: str, redis_url: str
) -> None:
    env = dict(
        cli_env, HELPDESK_REDIS_URL=redis_url, HELPDESK_REDIS_NAMESPACE=redis_namespace,
        HELPDESK_OUTBOUND_SMTP_URL=smtp_sink.url, HELPDESK_SWEEP_INTERVAL_SECONDS="0.2",
    )
    worker = subprocess.Popen([HELPDESK, "worker", "--processes", str(processes), "--threads", "2"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        opened = helpdesk(env, "open", "--pipeline", "mantenimiento", "--subject", "Llanta ponchada",
                          "--text", "Se ponchó la llanta", "--email", "carlos@customer.example", "--ack",
                          "--json")
        number = json.loads(opened.stdout)["number"]
        [ack] = smtp_sink.wait_for_mail(1, timeout=30)
        assert f"[JHL#{number}]" in ack.message["Subject"]
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert "stopped" in err
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()

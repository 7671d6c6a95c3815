"""Several notifications in one job: the relay groups the ids committed close together,
the send step claims a job's rows together (one statement on PostgreSQL) and still sends
and records each row once, under its claim.

Every database test runs on SQLite and PostgreSQL; the relay is ``SmtpSink`` on a free
port, the broker the developer's Redis under the test's namespace.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage

import pytest

from config.settings import Settings
from models.base import utcnow
from models.outbox import Outbox
from outbound.deliver import Deliverer, Outcome
from outbound.email import SmtpRelay
from outbound.snapshot import CLAIM
from tests.outbound_helpers import (
    build_runtime,
    delivering,
    move,
    open_email_ticket,
    outbox_rows,
    wait_status,
)
from tests.support import fixtures
from tests.support.smtp_sink import SmtpSink
from worker.relay import OutboundService, Relay, Sweeper
from worker.runtime import Runtime

smtp_sink = fixtures.smtp_sink

pytestmark = pytest.mark.timeout(60)


def stage_changes(rt: Runtime, count: int) -> list[int]:
    """``count`` tickets moved to "Cita agendada"; returns their stage rows' ids."""
    for i in range(count):
        number = open_email_ticket(rt, email=f"user{i}@customer.example", first_message_id=f"first{i}@x")
        move(rt, number, "Cita agendada")
    return [row.id for row in outbox_rows(rt, "stage")]


def message_ids(sink: SmtpSink) -> list[str]:
    return [m.message["Message-ID"].strip("<>") for m in sink.messages]


# -- the send step ------------------------------------------------------------------------


def test_a_job_with_several_ids_sends_and_records_each_once(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url) as (rt, deliverer):
        ids = stage_changes(rt, 3)
        assert deliverer.deliver_many(ids) == dict.fromkeys(ids, Outcome.SENT)
        smtp_sink.wait_for_mail(3)
        rows = outbox_rows(rt, "stage")
        assert {row.status for row in rows} == {"sent"}
        assert [row.attempts for row in rows] == [1, 1, 1]
        assert all(row.claim_token is None for row in rows)
        assert sorted(message_ids(smtp_sink)) == sorted(row.provider_id for row in rows)


def test_the_same_job_delivered_a_second_time_sends_nothing(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url) as (rt, deliverer):
        ids = stage_changes(rt, 3)
        deliverer.deliver_many(ids)
        assert deliverer.deliver_many(ids) == dict.fromkeys(ids, Outcome.SKIPPED)
        assert len(smtp_sink.wait_for_mail(3)) == 3
        assert len(smtp_sink.messages) == 3


def test_a_row_claimed_by_one_job_is_skipped_by_another(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url) as (rt, deliverer):
        first, held, last = stage_changes(rt, 3)
        now = utcnow()
        with rt.engine.begin() as conn:  # another worker's claim, in flight
            assert conn.execute(CLAIM, {"oid": held, "now": now, "stale": now - timedelta(minutes=5),
                                        "token": "other"}).first() is not None
        outcomes = deliverer.deliver_many([first, held, last])
        assert outcomes == {first: Outcome.SENT, held: Outcome.SKIPPED, last: Outcome.SENT}
        with rt.sessions() as session:
            row = session.get(Outbox, held)
            assert row is not None and (row.status, row.claim_token, row.attempts) == ("sending", "other", 1)
        assert len(smtp_sink.wait_for_mail(2)) == 2


class _FailsOnSecondMail:
    """The sink's relay, with a bug that strikes at the second mail (not a send error)."""

    def __init__(self, url: str) -> None:
        self.relay = SmtpRelay(url)
        self.calls = 0

    def send(self, message: EmailMessage, *, sender: str, recipients: list[str]) -> None:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("a bug in the sender")
        self.relay.send(message, sender=sender, recipients=recipients)

    def close(self) -> None:
        self.relay.close()


def test_an_unexpected_error_mid_job_leaves_the_rows_after_it_due_and_unattempted(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    """The row that hit the error keeps its claim (it expires, like a worker that died);
    the rows after it were not tried: they are handed back (PostgreSQL, where the job
    claimed them) or were never claimed (SQLite), and the sweeper finds them due."""
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url)
    deliverer = Deliverer(rt.sessions, rt.settings, rt.catalog, email=_FailsOnSecondMail(smtp_sink.url))
    try:
        first, broken, rest = stage_changes(rt, 3)
        with pytest.raises(RuntimeError):
            deliverer.deliver_many([first, broken, rest])
        rows = {row.id: row for row in outbox_rows(rt, "stage")}
        assert rows[first].status == "sent"
        assert (rows[broken].status, rows[broken].attempts) == ("sending", 1)
        assert (rows[rest].status, rows[rest].attempts, rows[rest].claim_token) == ("pending", 0, None)
        sweeper = Sweeper(rt.sessions, rt.settings, lambda job: True, grace=0)
        assert sweeper.due_ids() == [rest]
    finally:
        deliverer.close()
        rt.close()


def test_rows_a_job_cannot_send_before_half_their_claim_has_passed_are_handed_back(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    """With a claim that expires at once, a job's later rows could be taken over by another
    worker while it sends the first: they are handed back instead of sent twice. On
    SQLite a job's rows are claimed one at a time, right before each send."""
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url, send_claim_seconds=0) as (rt, deliverer):
        ids = stage_changes(rt, 3)
        outcomes = deliverer.deliver_many(ids)
        rows = outbox_rows(rt, "stage")
        if rt.engine.dialect.name == "postgresql":
            assert outcomes == dict.fromkeys(ids, Outcome.SKIPPED)
            assert [(row.status, row.attempts, row.claim_token) for row in rows] == [("pending", 0, None)] * 3
            assert smtp_sink.messages == []
        else:
            assert outcomes == dict.fromkeys(ids, Outcome.SENT)
            assert {row.status for row in rows} == {"sent"}


# -- the actor ----------------------------------------------------------------------------


def test_a_job_of_several_ids_and_an_old_single_id_job_are_both_sent(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str
) -> None:
    """Jobs queued by the version before carry one bare id; they are still accepted."""
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url)
    try:
        old, *new = stage_changes(rt, 3)
        service = OutboundService.redis(rt, namespace=redis_namespace, threads=2, worker_timeout_ms=50,
                                        sweep=False, publish=False)
        service.actor.send(old)
        service.actor.send(new)
        with service:
            for outbox_id in (old, *new):
                wait_status(rt, outbox_id, "sent")
            service.broker.join("outbox", timeout=10_000)
        assert sorted(message_ids(smtp_sink)) == sorted(row.provider_id for row in outbox_rows(rt, "stage"))
    finally:
        rt.close()


# -- the relay and the sweeper ------------------------------------------------------------


def test_ids_published_while_the_relay_waits_share_a_job_and_close_sends_them() -> None:
    jobs: list[list[int]] = []
    relay = Relay(jobs.append, interval=30.0)
    relay.publish([1])
    relay.publish([2])
    relay.publish([3])
    relay.close()  # cuts the 30 s wait short, sends what waits
    # The first job leaves as soon as the relay's thread wakes, with whatever has come by
    # then (1, or 1 and 2); everything after it waits and shares the second job.
    assert sum(jobs, []) == [1, 2, 3] and len(jobs) <= 2, jobs


def test_a_big_burst_is_cut_into_jobs_of_at_most_job_size_ids() -> None:
    jobs: list[list[int]] = []
    relay = Relay(jobs.append, interval=30.0, job_size=16)
    relay.publish(range(1, 41))
    relay.close()
    assert jobs == [list(range(1, 17)), list(range(17, 33)), list(range(33, 41))]


def test_the_sweeper_enqueues_due_rows_in_jobs_of_at_most_job_size_ids(
    make_settings: Callable[..., Settings],
) -> None:
    rt = build_runtime(make_settings)
    try:
        due = stage_changes(rt, 4)  # no publisher installed: only the sweeper knows them
        jobs: list[list[int]] = []
        sweeper = Sweeper(rt.sessions, rt.settings, lambda job: jobs.append(job) or True, grace=0, job_size=3)
        assert sweeper.sweep() == 4
        assert [len(job) for job in jobs] == [3, 1] and sorted(sum(jobs, [])) == due
    finally:
        rt.close()

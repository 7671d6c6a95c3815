"""The relay from the outbox to the broker: publish after commit, sweep what was missed.

* ``Relay.publish`` is installed with ``models.notify.install_publisher``: right after a
  transaction that planned notifications commits, their ids go to the broker, from the
  relay's own thread, several to a job when commits come close together (one claim
  statement and one Dramatiq message for up to ``JOB_SIZE`` notifications). It never
  raises into the committing code and never makes it wait for Redis: with Redis down it
  logs, stops trying for a few seconds (so a burst of commits does not pay a failed
  connection each), and leaves the rows to the sweeper.
* ``Sweeper`` is a thread of ``helpdesk worker`` (and ``helpdesk run``) that every
  ``SWEEP_INTERVAL_SECONDS`` asks the database, not Redis, what should be on the queue:
  rows ``pending`` and due (this is also what fires a delayed survey and a retry after
  backoff), and rows ``sending`` whose claim expired (a worker died mid-send). Rows
  become eligible a grace period after they are due, so that what was just published is
  not queued twice; a duplicate is harmless anyway (the send step claims the row).
* ``OutboundService`` starts and stops the whole chain in one process: broker, the
  ``send_notification`` actor, Dramatiq's ``Worker`` threads, publisher and sweeper.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq import Broker
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from models.base import utcnow
from models.notify import install_publisher
from models.outbox import Outbox
from outbound.deliver import Deliverer
from worker.actors import declare
from worker.broker import close_broker, make_broker

log = logging.getLogger(__name__)

Enqueue = Callable[[list[int]], Any]
#: Most outbox ids in one job: a job's rows are claimed together and sent one after the
#: other by one worker thread, so a big job would leave the other threads idle.
JOB_SIZE = 16
#: Least seconds between two jobs of the relay's thread (see ``Relay``): it bounds the
#: delay a burst adds; a commit after a quiet spell goes out at once. Measured at ~200
#: commits/s: 10 ms gives ~2.4 ids a job, 20 ms ~4.7 but adds ~15 ms to the median
#: commit-to-mail latency, 50 ms ~12. Each job costs the worker Dramatiq's fetch, decode
#: and ack and a claim of its own: in drains alternating 10 and 30 ms (four pairs), the
#: worker's CPU per notification was a fifth lower at 30 ms and its rate 18 % higher,
#: each rate scaled by the sink's CPU per message, which follows the machine's speed of
#: the moment (50 ms: 4 % more again). The price, in a burst only: bench/notify.py's
#: live commit-to-receipt p50 went from about 30 to 61 ms, unnoticeable for a mail.
JOB_INTERVAL_SECONDS = 0.03


class Relay:
    """Sends outbox ids to the broker, several to a job; see the module docstring.

    ``publish`` only queues the ids in memory and wakes the relay's thread, which puts
    whatever is waiting on the broker, up to ``job_size`` ids to a job. After a job it
    waits until ``interval`` has passed since the previous one before it takes more: a
    commit after a quiet spell goes out at once, while in a burst the ids of a few commits
    share a job, so the worker claims them with one statement and Dramatiq's work is paid
    once for several notifications. ``close`` publishes what is still waiting.

    Parameters:
        send: puts one job, a list of ids, on the queue (``actor.send``); may raise.
        pause_seconds: after a failure, how long ``publish`` leaves the work to the sweeper.
        job_size: most ids in one job.
        interval: least seconds between two jobs of this relay's thread (see above).
    """

    def __init__(self, send: Enqueue, *, pause_seconds: float = 5.0, job_size: int = JOB_SIZE,
                 interval: float = JOB_INTERVAL_SECONDS) -> None:
        self._send = send
        self.pause_seconds = pause_seconds
        self.job_size = job_size
        self.interval = interval
        self._paused_until = 0.0
        self.closed = False
        self._waiting: deque[int] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def install(self, sessions: sessionmaker[Session]) -> None:
        """Publish the new outbox ids of every commit of ``sessions``."""
        install_publisher(sessions, self.publish)

    def retarget(self, send: Enqueue) -> None:
        """Send to another queue from now on (and try it at once)."""
        self._send = send
        self._paused_until = 0.0

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is waiting and stop (the session listeners cannot be removed;
        they become no-ops)."""
        with self._wake:
            self.closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def publish(self, ids: Iterable[int]) -> None:
        """Queue ``ids`` for the relay's thread; never raises (see the module docstring)."""
        if time.monotonic() < self._paused_until:
            return
        with self._wake:
            if self.closed:
                return
            self._waiting.extend(ids)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
                self._thread.start()
            self._wake.notify()

    def enqueue(self, job: list[int]) -> bool:
        """Put one job of ids on the queue now, in the calling thread; False (logged) when
        the broker is unreachable."""
        try:
            self._send(job)
        except Exception as exc:  # any broker failure: the sweeper will catch up
            log.warning("cannot enqueue notifications %s (%s: %s); the sweeper will retry",
                        job, type(exc).__name__, exc)
            return False
        return True

    def _take(self, not_before: float) -> list[int] | None:
        """The next job: the ids waiting, at most ``job_size``, once there are any and
        ``not_before`` (monotonic) has passed or a full job is waiting; None once closed
        with nothing left. Closing cuts the wait short."""
        with self._wake:
            while not self._waiting:
                if self.closed:
                    return None
                self._wake.wait()
            while not self.closed and len(self._waiting) < self.job_size:
                rest = not_before - time.monotonic()
                if rest <= 0:
                    break
                self._wake.wait(rest)  # let a burst's next ids join this job
            count = min(self.job_size, len(self._waiting))
            return [self._waiting.popleft() for _ in range(count)]

    def _run(self) -> None:
        last = float("-inf")
        while (job := self._take(last + self.interval)) is not None:
            last = time.monotonic()
            if last < self._paused_until:
                continue  # the broker failed a moment ago: the sweeper has these
            if not self.enqueue(job):
                self._paused_until = time.monotonic() + self.pause_seconds


class Sweeper:
    """Re-enqueues due and abandoned rows from the database; see the module docstring.

    Parameters:
        sessions, settings: the runtime's.
        enqueue: puts one job (a list of ids) on the queue; returns False when the broker
            is down (the sweep then stops early).
        interval: seconds between sweeps; default ``SWEEP_INTERVAL_SECONDS``.
        grace: seconds a due row waits for its publication before the sweeper takes it;
            default: one interval.
        batch: most ids per sweep.
        job_size: most ids per job.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        enqueue: Callable[[list[int]], bool],
        *,
        interval: float | None = None,
        grace: float | None = None,
        batch: int = 1000,
        job_size: int = JOB_SIZE,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.enqueue = enqueue
        self.interval = settings.sweep_interval_seconds if interval is None else interval
        self.grace = self.interval if grace is None else grace
        self.batch = batch
        self.job_size = job_size
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due_ids(self) -> list[int]:
        """Ids that should be on the queue now, oldest due first."""
        now = utcnow()
        due = now - timedelta(seconds=self.grace)
        stale = now - timedelta(seconds=self.settings.send_claim_seconds)
        query = (
            select(Outbox.id)
            .where(
                or_(
                    and_(Outbox.status == "pending", Outbox.next_attempt_at <= due),
                    and_(Outbox.status == "sending", Outbox.claimed_at < stale),
                )
            )
            .order_by(Outbox.next_attempt_at, Outbox.id)
            .limit(self.batch)
        )
        with self.sessions() as session:
            return list(session.scalars(query))

    def sweep(self) -> int:
        """One pass, ``job_size`` ids to a job; returns how many ids were enqueued."""
        count = 0
        ids = self.due_ids()
        for start in range(0, len(ids), self.job_size):
            job = ids[start:start + self.job_size]
            if not self.enqueue(job):
                break
            count += len(job)
        if count:
            log.info("sweeper re-enqueued %d notification(s)", count)
        return count

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="outbox-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # the database is down: try again next time
                log.exception("outbox sweep failed")


def _worker(broker: Broker, threads: int, timeout_ms: int, prefetch: int) -> dramatiq.Worker:
    """A Dramatiq worker with our prefetch (Dramatiq reads it from the environment only)."""
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=timeout_ms)
    worker.queue_prefetch = max(prefetch, threads)
    return worker


class OutboundService:
    """Broker, actor, worker threads, publisher and sweeper of one process.

    Parameters:
        runtime: a ``worker.runtime.Runtime``.
        broker: from ``worker.broker``.
        threads: Dramatiq worker threads (each with its own SMTP connection).
        consume: run worker threads (False: only publish and sweep, e.g. the parent of
            ``helpdesk worker --processes N``).
        sweep: run the sweeper (only one process of a deployment needs it).
        publish: install the after-commit publisher on ``runtime.sessions``.
        worker_timeout_ms: the longest an idle consumer waits between polls of the queue
            (Dramatiq backs off up to it: it bounds the pickup delay of a new job).
        prefetch: jobs a process takes from Redis ahead (Dramatiq's default, 2 per
            thread, starves the threads when jobs are short).
        deliverer: default: one built from the runtime's settings.
        sweep_interval, sweep_grace: see ``Sweeper``.
    """

    def __init__(
        self,
        runtime: Any,
        broker: Broker,
        *,
        threads: int = 8,
        consume: bool = True,
        sweep: bool = True,
        publish: bool = True,
        worker_timeout_ms: int = 100,
        prefetch: int = 64,
        deliverer: Deliverer | None = None,
        sweep_interval: float | None = None,
        sweep_grace: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.broker = broker
        self.deliverer = deliverer or Deliverer(runtime.sessions, runtime.settings, runtime.catalog)
        self.actor = declare(broker, self.deliverer)
        self.relay = Relay(self.actor.send)
        self.publish = publish
        self.sweeper = (
            Sweeper(runtime.sessions, runtime.settings, self.relay.enqueue, interval=sweep_interval,
                    grace=sweep_grace)
            if sweep else None
        )
        self.worker = (
            _worker(broker, threads, worker_timeout_ms, prefetch) if consume else None
        )
        self._started = False

    @classmethod
    def redis(cls, runtime: Any, *, namespace: str | None = None, **kwargs: Any) -> OutboundService:
        """On the Redis broker of the settings (``helpdesk worker``)."""
        return cls(runtime, make_broker(runtime.settings, namespace=namespace), **kwargs)

    @classmethod
    def embedded(cls, runtime: Any, **kwargs: Any) -> OutboundService:
        """On an in-process broker (``helpdesk run``: nothing to install)."""
        return cls(runtime, make_broker(runtime.settings, embedded=True), **kwargs)

    def start(self) -> OutboundService:
        if self.publish:
            self.relay.install(self.runtime.sessions)
        if self.worker is not None:
            self.worker.start()
        if self.sweeper is not None:
            self.sweeper.start()
        self._started = True
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop publishing, sweeping and consuming; let sends in progress finish."""
        self.relay.close(timeout)
        if self.sweeper is not None:
            self.sweeper.stop(timeout)
        if self.worker is not None and self._started:
            self.worker.stop(timeout=int(timeout * 1000))
        self._started = False
        self.deliverer.close()
        close_broker(self.broker)

    def __enter__(self) -> OutboundService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

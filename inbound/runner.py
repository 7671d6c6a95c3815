"""Processing committed raw messages in the background of a door's process.

The door hands each committed id to ``submit`` and answers at once; one thread processes
the ids in arrival order (a WhatsApp survey score, then its comment, stay in order), a
burst in one transaction. Every few seconds (and at start) it also sweeps for rows still
pending, so what was accepted just before a crash, or by another process that died, is
threaded once. ``after_work`` runs after each batch and sweep (the web process fetches
WhatsApp media there, outside any request).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial

from inbound.process import BATCH, Processor

log = logging.getLogger("helpdesk.inbound.runner")

#: After a batch that did not fill up, how long a door's child waits before it looks again.
#: While the door is taking mail, a child that looked again at once threaded the few
#: messages committed meanwhile, batch after tiny batch, and every batch pays the same
#: lookups, locks and commit: at ~1,000 mails/s that was 0.55-0.7 ms of CPU per mail,
#: taken from the door on a two-core machine (its p99 was 7 ms with the child paused,
#: 8-13 ms with it running). Waiting 50 ms lets about 50 mails gather: 0.4 ms of CPU per
#: mail, and a threading delay no one sees.
#: A full batch means a backlog: the next one is taken at once.
GATHER_SECONDS = 0.05


class BackgroundProcessor:
    """A daemon thread running ``Processor`` over submitted ids and a periodic sweep.

    Parameters:
        processor: does the work, one transaction per batch.
        sweep_seconds: how often pending rows are looked for without a submit.
        sources: the sweep takes only rows of these sources (None: all); a door's
            process sweeps its own, so two processes do not fight over the same rows.
        after_work: called (guarded) after every batch and sweep.
    """

    def __init__(
        self,
        processor: Processor,
        sweep_seconds: float = 5.0,
        *,
        sources: Iterable[str] | None = None,
        after_work: Callable[[], object] | None = None,
    ) -> None:
        self.processor = processor
        self.sweep_seconds = sweep_seconds
        self.sources = tuple(sources) if sources is not None else None
        self.after_work = after_work
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> BackgroundProcessor:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inbound-processor", daemon=True)
            self._thread.start()
        return self

    def submit(self, raw_id: int) -> None:
        """Process ``raw_id`` soon (it is committed: a crash before then loses nothing)."""
        self._queue.put(raw_id)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, then stop; what is still queued waits for a sweep
        (it is committed: the next process to start threads it)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(None)  # wakes the thread if it is waiting
        self._thread.join(timeout)
        self._thread = None

    def idle(self) -> bool:
        """True when nothing submitted is waiting (for tests and benchmarks)."""
        return self._queue.unfinished_tasks == 0

    def sweep(self) -> int:
        """Process the pending rows of our sources now (until asked to stop); returns how
        many were handled."""
        handled = self.processor.process_pending(sources=self.sources, stop=self._stopping)
        self._after_work()
        return handled

    def _run(self) -> None:
        self._guarded(self.sweep)
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=self.sweep_seconds)
            except queue.Empty:
                self._guarded(self.sweep)
                continue
            batch, stopping = self._drain(first)
            if batch:
                self._guarded(partial(self.processor.process_batch, batch))
                self._after_work()
            for _ in range(len(batch) + (1 if stopping else 0)):
                self._queue.task_done()
            if stopping:
                return

    def _drain(self, first: int | None) -> tuple[list[int], bool]:
        """``first`` and whatever else is queued (up to a batch): one commit for a burst."""
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _after_work(self) -> None:
        if self.after_work is not None:
            self._guarded(self.after_work)

    @staticmethod
    def _guarded(work: Callable[[], object]) -> None:
        """Run ``work``; a failure (the database away...) is logged and retried by a sweep."""
        try:
            work()
        except Exception as exc:
            log.warning("inbound processing deferred to the next sweep: %s: %s", type(exc).__name__, exc)


def poll_until_stopped(
    processor: Processor,
    stop: threading.Event,
    *,
    parent_pid: int,
    sources: tuple[str, ...] | None,
    idle_poll: float = 0.2,
    after_work: Callable[[], object] | None = None,
    after_work_seconds: float | None = None,
    gather: float = GATHER_SECONDS,
) -> None:
    """The loop of a door's threading child (``helpdesk process``, ``helpdesk web-pump``).

    Polls for pending rows of ``sources``: at once again after a full batch, ``gather``
    seconds after a smaller one (see ``GATHER_SECONDS``), backing off to ``idle_poll``
    when idle (the door does not signal its children; a poll is one indexed query).
    ``stop`` is looked at between batches, so SIGTERM waits for one batch at most; what
    is left stays pending for the next start. The loop also ends when
    ``parent_pid`` is no longer our parent: a door killed even by SIGKILL leaves no child
    publishing behind it. ``after_work`` runs after work and, without work, every
    ``after_work_seconds``.
    """
    next_after = 0.0
    pause = 0.01
    while not stop.is_set() and os.getppid() == parent_pid:
        handled = 0
        try:
            handled = processor.process_pending(sources=sources, stop=stop)
        except Exception as exc:  # the database away: kept rows wait, we look again
            log.warning("inbound processing deferred: %s: %s", type(exc).__name__, exc)
            pause = idle_poll
        if after_work is not None and (
            handled or (after_work_seconds is not None and time.monotonic() >= next_after)
        ):
            try:
                after_work()
            except Exception as exc:
                log.warning("after-work deferred: %s: %s", type(exc).__name__, exc)
            next_after = time.monotonic() + (after_work_seconds or 0.0)
        if handled >= BATCH:
            pause = 0.0
        elif handled:
            pause = gather
        else:
            pause = min(max(pause * 2, 0.01), idle_poll)
        if pause:
            stop.wait(pause)

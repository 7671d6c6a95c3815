"""The web process's background thread: process kept WhatsApp messages, fetch their media.

Why one thread and a queue rather than a task per request: messages of one conversation
must be threaded in the order they arrived (a survey score, then its comment), and one
serial consumer gives that for free; the webhook only commits and answers, so Twilio's
timeout never depends on threading or on a slow media download.

The thread also sweeps: at start (crash recovery: rows kept but never processed because
the process died after answering) and every ``sweep_seconds``, it processes WhatsApp raw
rows still pending and retries media downloads that are due. Other sources' rows are left
to their own processes.
"""

from __future__ import annotations

import logging
import queue
import threading

from sqlalchemy import select

from inbound.media import RetryPolicy, fetch_pending_media
from inbound.process import BATCH, Processor
from models.message import RawMessage
from worker.runtime import Runtime

log = logging.getLogger("helpdesk.web")

SOURCE = "whatsapp"


class InboundPump:
    """Processes raw ids handed over by the webhook, in order, after the answer.

    Parameters:
        runtime: the process's runtime (sessions, settings, catalog).
        sweep_seconds: how often pending rows and due media are looked for.
        media_policy: when failed media downloads are retried.
    """

    def __init__(self, runtime: Runtime, *, sweep_seconds: float = 30.0,
                 media_policy: RetryPolicy | None = None) -> None:
        self.runtime = runtime
        self.sweep_seconds = sweep_seconds
        self.media_policy = media_policy or RetryPolicy()
        self.processor = Processor(runtime.sessions, runtime.settings, runtime.catalog)
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="helpdesk-inbound-pump", daemon=True)
        self._thread.start()

    def submit(self, raw_id: int) -> None:
        """Process ``raw_id`` soon (it is committed; a crash before then loses nothing)."""
        self._queue.put(raw_id)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the message in hand, then stop; what is still queued waits for a sweep."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        self._guarded(self.sweep)
        while True:
            try:
                raw_id = self._queue.get(timeout=self.sweep_seconds)
            except queue.Empty:
                self._guarded(self.sweep)
                continue
            if raw_id is None:
                return
            batch, stopping = self._drain(raw_id)
            self._guarded(lambda ids=batch: self.processor.process_batch(ids))
            self._guarded(self.fetch_media)
            if stopping:
                return

    def _drain(self, first: int) -> tuple[list[int], bool]:
        """``first`` and whatever else is queued (up to a batch): one commit for a burst."""
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

    def _guarded(self, work: object) -> None:
        """Run ``work``; a failure (database away...) is logged and retried by a sweep."""
        try:
            work()  # type: ignore[operator]
        except Exception:
            log.exception("inbound pump: work failed; the next sweep retries it")

    def pending_ids(self, limit: int = 5000) -> list[int]:
        with self.runtime.sessions() as session:
            return list(session.scalars(
                select(RawMessage.id)
                .where(RawMessage.source == SOURCE, RawMessage.status == "pending")
                .order_by(RawMessage.id)
                .limit(limit)
            ))

    def sweep(self) -> int:
        """Process pending WhatsApp rows and fetch due media; returns rows handled."""
        ids = self.pending_ids()
        handled = 0
        for i in range(0, len(ids), BATCH):
            handled += len(self.processor.process_batch(ids[i:i + BATCH]))
        self.fetch_media()
        return handled

    def fetch_media(self) -> None:
        report = fetch_pending_media(self.runtime.sessions, self.runtime.settings, policy=self.media_policy)
        if report.stored or report.failed:
            log.info("media: %d stored, %d failed (retried later)", len(report.stored), len(report.failed))


def default_sweep(runtime: Runtime) -> float:
    """The sweep interval: the outbox sweep's, but not busier than every 5 s."""
    return max(float(runtime.settings.sweep_interval_seconds), 5.0)


"""The web process's background work: process kept WhatsApp messages, fetch their media.

The webhook only commits and answers, so Twilio's timeout never depends on threading or
on a slow media download. The work runs in one of two places:

- ``make_pump``: a thread of the web process (``inbound.runner.BackgroundProcessor``),
  handed each kept id at once; what ``helpdesk run`` and the tests use.
- ``run_child``: a child process (``helpdesk web`` starts it, ``--processors``), niced.
  Why: threading a message costs several times the CPU of keeping it, and in the web
  process it takes the GIL from the door; in a lower-priority child, a burst of
  webhooks is answered at the door's pace and threaded right behind it.

Either way messages are threaded in arrival order (a WhatsApp survey score, then its
comment, stay in order), and media downloads run after each batch and periodically.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from inbound.media import RetryPolicy, fetch_pending_media
from inbound.process import BATCH, Processor
from inbound.runner import BackgroundProcessor
from worker.runtime import Runtime

log = logging.getLogger("helpdesk.web")

SOURCES = ("whatsapp",)


def media_fetcher(runtime: Runtime, policy: RetryPolicy | None = None) -> Callable[[], None]:
    """A callable that downloads the due media of WhatsApp messages (never raises for a
    failed download: the row records it and is retried later)."""
    policy = policy or RetryPolicy()

    def fetch_media() -> None:
        report = fetch_pending_media(runtime.sessions, runtime.settings, policy=policy)
        if report.stored or report.failed:
            log.info("media: %d stored, %d failed (retried later)", len(report.stored), len(report.failed))

    return fetch_media


def make_pump(runtime: Runtime, *, sweep_seconds: float, media_policy: RetryPolicy | None = None
              ) -> BackgroundProcessor:
    """The in-process background processor (WhatsApp rows only; media after work)."""
    processor = Processor(runtime.sessions, runtime.settings, runtime.catalog)
    return BackgroundProcessor(processor, sweep_seconds, sources=SOURCES,
                               after_work=media_fetcher(runtime, media_policy))


def default_sweep(runtime: Runtime) -> float:
    """The sweep interval: the outbox sweep's, but not busier than every 5 s."""
    return max(float(runtime.settings.sweep_interval_seconds), 5.0)


def run_child(runtime: Runtime, stop: threading.Event, *, parent_pid: int, idle_poll: float = 0.2,
              media_seconds: float | None = None, media_policy: RetryPolicy | None = None) -> None:
    """Thread kept WhatsApp messages and fetch media until ``stop`` is set or the parent
    (the web process) is gone.

    Polls for pending rows: at once again while there is work, backing off to
    ``idle_poll`` when idle (the web process does not signal us; a poll is one indexed
    query). ``stop`` is looked at between batches, so SIGTERM waits for one batch at most;
    what is left stays pending for the next start.

    Parameters:
        parent_pid: exit when this process is no longer our parent (even after SIGKILL).
        idle_poll: longest pause between looks when idle.
        media_seconds: how often due media downloads are tried when no message came.
    """
    processor = Processor(runtime.sessions, runtime.settings, runtime.catalog)
    fetch_media = media_fetcher(runtime, media_policy)
    media_every = media_seconds if media_seconds is not None else default_sweep(runtime)
    next_media = 0.0
    pause = 0.01
    while not stop.is_set() and os.getppid() == parent_pid:
        handled = 0
        try:
            ids = processor.pending_ids(sources=SOURCES)
            for i in range(0, len(ids), BATCH):
                if stop.is_set():
                    break
                handled += len(processor.process_batch(ids[i:i + BATCH]))
        except Exception as exc:  # the database away: kept rows wait, we look again
            log.warning("whatsapp processing deferred: %s: %s", type(exc).__name__, exc)
            pause = idle_poll
        if handled or time.monotonic() >= next_media:
            try:
                fetch_media()
            except Exception as exc:
                log.warning("media fetch deferred: %s: %s", type(exc).__name__, exc)
            next_media = time.monotonic() + media_every
        pause = 0.0 if handled else min(max(pause * 2, 0.01), idle_poll)
        if pause:
            stop.wait(pause)

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
import threading
from collections.abc import Callable

from inbound.media import RetryPolicy, fetch_pending_media
from inbound.process import Processor
from inbound.runner import BackgroundProcessor, poll_until_stopped
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
    (the web process) is gone (``inbound.runner.poll_until_stopped``); due media
    downloads are tried after work and, when no message came, every ``media_seconds``."""
    poll_until_stopped(
        Processor(runtime.sessions, runtime.settings, runtime.catalog), stop, parent_pid=parent_pid,
        sources=SOURCES, idle_poll=idle_poll, after_work=media_fetcher(runtime, media_policy),
        after_work_seconds=media_seconds if media_seconds is not None else default_sweep(runtime),
    )

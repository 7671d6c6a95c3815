"""The web process's background work: process kept WhatsApp messages, fetch their media.

The webhook only commits and answers, so Twilio's timeout never depends on threading or
on a slow media download; ``inbound.runner.BackgroundProcessor`` threads the kept
messages in arrival order, sweeps what a crash left pending, and after each batch
retries the media downloads that are due.
"""

from __future__ import annotations

import logging

from inbound.media import RetryPolicy, fetch_pending_media
from inbound.process import Processor
from inbound.runner import BackgroundProcessor
from worker.runtime import Runtime

log = logging.getLogger("helpdesk.web")

SOURCES = ("whatsapp",)


def make_pump(runtime: Runtime, *, sweep_seconds: float, media_policy: RetryPolicy | None = None
              ) -> BackgroundProcessor:
    """The background processor of ``helpdesk web`` (WhatsApp rows only; media after work)."""
    policy = media_policy or RetryPolicy()

    def fetch_media() -> None:
        report = fetch_pending_media(runtime.sessions, runtime.settings, policy=policy)
        if report.stored or report.failed:
            log.info("media: %d stored, %d failed (retried later)", len(report.stored), len(report.failed))

    processor = Processor(runtime.sessions, runtime.settings, runtime.catalog)
    return BackgroundProcessor(processor, sweep_seconds, sources=SOURCES, after_work=fetch_media)


def default_sweep(runtime: Runtime) -> float:
    """The sweep interval: the outbox sweep's, but not busier than every 5 s."""
    return max(float(runtime.settings.sweep_interval_seconds), 5.0)

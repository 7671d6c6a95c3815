"""A door's threading child (``inbound.runner.poll_until_stopped``) that keeps up with the
door must not thread mail one tiny batch after another: every batch pays the same
lookups, locks and commit, and on two cores that CPU is taken from the door. After a
batch that did not fill up it waits a moment (``GATHER_SECONDS``) for more. Runs on SQLite and
PostgreSQL, with the real ``Processor``; only its batches are counted.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from sqlalchemy import func, select

from inbound.keep import keep_raw
from inbound.process import Processor
from inbound.runner import poll_until_stopped
from models.message import RawMessage
from tests.mailbuilder import mail
from worker.runtime import Runtime

pytestmark = pytest.mark.timeout(90)


class CountingProcessor(Processor):
    """The real processor, noting the size of each batch it is given."""

    batches: list[int]

    def process_batch(self, raw_ids: list[int]) -> dict[int, str]:
        self.batches.append(len(raw_ids))
        return super().process_batch(raw_ids)


def pending(rt: Runtime) -> int:
    with rt.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(RawMessage)
                                  .where(RawMessage.status == "pending")) or 0)


def test_mail_kept_while_the_child_keeps_up_is_threaded_in_a_few_gathered_batches(rt: Runtime) -> None:
    gather = 0.2  # longer than production's, to tell gathered batches from a child looking at once
    processor = CountingProcessor(rt.sessions, rt.settings, rt.catalog)
    processor.batches = []
    stop = threading.Event()
    child = threading.Thread(target=poll_until_stopped, args=(processor, stop),
                             kwargs={"parent_pid": os.getppid(), "sources": ("smtp",), "gather": gather})
    child.start()
    count = 60
    started = time.monotonic()
    try:
        for i in range(count):  # a steady trickle over a few tenths of a second
            keep_raw(rt.sessions, source="smtp", data=mail(sender=f"Cliente {i} <c{i}@cliente.mx>",
                                                            message_id=f"gather{i}@cliente.mx"))
            time.sleep(0.004)
        span = time.monotonic() - started
        deadline = time.monotonic() + 60
        while pending(rt) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        child.join(30)
    assert pending(rt) == 0 and sum(processor.batches) == count
    # About one batch per gathering while mail came in, however fast it came. Looking
    # again at once instead, the child took batches of one to three mails (22-44 here,
    # against at most 7-8).
    assert len(processor.batches) <= span / gather + 3, (span, processor.batches)

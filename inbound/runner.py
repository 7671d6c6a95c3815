"""Processing committed raw messages in the background of a door's process.

The door hands each committed id to ``submit`` and answers at once; a thread processes
the ids in order. Every few seconds (and at start) it also sweeps for rows still pending,
so mail accepted just before a crash, or by another process that died, is threaded once.
"""

from __future__ import annotations

import logging
import queue
import threading

from sqlalchemy.exc import OperationalError

from inbound.process import BATCH, Processor

log = logging.getLogger("helpdesk.inbound.runner")


class BackgroundProcessor:
    """A daemon thread running ``Processor`` over submitted ids and a periodic sweep."""

    def __init__(self, processor: Processor, sweep_seconds: float = 5.0) -> None:
        self.processor = processor
        self.sweep_seconds = sweep_seconds
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inbound-processor", daemon=True)

    def start(self) -> BackgroundProcessor:
        self._thread.start()
        return self

    def submit(self, raw_id: int) -> None:
        self._queue.put(raw_id)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def idle(self) -> bool:
        """True when nothing submitted is waiting (for tests and benchmarks)."""
        return self._queue.unfinished_tasks == 0

    def _run(self) -> None:
        self._sweep()
        while not self._stop.is_set():
            try:
                raw_id = self._queue.get(timeout=self.sweep_seconds)
            except queue.Empty:
                self._sweep()
                continue
            batch = [raw_id] if raw_id is not None else []
            while len(batch) < BATCH:  # take what else is waiting: one commit for all
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is not None:
                    batch.append(more)
                else:
                    self._queue.task_done()
            try:
                if batch:
                    self.processor.process_batch(batch)
            except OperationalError as exc:
                log.warning("database unavailable while processing %s: %s", batch[:3], exc.orig)
                self._stop.wait(1.0)  # the sweep picks them up when the database is back
            except Exception:
                log.exception("processing raw %s failed", batch[:3])
            finally:
                for _ in range(len(batch) or 1):
                    self._queue.task_done()

    def _sweep(self) -> None:
        try:
            self.processor.process_pending()
        except OperationalError as exc:
            log.warning("database unavailable for the pending sweep: %s", exc.orig)
        except Exception:
            log.exception("pending sweep failed")

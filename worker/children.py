"""Child processes a long-running command keeps alive (``helpdesk smtp --processors N``).

Why processes: threading mail costs CPU in Python; in the door's own process it would
take the GIL from the SMTP server and slow every 250. A child per core threads what the
door kept, and is restarted if it dies (what it had in hand is still pending, and
PostgreSQL's SKIP LOCKED lets siblings share the rows).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("helpdesk.children")


def helpdesk_command(*args: str) -> list[str]:
    """The argv that runs ``helpdesk ARGS`` with this interpreter."""
    script = Path(sys.executable).parent / "helpdesk"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from worker.cli import main; main()", *args]


class Children:
    """``count`` copies of ``argv``, restarted (with a pause) when one exits."""

    def __init__(self, argv: list[str], count: int, *, restart_pause: float = 1.0) -> None:
        self.argv = argv
        self.count = count
        self.restart_pause = restart_pause
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._run, name="children", daemon=True)

    def start(self) -> Children:
        self._procs = [self._spawn() for _ in range(self.count)]
        self._watch.start()
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv, env=os.environ.copy())

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for i, proc in enumerate(self._procs):
                if proc.poll() is not None and not self._stop.is_set():
                    log.warning("child %s exited with %s; restarting", proc.pid, proc.returncode)
                    time.sleep(self.restart_pause)
                    self._procs[i] = self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._watch.join(5)
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

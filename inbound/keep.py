"""The door's only duty: commit the raw bytes, then let the door answer.

Why a module of its own: SMTP, the MTA pipe, IMAP and the WhatsApp webhook all keep the
same way, and all must turn "cannot commit now" into the same temporary failure (SMTP
451, exit 75, HTTP 503) so that the sender retries instead of the message being lost.

Three keepers, one guarantee (an id is returned only for a committed row):

* ``keep_raw``: one message, one transaction (the MTA pipe, IMAP);
* ``GroupKeeper``: group commit in a thread, for the event-loop doors (SMTP, webhook)
  on SQLite (no async driver);
* ``inbound.loop_keeper.LoopKeeper``: the same group commit on the event loop itself,
  with psycopg's async connection, for those doors on PostgreSQL;
  ``inbound.loop_keeper.door_keeper`` picks between the last two.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.base import utcnow
from models.message import RawMessage

# Built once: the door runs this for every message it accepts; a group of messages is
# one multi-row INSERT whose ids come back in the order of the rows.
_KEEP = insert(RawMessage).returning(RawMessage.id, sort_by_parameter_order=True)


IDLE_RELEASE_SECONDS = 1.0


def _pending_row(source: str, data: bytes, envelope_from: str | None, envelope_to: str | None) -> dict[str, Any]:
    """The raw_messages row a door keeps: pending, not tried yet, received now."""
    return {
        "source": source, "data": data, "envelope_from": envelope_from, "envelope_to": envelope_to,
        "status": "pending", "attempts": 0, "received_at": utcnow(),
    }


class TemporaryFailure(Exception):
    """The message could not be kept now; the sender must retry (451 / 75 / 503)."""

    @classmethod
    def of(cls, exc: BaseException) -> TemporaryFailure:
        """The failure for ``exc``, with the database's first line of reason."""
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = lines[0][:200] if lines else type(exc).__name__  # a timeout has no text
        return cls(f"cannot store the message now: {reason}")


def keep_raw(
    sessions: sessionmaker[Session],
    *,
    source: str,
    data: bytes,
    envelope_from: str | None = None,
    envelope_to: str | None = None,
) -> int:
    """Commit ``data`` as a pending raw message and return its id.

    Raises:
        TemporaryFailure: the database refused or is unreachable; nothing was kept.
    """
    params = _pending_row(source, data, envelope_from, envelope_to)
    engine = sessions.kw["bind"]  # a bare connection: the ORM session costs 3x the CPU here
    try:
        with engine.begin() as conn:
            return int(conn.execute(_KEEP, params).scalar_one())
    except SQLAlchemyError as exc:
        raise TemporaryFailure.of(exc) from exc


class GroupKeeper:
    """Keeps messages from many connections with one commit per group (the SMTP door).

    Why: the commit (a WAL flush) is most of what a keep costs; while one group commits,
    the messages arriving on other connections form the next group, so under load one
    flush answers several senders, and none waits longer than one commit for its 250.
    Every message of a group is committed before any of its senders gets an answer, and
    a failed commit fails them all (451): nothing is acknowledged that was not kept.

    Parameters:
        sessions: the door's sessionmaker (its engine is used directly).
        max_group: most messages per commit.
    """

    def __init__(self, sessions: sessionmaker[Session], max_group: int = 32) -> None:
        self.engine = sessions.kw["bind"]
        self.max_group = max_group
        # The keeper's own connection, held while groups follow each other: a pool
        # checkout pings the server first (pool_pre_ping), a round trip per group that a
        # busy door can do without. After a pause it goes back to the pool, so the next
        # group's checkout pings again (a restarted server costs no 451); a failed group
        # drops it.
        self._conn: Connection | None = None
        self._last_used = 0.0
        self._queue: queue.Queue[tuple[dict[str, Any], Future[int]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="group-keeper", daemon=True)

    def start(self) -> GroupKeeper:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def keep(self, *, source: str, data: bytes, envelope_from: str | None = None,
             envelope_to: str | None = None) -> Future[int]:
        """A future of the raw message's id; it raises TemporaryFailure if not kept."""
        future: Future[int] = Future()
        self._queue.put((_pending_row(source, data, envelope_from, envelope_to), future))
        return future

    @staticmethod
    def _insert(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        return [int(i) for i in conn.execute(_KEEP, rows).scalars()]

    def _release(self, *, broken: bool = False) -> None:
        if self._conn is not None:
            try:
                if broken:
                    self._conn.invalidate()
                self._conn.close()
            except Exception:  # already broken: nothing more to release
                pass
            self._conn = None

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._release()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            stopping = False
            while len(group) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                group.append(more)
            self._commit(group)
            if stopping:
                return

    def _commit(self, group: list[tuple[dict[str, Any], Future[int]]]) -> None:
        # A sender that hung up before its turn (its future cancelled) got no 250 and will
        # send again: its message is not kept, and setting its future would kill this thread.
        group = [(params, future) for params, future in group if future.set_running_or_notify_cancel()]
        if not group:
            return
        now = time.monotonic()
        if self._conn is not None and now - self._last_used > IDLE_RELEASE_SECONDS:
            self._release()
        self._last_used = now
        rows = [params for params, _ in group]
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
                if self.engine.dialect.name == "postgresql":
                    # The group is ONE multi-row INSERT (at most max_group rows, far below
                    # SQLAlchemy's page size), atomic on its own: in autocommit it is one
                    # round trip instead of BEGIN, INSERT and COMMIT. SQLite inserts such
                    # a group row by row, so there it keeps its transaction.
                    self._conn = self._conn.execution_options(isolation_level="AUTOCOMMIT")
            if self._conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
                ids = self._insert(self._conn, rows)
                self._conn.commit()  # ends SQLAlchemy's logical transaction; no round trip
            else:
                with self._conn.begin():
                    ids = self._insert(self._conn, rows)
        except Exception as exc:  # the database refused or is away: every sender retries
            self._release(broken=True)
            for _, future in group:  # one exception each: each sender's task raises its own
                future.set_exception(TemporaryFailure.of(exc))
            return
        for (_, future), raw_id in zip(group, ids, strict=True):
            future.set_result(raw_id)

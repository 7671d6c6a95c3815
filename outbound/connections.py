"""One autocommit database connection per worker thread, kept open (PostgreSQL).

Why: on PostgreSQL a send is two statements (``outbound.snapshot.CLAIM_AND_READ`` and
``outbound.record.RECORD_SENT``), each a transaction of its own. Through the pool each
would also pay a checkout with ``pool_pre_ping`` (a round trip) and BEGIN and COMMIT
(two more): five round trips of driver and SQLAlchemy work for two statements. A thread
that keeps its own connection in autocommit sends exactly the two statements.

The pre-ping protected against connections the server had closed (a restart, an idle
timeout); here, as with the relay's SMTP connections (``outbound.email``), a reused
connection found dead is replaced once, at once, and the statement run again on the new
one. That is safe for both statements: a claim that had committed before the connection
died finds its row taken and stops; a record runs under the claim token and changes
nothing the second time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")
log = logging.getLogger(__name__)


class ThreadConnections:
    """Autocommit connections of ``engine``, one per calling thread.

    Parameters:
        engine: the runtime's engine; its pool lends one connection per thread for as
            long as this object is open.
        keep: at most this many threads keep a connection; the others take one from the
            pool for each call, so that many worker threads do not hold the pool's every
            connection (the publisher and the sweeper need theirs). Default: the pool's
            size less two.
    """

    def __init__(self, engine: Engine, *, keep: int | None = None) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        size = getattr(engine.pool, "size", None)
        self.keep = keep if keep is not None else max(1, (size() if callable(size) else 5) - 2)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[Connection] = set()
        self._opening = 0  # slots reserved by threads that are connecting

    def run(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` on this thread's connection: each statement commits as it runs.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database is unavailable (also on a new
                connection), or the statement failed.
        """
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                keep = len(self._open) + self._opening < self.keep
                if keep:
                    self._opening += 1
            if not keep:
                with self.engine.connect() as lent:
                    return self._run(lent, work)
            return self._run(self._connect(reserved=True), work)
        try:
            return self._run(conn, work)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.info("database connection lost (%s); retrying on a new one", exc.orig)
        return self._run(self._connect(), work)  # the reused one had died: once more, now

    def close(self) -> None:
        """Close every connection this object opened, from whichever thread."""
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    def _run(self, conn: Connection, work: Callable[[Connection], T]) -> T:
        try:
            result = work(conn)
            conn.commit()  # ends SQLAlchemy's transaction; nothing to send in autocommit
            return result
        except BaseException as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                self._drop(conn)
            else:
                with contextlib.suppress(Exception):
                    conn.rollback()
            raise

    def _connect(self, reserved: bool = False) -> Connection:
        try:
            conn = self.engine.connect()
        finally:
            if reserved:
                with self._lock:
                    self._opening -= 1
        with self._lock:
            self._open.add(conn)
        self._local.conn = conn
        return conn

    def _drop(self, conn: Connection) -> None:
        with self._lock:
            self._open.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with contextlib.suppress(Exception):
            conn.close()

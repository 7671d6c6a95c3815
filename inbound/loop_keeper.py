"""The event-loop doors' keeper (SMTP, webhook): group commit without leaving the loop.

Split from ``inbound.keep``, whose guarantee it keeps: an id is returned only for a
committed row, and "cannot commit now" is ``TemporaryFailure`` (451, 503). On
PostgreSQL ``LoopKeeper`` commits groups on the event loop itself with psycopg's async
connection; SQLite, which has no async driver, gets ``ThreadDoorKeeper`` around
``inbound.keep.GroupKeeper``. ``door_keeper`` picks one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import psycopg
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from inbound.keep import IDLE_RELEASE_SECONDS, GroupKeeper, TemporaryFailure
from models.base import utcnow
from models.message import RawMessage


class DoorKeeper(Protocol):
    """What an event-loop door (SMTP, webhook) needs from a keeper."""

    async def keep(self, *, source: str, data: bytes, envelope_from: str | None = None,
                   envelope_to: str | None = None) -> int:
        """The committed raw message's id; raises TemporaryFailure if it was not kept."""

    async def aclose(self) -> None:
        """Finish the groups under way, refuse what comes after (TemporaryFailure)."""


class ThreadDoorKeeper:
    """A ``GroupKeeper`` thread seen from the event loop (SQLite: it has no async driver).

    Parameters:
        sessions: the door's sessionmaker.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.keeper = GroupKeeper(sessions)
        self._started = False
        self._closed = False

    async def keep(self, *, source: str, data: bytes, envelope_from: str | None = None,
                   envelope_to: str | None = None) -> int:
        if self._closed:
            raise TemporaryFailure("cannot store the message now: the door is shutting down")
        if not self._started:  # the loop is one thread: no race here
            self.keeper.start()
            self._started = True
        future = self.keeper.keep(source=source, data=data, envelope_from=envelope_from, envelope_to=envelope_to)
        # A cancelled caller (a client that hung up) cancels the keeper's future: if the
        # keeper has not taken it yet the message is dropped, else it is kept unanswered.
        return await asyncio.wrap_future(future)

    async def aclose(self) -> None:
        self._closed = True
        if self._started:
            await asyncio.to_thread(self.keeper.stop)
            self._started = False


# One statement for any group size: the rows travel as five arrays (binary, no quoting),
# so the server prepares it once. ``ORDER BY n`` feeds the rows to the INSERT in the
# senders' order, so the sequence's ids ascend with it: the sorted ids returned are the
# senders' ids in order (what SQLAlchemy's sort_by_parameter_order relies on as well).
_TABLE = RawMessage.__table__
_KEEP_GROUP_SQL = (
    f"INSERT INTO {_TABLE.name} (source, data, envelope_from, envelope_to, status, attempts, received_at) "
    "SELECT g.source, g.data, g.envelope_from, g.envelope_to, 'pending', 0, g.received_at "
    "FROM unnest(%b::text[], %b::bytea[], %b::text[], %b::text[], %b::timestamp[]) WITH ORDINALITY "
    "AS g(source, data, envelope_from, envelope_to, received_at, n) ORDER BY g.n RETURNING id"
)


class _Waiting:
    """One sender's message and the future its SMTP/HTTP handler awaits."""

    __slots__ = ("row", "future")

    def __init__(self, row: tuple[Any, ...], future: asyncio.Future[int]) -> None:
        self.row, self.future = row, future


class LoopKeeper:
    """Group commit on the event loop itself (PostgreSQL): the SMTP door and the webhook.

    Why not the ``GroupKeeper`` thread: handing each message to a thread and its answer
    back (a queue, a future, ``call_soon_threadsafe``, the GIL passed to and fro) cost the
    door more CPU than its INSERT. Here the loop sends a group and goes on serving the
    other connections while PostgreSQL commits it; the messages that arrive meanwhile
    wait in a list and form the next group. One INSERT in autocommit per group (one
    round trip, one WAL flush); no sender is answered before its own row is committed,
    and a failed group fails each of its senders (451 / 503).

    The connection is held while groups follow each other; after a pause of more than
    ``idle_check_seconds`` it is pinged before use (a restarted server then costs no
    451), and a failed group drops it.

    Parameters:
        conninfo: a libpq connection string or URL (``postgresql://...``).
        connect_timeout: seconds to wait for a connection before failing the group.
        max_group: most messages per INSERT.
        idle_check_seconds: a connection unused for longer is pinged before its next group.
    """

    def __init__(self, conninfo: str, *, connect_timeout: float = 30.0, max_group: int = 32,
                 idle_check_seconds: float = IDLE_RELEASE_SECONDS) -> None:
        self.conninfo = conninfo
        self.idle_check_seconds = idle_check_seconds
        self.connect_timeout = max(1, int(connect_timeout))
        self.max_group = max_group
        self._waiting: list[_Waiting] = []
        self._drainer: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._last_used = 0.0
        self._closed = False

    @classmethod
    def for_engine(cls, engine: Engine, **options: Any) -> LoopKeeper:
        """A keeper on the database of a SQLAlchemy PostgreSQL ``engine`` (``options``: as
        for the constructor)."""
        url = engine.url.set(drivername="postgresql")
        return cls(url.render_as_string(hide_password=False), **options)

    async def keep(self, *, source: str, data: bytes, envelope_from: str | None = None,
                   envelope_to: str | None = None) -> int:
        """The committed raw message's id.

        Raises:
            TemporaryFailure: not committed (the database refused or is away, or the
                door is shutting down); the sender must retry.
        """
        if self._closed:
            raise TemporaryFailure("cannot store the message now: the door is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        received = utcnow().replace(tzinfo=None)  # the column holds naive UTC
        self._waiting.append(_Waiting((source, data, envelope_from, envelope_to, received), future))
        if self._drainer is None:
            # Started, not run: every message that completes in this turn of the loop joins it.
            self._drainer = loop.create_task(self._drain())
        # A sender that hangs up cancels its future: if its group is not sent yet, its
        # message is dropped (it got no 250 and will send again); if it is, the row is
        # kept and the sender's retry is a duplicate, which threading drops.
        return await future

    async def aclose(self) -> None:
        self._closed = True
        if self._drainer is not None:
            await asyncio.shield(self._drainer)
        await self._release()

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[:self.max_group]
                del self._waiting[:self.max_group]
                group = [w for w in group if not w.future.done()]
                if group:
                    await self._commit(group)
        finally:
            self._drainer = None
            if self._waiting:  # cancelled (the loop is stopping): nobody will send these
                waiting, self._waiting = self._waiting, []
                _fail(waiting, TemporaryFailure("cannot store the message now: the door is shutting down"))

    async def _commit(self, group: list[_Waiting]) -> None:
        columns: list[list[Any]] = [[], [], [], [], []]
        for w in group:
            for column, value in zip(columns, w.row, strict=True):
                column.append(value)
        try:
            conn = await self._connection()
            cursor = conn.cursor(binary=True)
            await cursor.execute(_KEEP_GROUP_SQL, columns, prepare=True)
            ids = sorted(row[0] for row in await cursor.fetchall())
        except Exception as exc:  # the database refused or is away: every sender retries
            await self._release()
            _fail(group, TemporaryFailure.of(exc))
            return
        except asyncio.CancelledError:  # the loop is stopping: the commit's outcome is unknown
            await self._release()
            _fail(group, TemporaryFailure("cannot store the message now: the door is shutting down"))
            raise
        self._last_used = time.monotonic()
        for w, raw_id in zip(group, ids, strict=True):
            if not w.future.done():  # a sender that hung up meanwhile: kept, not answered
                w.future.set_result(raw_id)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and time.monotonic() - self._last_used > self.idle_check_seconds:
            try:
                await self._conn.execute("SELECT 1")
            except psycopg.Error:  # killed while idle (a server restart): connect again
                await self._release()
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=self.connect_timeout)
        return self._conn

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()  # no suspension point: safe while being cancelled


def _fail(waiting: list[_Waiting], failure: TemporaryFailure) -> None:
    for w in waiting:
        if not w.future.done():
            # One exception object each: every sender's task raises and chains its own.
            w.future.set_exception(TemporaryFailure(*failure.args))


def door_keeper(sessions: sessionmaker[Session], *, connect_timeout: float = 30.0) -> DoorKeeper:
    """The keeper for an event-loop door on the database of ``sessions``.

    PostgreSQL gets ``LoopKeeper`` (no thread, no SQLAlchemy per message); SQLite, which
    has no async driver, the ``GroupKeeper`` thread.
    """
    engine: Engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        return LoopKeeper.for_engine(engine, connect_timeout=connect_timeout)
    return ThreadDoorKeeper(sessions)

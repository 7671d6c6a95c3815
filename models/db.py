"""Engines and sessions for SQLite and PostgreSQL, and ticket-number allocation.

SQLite gets WAL, a busy timeout and foreign keys so that the SMTP door, the IMAP poller
and the worker can share one file; PostgreSQL gets a real sequence for ticket numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psycopg import RawCursor
from sqlalchemy import Column, Integer, Sequence, Table, create_engine, event, func, insert, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from models.base import Base

TICKET_SEQUENCE = Sequence("ticket_number_seq", start=1, metadata=Base.metadata)
# SQLite has no sequences: an AUTOINCREMENT table hands out values that are never reused.
ticket_counter = Table(
    "ticket_counter",
    Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    sqlite_autoincrement=True,
)


def make_engine(url: str, timeout: float = 30.0, **kwargs: Any) -> Engine:
    """An engine for ``url``; creates the directory of a SQLite file.

    ``timeout`` bounds how long a statement waits for a lock (SQLite) or a connection
    (PostgreSQL) before the caller sees an OperationalError and answers "retry later".
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": timeout, "check_same_thread": False})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cursor.close()

        # Let SQLAlchemy, not pysqlite, open transactions, and take the write lock at
        # BEGIN: two writers then wait on busy_timeout instead of failing to upgrade.
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    # PostgreSQL's own $n placeholders and psycopg's raw cursor: psycopg then sends the
    # statement as SQLAlchemy wrote it instead of re-parsing it for %(name)s markers on
    # every execution, which for a batch's multi-row INSERT (thousands of parameters,
    # too long for psycopg's cache) cost more CPU than the database spent running it.
    kwargs.setdefault("paramstyle", "numeric_dollar")
    kwargs.setdefault("connect_args", {"connect_timeout": max(1, int(timeout)), "cursor_factory": RawCursor})
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def next_sequence_values(session: Session, count: int) -> list[int]:
    """``count`` new, never-reused values, ascending, in one round trip on PostgreSQL."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            select(TICKET_SEQUENCE.next_value()).select_from(func.generate_series(1, count))
        ).scalars()
        return sorted(int(v) for v in rows)
    return [int(conn.execute(insert(ticket_counter).returning(ticket_counter.c.id)).scalar_one())
            for _ in range(count)]


def create_schema(engine: Engine) -> None:
    """Create every table (tests and embedded defaults); production runs migrations."""
    import models.all  # noqa: F401  (registers every table)

    Base.metadata.create_all(engine)

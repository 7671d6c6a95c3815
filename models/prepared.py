"""A SQLAlchemy statement compiled once for PostgreSQL and run on the bare psycopg
connection, for the few statements that run once per notification.

Why: the send step is one claim-and-read and one record statement per notification
(``outbound.snapshot``, ``outbound.record``). Run through ``Connection.execute`` each pays
SQLAlchemy's machinery: the cache key of a large statement tree, an execution context,
result metadata built from ``cursor.description``. For ``CLAIM_AND_READ`` that was 0.64 ms
of CPU against 0.25 ms for the same SQL sent on the driver (measured on the benchmark
machine), and the two statements were a fifth of the worker's CPU per notification.

The statements stay SQLAlchemy constructs, one definition shared with the step-by-step
path of other databases; only running them skips the machinery. Parameters go through
each bind parameter's own type processor and values come back through each column's
result processor, so ``run`` returns what ``Connection.execute`` would. Driver errors are
raised as SQLAlchemy's (``DBAPIError.instance``), and a connection found dead is
invalidated, exactly as ``Connection.execute`` does: callers (``outbound.connections``)
cannot tell the two apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable


class PreparedStatement:
    """``statement`` compiled for ``dialect`` (PostgreSQL with the ``numeric_dollar``
    paramstyle of ``models.db.make_engine``).

    psycopg prepares it on the server after a few executions (its ``prepare_threshold``),
    so the server does not parse and plan it again either.
    """

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.dialect = dialect
        binds = compiled.binds
        names = compiled.positiontup or ()
        #: Per placeholder: the parameter's name, its value when the statement holds it
        #: (a literal such as a LIKE pattern), and its type's bind processor.
        self._params: list[tuple[str, Any, Callable[[Any], Any] | None]] = [
            (name, binds[name].value, binds[name].type.bind_processor(dialect)) for name in names
        ]
        columns = list(statement.exported_columns)  # type: ignore[attr-defined]
        self.keys: tuple[str, ...] = tuple(col.key for col in columns)
        self._results: list[Callable[[Any], Any] | None] = [
            col.type.result_processor(dialect, None) for col in columns
        ]

    def run(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute on ``conn``'s driver connection; the rows, each by column key.

        ``conn`` must be in autocommit (``outbound.connections``): the statement is then a
        transaction of its own, as with ``Connection.execute`` there.

        Raises:
            sqlalchemy.exc.DBAPIError: as ``Connection.execute`` raises it; with
                ``connection_invalidated`` set when the connection died.
        """
        values = []
        for name, held, process in self._params:
            value = params.get(name, held)
            values.append(process(value) if process is not None and value is not None else value)
        with driver_errors(conn, self.sql, values), conn.connection.driver_connection.cursor() as cursor:
            cursor.execute(self.sql, values)
            rows = cursor.fetchall() if cursor.description is not None else []
        results = self._results
        keys = self.keys
        return [
            dict(zip(keys, [value if process is None or value is None else process(value)
                            for process, value in zip(results, row, strict=True)], strict=True))
            for row in rows
        ]


@contextmanager
def driver_errors(conn: Connection, statement: str, params: Any) -> Iterator[None]:
    """Raise what psycopg raises inside the block as ``Connection.execute`` would:
    SQLAlchemy's exception for it, and a connection found dead invalidated (for work done
    on ``conn``'s driver connection: ``PreparedStatement``, ``models.deferred``'s COPY)."""
    try:
        yield
    except psycopg.Error as exc:
        dialect = conn.dialect
        dead = dialect.is_disconnect(exc, conn.connection.driver_connection, None)
        if dead:
            conn.invalidate(exc)
        raise DBAPIError.instance(statement, params, exc, psycopg.Error, connection_invalidated=dead,
                                  dialect=dialect) from exc


@lru_cache(maxsize=64)
def prepared(statement: Executable, dialect: Dialect) -> PreparedStatement:
    """``statement`` compiled for ``dialect``, once (statements are module constants and a
    process has one engine, tests a few)."""
    return PreparedStatement(statement, dialect)

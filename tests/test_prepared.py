"""``models.prepared``: a statement run on the bare psycopg connection must come back as
``Connection.execute`` gives it (types processed, literals bound) and fail as it fails
(SQLAlchemy's errors; a dead connection invalidated), since the send step's callers
cannot tell which one ran.

PostgreSQL only: on other databases the send step runs its statements step by step
through SQLAlchemy (``tests/test_deliver_record.py`` compares the two paths' mail).
"""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from sqlalchemy import Integer, String, bindparam, cast, select, text
from sqlalchemy.exc import DataError, DBAPIError

from models.base import utcnow
from models.outbox import Outbox
from models.prepared import PreparedStatement, prepared
from models.ticket import Ticket
from tests.outbound_helpers import move, open_email_ticket
from worker.runtime import Runtime

pytestmark = [pytest.mark.parametrize("database_url", ["postgresql"], indirect=True), pytest.mark.timeout(60)]

#: Aware datetimes in and out (``UTCDateTime``), JSON, a literal LIKE pattern.
ROWS = (
    select(Outbox.id, Outbox.payload, Outbox.created_at, Ticket.created_at.label("opened_at"), Ticket.number)
    .join(Ticket, Ticket.id == Outbox.ticket_id)
    .where(Outbox.template.like("sta%"), Outbox.created_at <= bindparam("now"), Ticket.number == bindparam("n"))
)


def test_rows_come_back_as_connection_execute_gives_them(rt: Runtime) -> None:
    number = open_email_ticket(rt)
    move(rt, number, "Cita agendada")
    params = {"now": utcnow() + timedelta(minutes=1), "n": number}
    with rt.engine.connect() as conn:
        expected = [dict(row) for row in conn.execute(ROWS, params).mappings()]
        got = prepared(ROWS, conn.dialect).run(conn, params)
    assert len(got) == 1 and got == expected
    assert got[0]["created_at"].tzinfo is UTC and got[0]["opened_at"].tzinfo is UTC
    assert isinstance(got[0]["payload"], dict)


def test_a_statement_is_compiled_once_per_dialect(rt: Runtime) -> None:
    assert prepared(ROWS, rt.engine.dialect) is prepared(ROWS, rt.engine.dialect)
    assert isinstance(prepared(ROWS, rt.engine.dialect), PreparedStatement)


def test_a_bad_value_raises_sqlalchemys_error_and_keeps_the_connection(rt: Runtime) -> None:
    to_int = PreparedStatement(select(cast(bindparam("v", type_=String), Integer).label("v")), rt.engine.dialect)
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        with pytest.raises(DataError) as raised:
            to_int.run(conn, {"v": "no es un número"})
        assert not raised.value.connection_invalidated and not conn.invalidated
        assert to_int.run(conn, {"v": "7"}) == [{"v": 7}]


def test_a_connection_the_server_closed_is_invalidated_like_connection_execute_does(rt: Runtime) -> None:
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with rt.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            other.commit()
        with pytest.raises(DBAPIError) as raised:
            prepared(ROWS, conn.dialect).run(conn, {"now": utcnow(), "n": 1})
        assert raised.value.connection_invalidated and conn.invalidated

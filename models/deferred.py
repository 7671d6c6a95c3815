"""Rows a batch writes with plain INSERTs right after the ORM flush, not as ORM objects.

Why: threading a batch of mail adds a message and one or two participants per mail. As
ORM objects each row cost about 0.14 ms of CPU in the unit of work (instance state,
attribute events, dependency sorting) against 0.04 ms as one row of a multi-row
``INSERT``, and the unit of work was a third of threading a mail. These rows are
written and never read back in the same transaction (``models.lookups`` remembers what
the batch added), so they need no ORM identity.

How: ``defer`` keeps the row's values and the ORM objects its foreign keys point at
(a ticket or contact that may be new, without an id yet). After each flush, when those
objects have their ids, the kept rows are inserted, one statement per table. A rollback
forgets the rows deferred inside what it rolled back (a savepoint: only its own), so a
message retried on the careful path is not written twice and its neighbours are kept.

Only inside ``deferring(session)`` do the model functions defer (``models.tickets``);
everywhere else they add ORM objects as before, because their callers read the rows
back (the WhatsApp handler attaches media to its message, the CLI prints ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Table, event, insert
from sqlalchemy.orm import Session, SessionTransaction

_ON = "helpdesk.deferring"
_ROWS = "helpdesk.deferred_rows"


@contextmanager
def deferring(session: Session) -> Iterator[None]:
    """Let the model functions defer their rows while the block runs."""
    before = session.info.get(_ON, False)
    session.info[_ON] = True
    try:
        yield
    finally:
        session.info[_ON] = before


def is_deferring(session: Session) -> bool:
    return bool(session.info.get(_ON))


class Written:
    """The id a deferred row gets when it is written: None until then, and for good if
    it is rolled back first (duck-types an ORM row for code that only reads ``id``)."""

    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id: int | None = None


def defer(session: Session, table: Table, values: dict[str, Any], refs: dict[str, Any],
          written: Written | None = None) -> None:
    """Insert ``values`` into ``table`` after the next flush, with each column of ``refs``
    set to the id its ORM object has by then (None stays NULL); ``written`` receives the
    new row's id."""
    inside = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_ROWS, []).append((table, values, refs, inside, written))


def write_deferred(session: Session) -> int:
    """Insert the deferred rows now (their referenced objects must be flushed); returns
    how many. Called after every flush, and by the batch after its last one (a flush
    with nothing else to write does not run its hooks)."""
    pending: list[tuple[Table, dict[str, Any], dict[str, Any], Any, Written | None]] = (
        session.info.pop(_ROWS, None) or [])
    if not pending:
        return 0
    by_table: dict[Table, tuple[list[dict[str, Any]], list[Written | None]]] = {}
    for table, values, refs, _inside, written in pending:
        row = dict(values)
        for column, obj in refs.items():
            if obj is not None and obj.id is None:
                raise RuntimeError(f"{table.name}.{column}: the referenced row was not flushed")
            row[column] = obj.id if obj is not None else None
        rows, receivers = by_table.setdefault(table, ([], []))
        rows.append(row)
        receivers.append(written)
    conn = session.connection()
    for table, (rows, receivers) in by_table.items():
        if not any(receivers):
            conn.execute(insert(table), rows)
            continue
        ids = conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).scalars()
        for receiver, new_id in zip(receivers, ids, strict=True):
            if receiver is not None:
                receiver.id = new_id
    return len(pending)


def flush(session: Session) -> None:
    """Flush the session and then whatever is still deferred (a flush with no ORM
    change writes nothing and runs no hook)."""
    session.flush()
    write_deferred(session)


def has_deferred(session: Session) -> bool:
    return bool(session.info.get(_ROWS))


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: object) -> None:
    if session.info.get(_ROWS):
        write_deferred(session)


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous: SessionTransaction) -> None:
    """Drop the rows deferred inside the transaction (or savepoint) rolled back."""
    rows = session.info.get(_ROWS)
    if not rows:
        return

    def rolled_back(transaction: SessionTransaction | None) -> bool:
        while transaction is not None:
            if transaction is previous:
                return True
            transaction = transaction.parent
        return False

    kept = [row for row in rows if not rolled_back(row[3])]
    if kept:
        session.info[_ROWS] = kept
    else:
        session.info.pop(_ROWS, None)

"""Rows a batch writes with plain INSERTs right after the ORM flush, not as ORM objects.

Why: threading a batch of mail adds a message and one or two participants per mail, and
a new contact and ticket for every new conversation. As ORM objects each row cost about
0.14 ms of CPU in the unit of work (instance state, attribute events, dependency
sorting, cascades) against 0.04 ms as one row of a multi-row ``INSERT``, and the unit of
work was a third of threading a mail. These rows are written and never read back in
the same transaction (``models.lookups`` remembers what the batch added), so they need
no ORM identity.

How: ``defer`` keeps a row's values and the objects its foreign keys point at (a ticket
or contact that may be new, without an id yet); ``defer_new`` keeps a new ORM object
that is never added to the session (it stays transient), whose columns are read when it
is written, so what the batch changes on it until then is written too. After each
flush the kept rows are inserted, one statement per table, tables in foreign-key order,
each foreign key set to the id its object has by then; a new object receives its id.
Before any ORM query, as the session's autoflush would with pending objects, the kept
rows are written too, so a query sees them. A rollback forgets the rows deferred inside
what it rolled back (a savepoint: only its own), so a message retried on the careful
path is not written twice and its neighbours are kept.

Only inside ``deferring(session)`` do the model functions defer (``models.tickets``,
``models.contact``); everywhere else they add ORM objects as before, because their
callers read the rows back (the WhatsApp handler attaches media to its message, the CLI
prints ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Insert, Table, event, insert, inspect, update
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, class_mapper

from models.prepared import driver_errors

_ON = "helpdesk.deferring"
_ROWS = "helpdesk.deferred_rows"

#: Called with the session and the new objects of a table right before they are
#: written (``models.tickets`` numbers its tickets there, in one round trip).
BeforeWrite = Callable[[Session, list[Any]], None]
_BEFORE_WRITE: dict[Table, BeforeWrite] = {}
_ORDER: dict[Table, int] = {}
T = TypeVar("T")


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


class _Row(NamedTuple):
    table: Table
    values: dict[str, Any] | None  # None: read ``attrs`` off ``receiver`` when written
    attrs: tuple[str, ...]
    refs: dict[str, Any]
    inside: SessionTransaction | None
    receiver: Any  # gets the new row's id (a Written, a new ORM object) or None


def defer(session: Session, table: Table, values: dict[str, Any], refs: dict[str, Any],
          written: Written | None = None) -> None:
    """Insert ``values`` into ``table`` after the next flush, with each column of ``refs``
    set to the id its object has by then (None stays NULL); ``written`` receives the
    new row's id."""
    inside = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_ROWS, []).append(_Row(table, values, (), refs, inside, written))


def defer_new(session: Session, obj: Any, attrs: tuple[str, ...], refs: dict[str, Any]) -> None:
    """Insert the new ORM object ``obj`` (never added to the session) after the next
    flush: the columns ``attrs`` as the object holds them then (the others take their
    column defaults), ``refs`` as in ``defer``; ``obj.id`` receives the new row's id."""
    inside = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_ROWS, []).append(_Row(obj.__table__, None, attrs, refs, inside, obj))


def new_object(cls: type[T], **values: Any) -> T:
    """A new, transient ``cls`` holding ``values``, for ``defer_new``.

    Why not ``cls(**values)``: the ORM constructor fires an attribute event per value
    and builds a collection adapter per list, 30 µs for a contact with its address,
    which was most of what opening a ticket for a new sender cost once the unit of
    work was gone. This object is never added to a session, so no event has anyone
    to tell; its values are where the ORM reads them (attribute access works as on
    any transient object, and later changes go through the ORM as usual).
    """
    manager = _MANAGERS.get(cls)
    if manager is None:
        manager = _MANAGERS[cls] = class_mapper(cls).class_manager  # mappers configured first
    obj: T = manager.new_instance()
    obj.__dict__.update(values)
    return obj


_MANAGERS: dict[type, Any] = {}


def before_write(table: Table, hook: BeforeWrite) -> None:
    """Run ``hook`` on the new objects of ``table`` right before each write of them."""
    _BEFORE_WRITE[table] = hook


def is_written_new(obj: Any) -> bool:
    """Whether ``obj`` is a new object that ``defer_new`` has already written: the ORM
    does not track it, so a later change needs an UPDATE of its own (``change``)."""
    return obj.id is not None and inspect(obj).transient


def change(session: Session, obj: Any, **values: Any) -> None:
    """Set ``values`` on ``obj``, a row that may be new to this batch.

    An object of the session is changed as usual (the flush writes it); a new object
    not written yet carries the values into its INSERT; one written already (a flush
    in the middle of a batch) is updated now, since no flush would write the change.
    """
    for name, value in values.items():
        setattr(obj, name, value)
    if is_written_new(obj):
        table = obj.__table__
        session.connection().execute(update(table).where(table.c.id == obj.id).values(**values))


def _order(table: Table) -> int:
    """The table's place in foreign-key order: referenced tables are written first."""
    if table not in _ORDER:
        _ORDER.update({t: i for i, t in enumerate(table.metadata.sorted_tables)})
    return _ORDER[table]


def _insert(table: Table, *, ordered: bool) -> Insert:
    """The table's ``INSERT ... RETURNING id``, built once (building and keying a new
    statement for every write was a tenth of writing it); ``ordered``: the ids come back
    in the order of the rows."""
    key = (table, ordered)
    found = _INSERTS.get(key)
    if found is None:
        found = _INSERTS[key] = insert(table).returning(table.c.id, sort_by_parameter_order=ordered)
    return found


_INSERTS: dict[tuple[Table, bool], Insert] = {}


def _copyable(table: Table, row: dict[str, Any]) -> bool:
    """Whether ``row`` can go by COPY: it names every column with a default computed in
    Python, which COPY would not apply (the id and server defaults are the database's)."""
    return all(column.default is None or column.name in row for column in table.columns)


def _copy(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (all with the same columns) with ``COPY ... FROM STDIN`` (PostgreSQL).

    Why, for the rows whose ids nobody needs (messages, participants, addresses): a
    multi-row INSERT of a batch's messages cost 3 ms of CPU and 8 ms in all per hundred
    rows, SQLAlchemy and psycopg handling each value as a statement parameter; COPY
    takes 1.5 ms and 5 ms. Values go through their column types' bind processing as in
    an INSERT; a database error is raised as SQLAlchemy's (``models.prepared.driver_errors``),
    so the batch's handling of an IntegrityError (a concurrent twin) or an
    OperationalError stays the same.
    """
    names = tuple(rows[0])
    key = (table, names)
    found = _COPIES.get(key)
    if found is None:
        preparer = conn.dialect.identifier_preparer
        statement = (f"COPY {preparer.format_table(table)} "
                     f"({', '.join(preparer.format_column(table.c[n]) for n in names)}) FROM STDIN")
        found = _COPIES[key] = (statement, tuple(table.c[n].type.bind_processor(conn.dialect) for n in names))
    statement, processors = found
    with driver_errors(conn, statement, None), conn.connection.driver_connection.cursor() as cursor, \
            cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([p(row[n]) if p is not None else row[n] for n, p in zip(names, processors, strict=True)])


_COPIES: dict[tuple[Table, tuple[str, ...]], tuple[str, tuple[Any, ...]]] = {}


def write_deferred(session: Session) -> int:
    """Insert the deferred rows now (the objects they reference must be flushed or
    deferred too); returns how many. Called after every flush, before ORM queries, and
    by the batch after its last flush (a flush with nothing else to write does not run
    its hooks)."""
    pending: list[_Row] = session.info.pop(_ROWS, None) or []
    if not pending:
        return 0
    by_table: dict[Table, list[_Row]] = {}
    for entry in pending:
        by_table.setdefault(entry.table, []).append(entry)
    conn = session.connection()
    for table in sorted(by_table, key=_order):
        entries = by_table[table]
        hook = _BEFORE_WRITE.get(table)
        if hook is not None:
            hook(session, [e.receiver for e in entries if e.values is None])
        rows: list[dict[str, Any]] = []
        for entry in entries:
            if entry.values is None:
                obj = entry.receiver
                row = {name: getattr(obj, name) for name in entry.attrs}
            else:
                row = dict(entry.values)
            for column, ref in entry.refs.items():
                if ref is not None and ref.id is None:
                    raise RuntimeError(f"{table.name}.{column}: the referenced row was not flushed")
                row[column] = ref.id if ref is not None else None
            rows.append(row)
        # Always with RETURNING, even when no id is wanted: SQLAlchemy then sends the
        # rows as one multi-row INSERT ("insertmanyvalues"); without it psycopg runs one
        # INSERT per row, which cost the database and the driver twice the time.
        if all(e.receiver is None for e in entries):
            if conn.dialect.name == "postgresql" and _copyable(table, rows[0]):
                _copy(conn, table, rows)
            else:
                conn.execute(_insert(table, ordered=False), rows)
            continue
        ids = conn.execute(_insert(table, ordered=True), rows).scalars()
        for entry, new_id in zip(entries, ids, strict=True):
            if entry.receiver is not None:
                entry.receiver.id = new_id
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


@event.listens_for(Session, "do_orm_execute")
def _before_query(state: ORMExecuteState) -> None:
    """What autoflush does for pending ORM objects: a query sees the deferred rows."""
    session = state.session
    if session.info.get(_ROWS) and session.autoflush:
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

    kept = [row for row in rows if not rolled_back(row.inside)]
    if kept:
        session.info[_ROWS] = kept
    else:
        session.info.pop(_ROWS, None)

"""Turning committed raw messages into ticket messages, once each.

The door has already answered; this step may run in the door's own process right after
the commit, in another process, or after a crash: it takes rows still ``pending`` (a
process that dies mid-batch commits nothing, so its rows stay pending), handles them in
batches inside one transaction with the rows locked, and marks each ``done``. Anything
that fails is ``quarantined`` with the reason, never dropped; ``helpdesk quarantine
--retry ID`` puts it back.

Errors::

    Quarantine          bad input: kept raw with the reason; an operator may retry it
    OperationalError    the database went away: the row stays pending, retried later
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from config.pipelines import Catalog
from config.settings import Settings
from models import deferred
from models.base import UTCDateTime, utcnow
from models.lookups import Keys, lookups, reset
from models.message import RawMessage

log = logging.getLogger("helpdesk.inbound")

BATCH = 100  # raw messages per transaction


@dataclass(frozen=True, slots=True)
class RawRow:
    """A kept raw message as the handlers read it: read-only, not an ORM object.

    Why not ``RawMessage``: a batch reads a hundred rows and writes back only what
    became of each; as ORM objects their loading and change tracking cost a tenth of
    threading a mail. What became of them is written by ``_Outcomes`` in two statements.
    """

    id: int
    source: str
    data: bytes
    envelope_from: str | None
    envelope_to: str | None


#: Takes the batch's keys (hashes of senders and Message-IDs) as transaction-scoped
#: advisory locks, in one statement and in key order, so two batches never wait on each
#: other in a cycle (PostgreSQL).
_LOCK_KEYS = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT unnest(CAST(:keys AS bigint[])) AS k "
    "ORDER BY k) AS keys"
)

_RAW_COLUMNS = (RawMessage.id, RawMessage.source, RawMessage.data, RawMessage.envelope_from,
                RawMessage.envelope_to)
_DONE = (
    update(RawMessage).where(RawMessage.id == bindparam("rid"))
    .values(status="done", outcome=bindparam("text"), error=None, attempts=RawMessage.attempts + 1,
            processed_at=bindparam("at"))
)
_QUARANTINED = (
    update(RawMessage).where(RawMessage.id == bindparam("rid"))
    .values(status="quarantined", error=bindparam("text"), attempts=RawMessage.attempts + 1,
            processed_at=bindparam("at"))
)

#: ``_DONE`` for a whole batch in one statement (PostgreSQL): the rows' ids and outcomes
#: as two arrays, and the batch's one time (stored as ``UTCDateTime`` stores it). Why one
#: time: the outcomes are written together after the flush, microseconds apart; an array
#: of a hundred times cost half the statement's CPU (0.5 ms a batch) and 0.6 ms in all.
_DONE_ALL = text(
    "UPDATE raw_messages SET status = 'done', outcome = v.outcome, error = NULL, "
    "attempts = raw_messages.attempts + 1, processed_at = :at "
    "FROM unnest(CAST(:rids AS integer[]), CAST(:texts AS text[])) "
    "AS v(rid, outcome) WHERE raw_messages.id = v.rid"
).bindparams(bindparam("at", type_=UTCDateTime))


class Quarantine(Exception):
    """This message cannot be processed as it is; keep it raw with this reason."""


Outcome = str | Callable[[], str]
"""What happened to a message, for its raw row; a callable when it names something the
batch's flush has yet to number (a new ticket)."""


class Handler(Protocol):
    """Turns raw messages of some sources into ticket messages, a batch at a time."""

    def prepare(self, raw: RawRow) -> Any:
        """What needs no database (parsing); never raises: errors go into the plan."""

    def keys(self, plan: Any, keys: Keys) -> None:
        """Add what handling ``plan`` will look up, so the batch asks for it at once."""

    def handle(self, session: Session, raw: RawRow, plan: Any, catalog: Catalog) -> Outcome:
        """Decide and add the rows (the caller flushes). Raises Quarantine on bad input."""


class OneByOne:
    """A handler with nothing to prepare or prefetch (WhatsApp: one form per message)."""

    def __init__(self, handle: Callable[[Session, RawRow, Settings, Catalog], str], settings: Settings) -> None:
        self._handle = handle
        self.settings = settings

    def prepare(self, raw: RawRow) -> None:
        return None

    def keys(self, plan: None, keys: Keys) -> None:
        return None

    def handle(self, session: Session, raw: RawRow, plan: None, catalog: Catalog) -> Outcome:
        return self._handle(session, raw, self.settings, catalog)


def _mail_handler(settings: Settings) -> Handler:
    from inbound.mail import MailHandler

    return MailHandler(settings)


def _whatsapp_handler(settings: Settings) -> Handler:
    from inbound.whatsapp import handle

    return OneByOne(handle, settings)


HANDLERS: dict[str, Callable[[Settings], Handler]] = {
    "smtp": _mail_handler,
    "imap": _mail_handler,
    "pipe": _mail_handler,
    "cli": _mail_handler,
    "whatsapp": _whatsapp_handler,
}


@dataclass
class Processor:
    """Processes raw messages with the handler of their source."""

    sessions: sessionmaker[Session]
    settings: Settings
    catalog: Catalog
    handled: int = 0
    _handlers: dict[str, Handler] = field(default_factory=dict)

    def handler(self, source: str) -> Handler:
        found = self._handlers.get(source)
        if found is None:
            factory = HANDLERS.get(source)
            if factory is None:
                raise Quarantine(f"no handler for source {source!r}")
            key = source if source == "whatsapp" else "mail"
            found = self._handlers.get(key) or factory(self.settings)
            self._handlers[source] = self._handlers[key] = found
        return found

    def pending_ids(self, limit: int = 5000, sources: tuple[str, ...] | None = None) -> list[int]:
        query = select(RawMessage.id).where(RawMessage.status == "pending")
        if sources is not None:
            query = query.where(RawMessage.source.in_(sources))
        with self.sessions() as session:
            return list(session.scalars(query.order_by(RawMessage.id).limit(limit)))

    def process_pending(
        self, limit: int = 5000, batch: int = BATCH, sources: tuple[str, ...] | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Process what is waiting, oldest first, until done or ``stop`` is set (looked at
        between batches); returns how many were handled."""
        ids = self.pending_ids(limit, sources)
        count = 0
        for i in range(0, len(ids), batch):
            if stop is not None and stop.is_set():
                break
            count += len(self.process_batch(ids[i:i + batch]))
        return count

    def process(self, raw_id: int) -> str | None:
        """Handle one raw message; None when another process has it or it is done."""
        return self.process_batch([raw_id]).get(raw_id)

    def process_batch(self, raw_ids: list[int]) -> dict[int, str]:
        """Handle several raw messages in one transaction (see ``_process_batch``).

        Two processors that meet the same new senders in different orders can deadlock
        on PostgreSQL; the loser's batch is then handled one message per transaction,
        which cannot cross-lock with another batch in the same way.
        """
        try:
            return self._process_batch(raw_ids)
        except OperationalError as exc:
            if not _lost_a_race(exc):
                raise
            log.info("batch of %s lost a lock race (%s); one message at a time", len(raw_ids), exc.orig)
        results: dict[int, str] = {}
        for raw_id in raw_ids:
            for attempt in range(3):
                try:
                    results.update(self._process_batch([raw_id]))
                    break
                except OperationalError as exc:
                    if not _lost_a_race(exc) or attempt == 2:
                        raise
        return results

    def _process_batch(self, raw_ids: list[int]) -> dict[int, str]:
        """Handle several raw messages in ONE transaction.

        One commit for the batch instead of one per message is what lets threading keep
        up with the door. The batch first runs optimistically: every message is parsed
        (once), everything threading will look up is asked for at once
        (``models.lookups``), the messages are handled in order, and all their rows are
        written in one flush, without savepoints. If any message fails, the whole
        transaction is rolled back and the batch runs again with a savepoint each, so
        that a failing message rolls back alone and is quarantined in the same
        transaction. If the commit itself fails (the database went away) every row stays
        pending.

        Raises:
            OperationalError: the database is unavailable; nothing of the batch changed.
        """
        plans: dict[int, Any] = {}  # parsed once, whichever path handles them
        try:
            results = self._run_batch(raw_ids, plans, careful=False)
        except OperationalError:
            raise
        except (_Retry, SQLAlchemyError):  # a message failed, maybe only at the flush or commit
            results = self._run_batch(raw_ids, plans, careful=True)
        self.handled += len(results)
        for raw_id, outcome in results.items():
            if outcome.startswith("quarantined"):
                log.warning("raw %s %s", raw_id, outcome)
            else:
                log.info("raw %s: %s", raw_id, outcome)
        return results

    def _run_batch(self, raw_ids: list[int], plans: dict[int, Any], *, careful: bool) -> dict[int, str]:
        results: dict[int, str] = {}
        with self.sessions.begin() as session:
            query = (
                select(*_RAW_COLUMNS)
                .where(RawMessage.id.in_(raw_ids), RawMessage.status == "pending")
                .order_by(RawMessage.id)
            )
            postgresql = session.get_bind().dialect.name == "postgresql"
            if postgresql:
                query = query.with_for_update(skip_locked=True)  # another process has those
            raws = [RawRow(*row) for row in session.execute(query)]
            for raw in raws:
                if raw.id not in plans:
                    plans[raw.id] = self._prepare(raw)
            keys = Keys()
            for raw in raws:
                plan = plans[raw.id]
                if not isinstance(plan, _Unhandled):
                    self.handler(raw.source).keys(plan, keys)
            if postgresql:
                _serialize(session, keys)
            outcomes = _Outcomes()
            if careful:
                for raw in raws:
                    results[raw.id] = outcomes.add(raw, self._handle_in_savepoint(session, raw, plans[raw.id]))
                outcomes.write(session)
                return results
            lookups(session).prefetch(keys)
            handled = [(raw, self._handle_optimistic(session, raw, plans[raw.id])) for raw in raws]
            try:
                deferred.flush(session)  # every row of the batch at once; a refused row fails the batch
            except OperationalError:
                raise
            except Exception as exc:  # e.g. IntegrityError, or text the driver cannot encode
                raise _Retry from exc
            for raw, outcome in handled:
                results[raw.id] = outcomes.add(raw, outcome)
            outcomes.write(session)
        return results

    def _prepare(self, raw: RawRow) -> Any:
        try:
            return self.handler(raw.source).prepare(raw)
        except Quarantine as exc:
            return _Unhandled(str(exc))
        except Exception as exc:  # lose nothing: quarantined with the reason
            log.exception("raw %s: unexpected failure while parsing", raw.id)
            return _Unhandled(f"unexpected {type(exc).__name__}: {exc}")

    def _handle_optimistic(self, session: Session, raw: RawRow, plan: Any) -> Outcome | _Unhandled:
        """The fast path: no savepoint; any failure sends the batch down the careful path."""
        error = plan.reason if isinstance(plan, _Unhandled) else getattr(plan, "error", None)
        if error is not None:  # known before any row was added: nothing to roll back
            return _Unhandled(error)
        try:
            return self.handler(raw.source).handle(session, raw, plan, self.catalog)
        except OperationalError:
            raise  # the database is away, or a lock race: handled by process_batch
        except Exception as exc:
            raise _Retry from exc

    def _handle_in_savepoint(self, session: Session, raw: RawRow, plan: Any) -> Outcome | _Unhandled:
        """The careful path: a savepoint per message, so a failing one rolls back alone."""
        if isinstance(plan, _Unhandled):
            return plan
        handler = self.handler(raw.source)

        def attempt() -> Outcome:
            reset(session)
            with session.begin_nested():
                outcome = handler.handle(session, raw, plan, self.catalog)
                deferred.flush(session)
            return outcome

        try:
            try:
                outcome = attempt()
            except IntegrityError:
                # Another process stored the same message (or created the same contact)
                # at the same moment and won: run again, now seeing the winner's rows.
                outcome = attempt()
            return outcome() if callable(outcome) else outcome  # numbered by the savepoint's flush
        except OperationalError:
            raise
        except Quarantine as exc:
            return _Unhandled(str(exc))
        except Exception as exc:  # lose nothing: an unexpected failure is quarantined too
            log.exception("raw %s: unexpected failure", raw.id)
            return _Unhandled(f"unexpected {type(exc).__name__}: {exc}")


@dataclass
class _Unhandled:
    """A raw message to quarantine with ``reason``: no handler takes it, it cannot be
    parsed, or handling it failed."""

    reason: str


class _Outcomes:
    """What became of each raw row of a batch, written back in at most two statements
    (after the flush: a new ticket's number, named in the outcome, is known by then),
    all with the time they are written as ``processed_at``."""

    def __init__(self) -> None:
        self._done: list[dict[str, Any]] = []
        self._quarantined: list[dict[str, Any]] = []

    def add(self, raw: RawRow, outcome: Outcome | _Unhandled) -> str:
        if isinstance(outcome, _Unhandled):
            self._quarantined.append({"rid": raw.id, "text": outcome.reason[:2000]})
            return f"quarantined: {outcome.reason}"
        text = outcome() if callable(outcome) else outcome
        self._done.append({"rid": raw.id, "text": text[:2000]})
        return text

    def write(self, session: Session) -> None:
        conn = session.connection()
        at = utcnow()
        if self._done and conn.dialect.name == "postgresql":
            # One statement for the batch: as an executemany it was one UPDATE per row.
            conn.execute(_DONE_ALL, {
                "rids": [row["rid"] for row in self._done], "texts": [row["text"] for row in self._done],
                "at": at,
            })
            self._done = []
        for statement, rows in ((_DONE, self._done), (_QUARANTINED, self._quarantined)):
            if rows:
                conn.execute(statement, [{**row, "at": at} for row in rows])


class _Retry(Exception):
    """A message of an optimistic batch failed: run the batch again, carefully."""


def _serialize(session: Session, keys: Keys) -> None:
    """Wait for any other batch that holds mail of the same senders or Message-IDs, and
    keep them out until this one commits.

    Why: the doors' children (``--processors``) and the IMAP poller thread batches at the
    same time. Without this, a reply in one batch could miss its request, still
    uncommitted in another, and open a second ticket for one conversation; and two
    batches creating the same new contact made one of them redo its batch a message at a
    time. Waiting here comes before the batch's reads, so what it then reads includes
    the other batch's rows. Only the keys the batch looks up are taken: batches of
    different people run side by side.
    """
    names = {f"e:{email}" for email in keys.emails} | {f"m:{mid}" for mid in keys.message_ids}
    if names:
        session.execute(_LOCK_KEYS, {"keys": sorted(_lock_key(name) for name in names)})


def _lock_key(name: str) -> int:
    """A 64-bit advisory lock key for ``name``, hashed here: mail text may hold what no
    database text accepts (NUL, lone surrogates), which the fuzz test found."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lost_a_race(exc: OperationalError) -> bool:
    """A deadlock or serialization failure: retrying the same work will succeed."""
    return getattr(exc.orig, "sqlstate", None) in ("40P01", "40001")


def requeue(sessions: sessionmaker[Session], raw_id: int) -> None:
    """Put a quarantined message back to be processed (``helpdesk quarantine --retry``).

    Raises:
        LookupError: no such message, or it is not quarantined.
    """
    with sessions.begin() as session:
        raw = session.get(RawMessage, raw_id)
        if raw is None:
            raise LookupError(f"no quarantined message {raw_id}")
        if raw.status != "quarantined":
            raise LookupError(f"message {raw_id} is {raw.status}, not quarantined")
        raw.status = "pending"
        raw.error = None

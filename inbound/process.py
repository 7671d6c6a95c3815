"""Turning committed raw messages into ticket messages, once each.

The door has already answered; this step may run in the door's own process right after
the commit, in another process, or after a crash: it takes rows still ``pending`` (or
stuck ``processing`` from a process that died), handles each inside one transaction with
the row locked, and marks it ``done``. Anything that fails is ``quarantined`` with the
reason, never dropped; ``helpdesk quarantine --retry ID`` puts it back.

Errors::

    Quarantine          bad input: kept raw with the reason; an operator may retry it
    OperationalError    the database went away: the row stays pending, retried later
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from config.pipelines import Catalog
from config.settings import Settings
from models.base import utcnow
from models.message import RawMessage

log = logging.getLogger("helpdesk.inbound")

STALE_CLAIM = timedelta(minutes=2)


class Quarantine(Exception):
    """This message cannot be processed as it is; keep it raw with this reason."""


Handler = Callable[[Session, RawMessage, Settings, Catalog], str]


def _mail_handler() -> Handler:
    from inbound.mail import handle

    return handle


def _whatsapp_handler() -> Handler:
    from inbound.whatsapp import handle

    return handle


HANDLERS: dict[str, Callable[[], Handler]] = {
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
            found = self._handlers[source] = factory()
        return found

    def pending_ids(self, limit: int = 500) -> list[int]:
        stale = utcnow() - STALE_CLAIM
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(RawMessage.id)
                    .where(
                        or_(
                            RawMessage.status == "pending",
                            (RawMessage.status == "processing") & (RawMessage.claimed_at < stale),
                        )
                    )
                    .order_by(RawMessage.id)
                    .limit(limit)
                )
            )

    def process_pending(self, limit: int = 500) -> int:
        """Process what is waiting, oldest first; returns how many were handled."""
        count = 0
        for raw_id in self.pending_ids(limit):
            if self.process(raw_id) is not None:
                count += 1
        return count

    def process(self, raw_id: int) -> str | None:
        """Handle one raw message; None when another process has it or it is done."""
        try:
            with self.sessions.begin() as session:
                query = select(RawMessage).where(RawMessage.id == raw_id)
                if session.get_bind().dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                raw = session.scalar(query)
                if raw is None or raw.status in ("done", "quarantined"):
                    return None
                if raw.status == "processing" and raw.claimed_at and raw.claimed_at > utcnow() - STALE_CLAIM:
                    return None
                raw.attempts += 1
                outcome = self.handler(raw.source)(session, raw, self.settings, self.catalog)
                raw.status = "done"
                raw.outcome = outcome[:2000]
                raw.error = None
                raw.processed_at = utcnow()
            self.handled += 1
            log.info("raw %s: %s", raw_id, outcome)
            return outcome
        except OperationalError:
            raise
        except Quarantine as exc:
            return self._quarantine(raw_id, str(exc))
        except Exception as exc:  # lose nothing: an unexpected failure is quarantined too
            log.exception("raw %s: unexpected failure", raw_id)
            return self._quarantine(raw_id, f"unexpected {type(exc).__name__}: {exc}")

    def _quarantine(self, raw_id: int, reason: str) -> str:
        with self.sessions.begin() as session:
            session.execute(
                update(RawMessage)
                .where(RawMessage.id == raw_id)
                .values(status="quarantined", error=reason[:2000], processed_at=utcnow())
            )
        log.warning("raw %s quarantined: %s", raw_id, reason)
        return f"quarantined: {reason}"


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

"""The door's only duty: commit the raw bytes, then let the door answer.

Why a module of its own: SMTP, the MTA pipe, IMAP and the WhatsApp webhook all keep the
same way, and all must turn "cannot commit now" into the same temporary failure (SMTP
451, exit 75, HTTP 503) so that the sender retries instead of the message being lost.
"""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.base import utcnow
from models.message import RawMessage

# Built once: the door runs this for every message it accepts.
_KEEP = insert(RawMessage).returning(RawMessage.id)


class TemporaryFailure(Exception):
    """The message could not be kept now; the sender must retry (451 / 75 / 503)."""


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
    params = {
        "source": source, "data": data, "envelope_from": envelope_from, "envelope_to": envelope_to,
        "status": "pending", "attempts": 0, "received_at": utcnow(),
    }
    engine = sessions.kw["bind"]  # a bare connection: the ORM session costs 3x the CPU here
    try:
        with engine.begin() as conn:
            return int(conn.execute(_KEEP, params).scalar_one())
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise TemporaryFailure(f"cannot store the message now: {reason}") from exc

"""Recording a sent notification: one statement on PostgreSQL, four elsewhere.

A send is recorded only while the sender's claim holds (``claim_token``), and then, in the
same transaction: the row ``sent`` with the provider id, ``ticket.last_outbound_at``, the
outbound ``Message`` on the ticket (a reply's ``In-Reply-To`` finds the ticket by it), and
the survey's ``sent_at``. On PostgreSQL ``RECORD_SENT`` does all of it as data-modifying
CTEs hanging off the guarded ``UPDATE``: if the claim was taken over, that UPDATE returns
nothing and the other parts, which read its output, change nothing. Run on an autocommit
connection it is one round trip instead of BEGIN, four statements and COMMIT.

``record_sent_at_once`` runs it; ``record_sent`` and ``record_rest`` are the general
path, statement by statement in a transaction: other databases, and on every database a
staff reply (whose message exists already and only gets the real id) and a send on the
other channel (which rewrites the payload too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text, bindparam, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from models.base import UTCDateTime
from models.message import Message
from models.outbox import Outbox
from models.prepared import prepared
from models.survey import Survey
from models.ticket import Ticket

_SENT_VALUES = {
    "status": "sent", "channel": bindparam("channel"), "provider_id": bindparam("provider_id"),
    "sent_at": bindparam("now"), "last_error": None, "claim_token": None,
}
_SENT = (
    update(Outbox)
    .where(Outbox.id == bindparam("oid"), Outbox.claim_token == bindparam("token"))
    .values(_SENT_VALUES)
)
# last_outbound_at is not an edit of the ticket: keep updated_at (it has an onupdate).
_TOUCH_TICKET = (
    update(Ticket).where(Ticket.id == bindparam("tid"))
    .values(last_outbound_at=bindparam("now"), updated_at=Ticket.updated_at)
)
_SURVEY_SENT = (
    update(Survey).where(Survey.id == bindparam("sid")).values(sent_at=bindparam("now"), channel=bindparam("channel"))
)
_REPLY_MESSAGE = (
    update(Message).where(Message.outbox_id == bindparam("oid"))
    .values(channel=bindparam("channel"), external_id=bindparam("provider_id"))
)
_MESSAGES = Message.__table__
_INSERT_MESSAGE = {
    "postgresql": pg_insert(_MESSAGES).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(_MESSAGES).on_conflict_do_nothing(),
}
#: The outbound message's columns, from the parameters of ``record_sent``.
_MESSAGE_FIELDS = ("ticket_id", "channel", "external_id", "sender", "subject", "text", "outbox_id", "created_at")


def _record_sent_statement() -> Any:
    """``RECORD_SENT``: the guarded UPDATE and, reading its output, the other three parts.

    Its parameters are all ``r_*``: SQLAlchemy adds a parameter named like a column of an
    UPDATE's table to that UPDATE's SET clause (``subject`` would rewrite the ticket's).
    """
    sent = (
        update(Outbox)
        .where(Outbox.id == bindparam("r_oid"), Outbox.claim_token == bindparam("r_token"))
        .values(status="sent", channel=bindparam("r_channel"), provider_id=bindparam("r_provider_id"),
                sent_at=bindparam("r_now"), last_error=None, claim_token=None)
        .returning(Outbox.id, Outbox.ticket_id)
        .cte("sent")
    )
    touched = (
        update(Ticket).where(Ticket.id == sent.c.ticket_id)
        .values(last_outbound_at=bindparam("r_now"), updated_at=Ticket.updated_at)
        .cte("touched")
    )
    message = (
        pg_insert(_MESSAGES)
        .from_select(
            ["ticket_id", "channel", "direction", "external_id", "sender", "subject", "text", "threaded_by",
             "outbox_id", "created_at"],
            select(
                sent.c.ticket_id, bindparam("r_channel", type_=String), literal("out", String),
                bindparam("r_provider_id", type_=String), bindparam("r_sender", type_=String),
                bindparam("r_subject", type_=Text), bindparam("r_text", type_=Text),
                literal("notification", String), sent.c.id, bindparam("r_now", type_=UTCDateTime),
            ).where(sent.c.ticket_id.is_not(None)),
        )
        .on_conflict_do_nothing()  # a resend of a Message-ID already recorded
        .cte("message")
    )
    survey = (
        update(Survey)
        .where(Survey.id == bindparam("r_sid", type_=Integer), select(sent.c.id).exists())
        .values(sent_at=bindparam("r_now"), channel=bindparam("r_channel"))
        .cte("survey")
    )
    return select(func.count()).select_from(sent).add_cte(touched, message, survey)


#: Record a send in one statement (PostgreSQL); returns 1 while the claim held, else 0.
RECORD_SENT = _record_sent_statement()


def record_sent_at_once(conn: Connection, *, oid: int, token: str, ticket_id: int | None, survey_id: int | None,
                        channel: str, provider_id: str, sender: str, subject: str | None, text: str,
                        now: datetime) -> bool:
    """``RECORD_SENT`` on an autocommit connection (PostgreSQL); not for a staff reply.

    Returns:
        False when the claim had been taken over: then nothing was written.
    """
    [found] = prepared(RECORD_SENT, conn.dialect).run(conn, {
        "r_oid": oid, "r_token": token, "r_channel": channel, "r_provider_id": provider_id, "r_now": now,
        "r_sender": sender, "r_subject": subject, "r_text": text, "r_sid": survey_id,
    })
    return bool(next(iter(found.values())))


def record_sent(conn: Connection, *, oid: int, token: str, reply: bool, ticket_id: int | None,
                survey_id: int | None, channel: str, provider_id: str, sender: str, subject: str | None, text: str,
                now: datetime) -> bool:
    """Record a send on the row's own channel, statement by statement, in the caller's
    transaction.

    Parameters:
        reply: the row is a staff reply, whose message exists and only gets the real id.

    Returns:
        False when the claim had been taken over: then nothing was written.
    """
    params = {"oid": oid, "token": token, "channel": channel, "provider_id": provider_id, "now": now}
    if not conn.execute(_SENT, params).rowcount:
        return False
    record_rest(conn, oid=oid, ticket_id=ticket_id, survey_id=survey_id, channel=channel, provider_id=provider_id,
                sender=sender, subject=subject, text=text, now=now, reply=reply)
    return True


def record_rest(conn: Connection, *, oid: int, reply: bool, ticket_id: int | None, survey_id: int | None,
                channel: str, provider_id: str, sender: str, subject: str | None, text: str, now: datetime) -> None:
    """What goes with a row marked sent: the ticket's last outbound time, its message, the
    survey's ``sent_at`` (call in the transaction that marked it, after its guard held)."""
    if ticket_id is not None:
        conn.execute(_TOUCH_TICKET, {"tid": ticket_id, "now": now})
        if not (reply and conn.execute(_REPLY_MESSAGE, {"oid": oid, "channel": channel,
                                                        "provider_id": provider_id}).rowcount):
            values = dict(zip(_MESSAGE_FIELDS, (ticket_id, channel, provider_id, sender, subject, text, oid, now),
                              strict=True))
            conn.execute(_insert_message(conn.dialect.name), {
                **values, "direction": "out", "threaded_by": "notification", "reply_text": None, "html": None,
                "contact_id": None, "raw_id": None, "forwarded_by": None,
            })
    if survey_id is not None:
        conn.execute(_SURVEY_SENT, {"sid": survey_id, "now": now, "channel": channel})


def _insert_message(dialect: str) -> Any:
    """INSERT that ignores a resend of a Message-ID already recorded."""
    found = _INSERT_MESSAGE.get(dialect)
    return found if found is not None else insert(_MESSAGES)

"""What a send reads from the database, and the claim that takes a row: one round trip
on PostgreSQL.

A send needs the outbox row, its contact, its ticket (with vehicle, provider, account
executive and line items) and the Message-IDs of the ticket's mail. Read one statement
at a time that is five or six statements between BEGIN and COMMIT, and on a machine where
the worker, the database and the relay share two cores each round trip costs more CPU
(driver, SQLAlchemy, the server's parse and plan) than the query itself. So:

* **PostgreSQL**: ``CLAIM_AND_READ`` is the claim ``UPDATE ... RETURNING`` as a CTE and
  one ``SELECT`` over it that joins the contact and the ticket and gathers line items
  (``json_agg``) and the thread (``ARRAY(SELECT ...)``). Run on an autocommit connection
  it is a transaction of its own: the claim and the read commit together, in one round
  trip instead of seven or eight. A row someone else holds matches
  nothing and the statement returns no row, exactly like the plain claim.
  ``CLAIM_MANY_AND_READ`` does the same for all the rows of a job (an array of ids), one
  result row per row claimed.
* **Other databases** (SQLite for ``helpdesk run``): ``CLAIM`` and then ``read``, the
  same reads one by one, in the caller's transaction.

Both give a ``Snapshot``; ``outbound.compose.build_notification`` turns it into the
``Notification`` that is rendered and sent, so the two paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, Integer, String, Text, and_, any_, bindparam, cast, func, or_, select, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from models.contact import Contact, ContactEmail
from models.identity import NO_MESSAGE_ID
from models.message import Message
from models.outbox import Outbox
from models.ticket import LineItem, Provider, Ticket, Vehicle

#: How many Message-IDs go in References (the root plus the most recent ones).
REFERENCES_LIMIT = 10


@dataclass(frozen=True)
class ContactInfo:
    """The recipient, as read at claim time (duck-types ``Contact`` for
    ``models.notify.choose_channel`` and ``outbound.whatsapp.plan``)."""

    id: int
    name: str
    email: str | None
    phone: str | None
    whatsapp_address: str | None
    whatsapp_opt_out: bool
    last_whatsapp_in_at: datetime | None
    preferred_channel: str
    timezone: str | None
    locale: str | None


CONTACT_FIELDS = tuple(ContactInfo.__dataclass_fields__)


@dataclass(frozen=True)
class Snapshot:
    """One outbox row and everything its send reads, copied out of the database.

    Attributes:
        row: the outbox row's ``OUTBOX_COLUMNS`` by name.
        contact: None when the contact is gone.
        ticket: the ticket's ``TICKET_COLUMNS`` by name; None for a contact notice.
        items: the line items (kind, description, quantity, unit price) in order.
        thread_latest: the ticket's mail Message-IDs, newest first, one more than
            ``REFERENCES_LIMIT`` (our own id, if already recorded, is dropped later).
        thread_oldest: the two oldest, for the root of References.
    """

    row: Mapping[str, Any]
    contact: ContactInfo | None
    ticket: Mapping[str, Any] | None
    items: list[tuple[str, str, Decimal, Decimal]] = field(default_factory=list)
    thread_latest: list[str] = field(default_factory=list)
    thread_oldest: list[str] = field(default_factory=list)


def thread_ids(latest: list[str], oldest: list[str], *, exclude: str) -> list[str]:
    """References, oldest first: the root and the latest ids, without ``exclude`` (our own).

    Parameters:
        latest: newest first, at least ``REFERENCES_LIMIT + 1`` when there are that many.
        oldest: oldest first, at least two when there are that many.
    """
    recent = [mid for mid in latest if mid != exclude][:REFERENCES_LIMIT]
    recent.reverse()
    if len(recent) == REFERENCES_LIMIT:
        root = next((mid for mid in oldest if mid != exclude), None)
        if root is not None and root != recent[0]:
            recent = [root, *recent[1:]]
    return recent


# -- the statements, built once: building one costs more than running it -------------------

def _first_email(contact_id: Any) -> Any:
    return (
        select(ContactEmail.email).where(ContactEmail.contact_id == contact_id)
        .order_by(ContactEmail.id).limit(1).scalar_subquery()
    )


_Assignee = aliased(Contact)
OUTBOX_COLUMNS = (
    Outbox.id, Outbox.ticket_id, Outbox.contact_id, Outbox.channel, Outbox.template, Outbox.audience,
    Outbox.payload, Outbox.attempts, Outbox.status,
)
#: What makes a row claimable: pending and due, or sending with a claim older than ``stale``.
_CLAIMABLE = or_(
    and_(Outbox.status == "pending", Outbox.next_attempt_at <= bindparam("now")),
    and_(Outbox.status == "sending", Outbox.claimed_at < bindparam("stale")),
)
_TAKE = {"status": "sending", "claim_token": bindparam("token"), "claimed_at": bindparam("now"),
         "attempts": Outbox.attempts + 1}
#: Claim the row ``oid`` (see ``_CLAIMABLE``).
CLAIM = update(Outbox).where(Outbox.id == bindparam("oid"), _CLAIMABLE).values(_TAKE).returning(*OUTBOX_COLUMNS)
OUTBOX = select(*OUTBOX_COLUMNS).where(Outbox.id == bindparam("oid"))
CONTACT_COLUMNS = (
    Contact.id, Contact.name, _first_email(Contact.id).label("email"), Contact.phone, Contact.whatsapp_address,
    Contact.whatsapp_opt_out, Contact.last_whatsapp_in_at, Contact.preferred_channel, Contact.timezone,
    Contact.locale,
)
TICKET_COLUMNS = (
    Ticket.id, Ticket.number, Ticket.kind, Ticket.pipeline, Ticket.stage, Ticket.state, Ticket.subject,
    Ticket.inbox_address, Ticket.created_at, Ticket.appointment_at, Ticket.expected_end_at, Ticket.mileage,
    Ticket.warranty,
    Vehicle.vin, Vehicle.plate, Vehicle.make, Vehicle.model, Vehicle.year,
    Provider.name.label("provider_name"), Provider.address.label("provider_address"),
    Provider.phone.label("provider_phone"),
    _Assignee.id.label("assignee_id"), _Assignee.name.label("assignee_name"),
    _Assignee.phone.label("assignee_phone"), _first_email(_Assignee.id).label("assignee_email"),
)
_CONTACT = select(*CONTACT_COLUMNS).where(Contact.id == bindparam("cid"))
_TICKET = (
    select(*TICKET_COLUMNS)
    .select_from(Ticket)
    .outerjoin(Vehicle, Vehicle.id == Ticket.vehicle_id)
    .outerjoin(Provider, Provider.id == Ticket.provider_id)
    .outerjoin(_Assignee, _Assignee.id == Ticket.assignee_id)
    .where(Ticket.id == bindparam("tid"))
)
_ITEMS = (
    select(LineItem.kind, LineItem.description, LineItem.quantity, LineItem.unit_price)
    .where(LineItem.ticket_id == bindparam("tid")).order_by(LineItem.id)
)


def _thread_query(ticket_id: Any, newest_first: bool, limit: int) -> Any:
    """Message-IDs of the ticket's mail that a reply can refer to."""
    return (
        select(Message.external_id)
        .where(
            Message.ticket_id == ticket_id,
            Message.channel == "email",
            Message.external_id.not_like("local.%"),
            Message.external_id.not_like(f"%@{NO_MESSAGE_ID}"),  # ids made up for mail without one
        )
        .order_by(Message.id.desc() if newest_first else Message.id)
        .limit(limit)
    )


_THREAD_LATEST = _thread_query(bindparam("tid"), True, REFERENCES_LIMIT + 1)
_THREAD_OLDEST = _thread_query(bindparam("tid"), False, 2)


def read(conn: Connection, row: Mapping[str, Any]) -> Snapshot:
    """The reads of ``row`` (an outbox row's ``OUTBOX_COLUMNS``), one statement each."""
    found = conn.execute(_CONTACT, {"cid": row["contact_id"]}).first() if row["contact_id"] else None
    contact = ContactInfo(**found._asdict()) if found is not None else None
    tid = row["ticket_id"]
    ticket = conn.execute(_TICKET, {"tid": tid}).first() if tid is not None else None
    if ticket is None:
        return Snapshot(row=row, contact=contact, ticket=None)
    params = {"tid": tid}
    latest = list(conn.execute(_THREAD_LATEST, params).scalars())
    oldest = list(conn.execute(_THREAD_OLDEST, params).scalars()) if len(latest) >= REFERENCES_LIMIT else []
    return Snapshot(
        row=row, contact=contact, ticket=ticket._mapping,
        items=[tuple(item) for item in conn.execute(_ITEMS, params)],  # type: ignore[misc]
        thread_latest=latest, thread_oldest=oldest,
    )


def _claim_many() -> Any:
    """``CLAIM`` for every id in the array ``oids`` (PostgreSQL only).

    The rows are locked first, in id order (``SELECT ... ORDER BY id FOR UPDATE``), and
    only then updated: two jobs holding some of the same ids (a publication and a sweep of
    the same rows) then wait for each other instead of deadlocking. A row another claim
    took meanwhile no longer matches when its lock is granted (PostgreSQL re-reads it), so
    it is skipped, exactly like the single-row claim.
    """
    locked = (
        select(Outbox.id)
        .where(Outbox.id == any_(bindparam("oids", type_=ARRAY(Integer))), _CLAIMABLE)
        .order_by(Outbox.id)
        .with_for_update()
        .cte("locked")
    )
    return update(Outbox).where(Outbox.id == locked.c.id).values(_TAKE).returning(*OUTBOX_COLUMNS)


#: Claim the rows ``oids`` (an array); bind ``now``, ``stale``, ``token`` as for CLAIM.
CLAIM_MANY = _claim_many()
#: Hand back the rows ``oids`` claimed under ``token`` but not sent: due again, for the
#: sweeper, and the attempt that never happened uncounted.
RELEASE = (
    update(Outbox)
    .where(Outbox.id == any_(bindparam("oids", type_=ARRAY(Integer))), Outbox.claim_token == bindparam("token"))
    .values(status="pending", claim_token=None, claimed_at=None, attempts=Outbox.attempts - 1)
)


def _claim_and_read(claim: Any) -> Any:
    """``claim`` as a CTE and the reads as one SELECT over it (PostgreSQL only): one
    result row per row claimed, in id order."""
    claimed = claim.cte("claimed")
    c = claimed.c
    items = (
        select(func.json_agg(aggregate_order_by(
            # Numerics as text: JSON numbers would come back as floats.
            func.json_build_array(LineItem.kind, LineItem.description, cast(LineItem.quantity, Text),
                                  cast(LineItem.unit_price, Text)),
            LineItem.id,
        )))
        .where(LineItem.ticket_id == c.ticket_id)
        .scalar_subquery()
    )
    return (
        select(
            *c,
            *(col.label(f"c_{col.key}") for col in CONTACT_COLUMNS),
            *(col.label(f"t_{col.key}") for col in TICKET_COLUMNS),
            items.label("items"),
            func.array(_thread_query(c.ticket_id, True, REFERENCES_LIMIT + 1).scalar_subquery(),
                       type_=ARRAY(String)).label("thread_latest"),
            func.array(_thread_query(c.ticket_id, False, 2).scalar_subquery(),
                       type_=ARRAY(String)).label("thread_oldest"),
        )
        .select_from(claimed)
        .outerjoin(Contact, Contact.id == c.contact_id)
        .outerjoin(Ticket, Ticket.id == c.ticket_id)
        .outerjoin(Vehicle, Vehicle.id == Ticket.vehicle_id)
        .outerjoin(Provider, Provider.id == Ticket.provider_id)
        .outerjoin(_Assignee, _Assignee.id == Ticket.assignee_id)
        .order_by(c.id)
    )


#: Claim and read in one statement; bind ``oid``, ``now``, ``stale``, ``token`` as for CLAIM.
CLAIM_AND_READ = _claim_and_read(CLAIM)
#: The same for the rows ``oids`` (an array): one statement for a whole job's rows.
CLAIM_MANY_AND_READ = _claim_and_read(CLAIM_MANY)
_ROW_KEYS = tuple(col.key for col in OUTBOX_COLUMNS)
_TICKET_KEYS = tuple(col.key for col in TICKET_COLUMNS)


def from_claim_and_read(m: Mapping[str, Any]) -> Snapshot:
    """The ``Snapshot`` in one row of ``CLAIM_AND_READ``, by column key."""
    row = {key: m[key] for key in _ROW_KEYS}
    contact = ContactInfo(**{key: m[f"c_{key}"] for key in CONTACT_FIELDS}) if m["c_id"] is not None else None
    if m["t_id"] is None:
        return Snapshot(row=row, contact=contact, ticket=None)
    items = [(kind, description, Decimal(quantity), Decimal(price))
             for kind, description, quantity, price in (m["items"] or ())]
    return Snapshot(
        row=row, contact=contact, ticket={key: m[f"t_{key}"] for key in _TICKET_KEYS}, items=items,
        thread_latest=list(m["thread_latest"] or ()), thread_oldest=list(m["thread_oldest"] or ()),
    )

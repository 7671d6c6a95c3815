"""Where the IMAP poller is in each mailbox, and who holds the mailbox's lease."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Integer, String, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, UTCDateTime, utcnow


class MailboxState(Base):
    __tablename__ = "mailbox_state"

    mailbox: Mapped[str] = mapped_column(String(400), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=0)


def ensure_row(session: Session, mailbox: str) -> None:
    """Create the mailbox's row if it is missing (a racing poller may have made it)."""
    if session.get(MailboxState, mailbox) is not None:
        return
    try:
        with session.begin_nested():
            session.add(MailboxState(mailbox=mailbox, last_uid=0, version=0))
    except IntegrityError:
        pass


def take_lease(session: Session, mailbox: str, owner: str, length: timedelta) -> bool:
    """Take or renew the mailbox's lease with one compare-and-set; True when ``owner``
    holds it. A lease nobody renewed in time is free to take."""
    now = utcnow()
    return session.execute(
        update(MailboxState)
        .where(
            MailboxState.mailbox == mailbox,
            or_(MailboxState.lease_owner.is_(None), MailboxState.lease_owner == owner,
                MailboxState.lease_until.is_(None), MailboxState.lease_until < now),
        )
        .values(lease_owner=owner, lease_until=now + length, version=MailboxState.version + 1)
    ).rowcount == 1


def release_lease(session: Session, mailbox: str, owner: str) -> None:
    """Give the lease up at once (a clean stop), so another poller need not wait it out."""
    session.execute(
        update(MailboxState)
        .where(MailboxState.mailbox == mailbox, MailboxState.lease_owner == owner)
        .values(lease_owner=None, lease_until=None, version=MailboxState.version + 1)
    )

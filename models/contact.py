"""Companies (client accounts), contacts and their addresses.

A contact may have several e-mail addresses and one WhatsApp number; lookups by either
must be a single indexed query because threading does one per inbound message.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models import deferred
from models.base import Base, UTCDateTime, storable, utcnow

ROLES = ("vehicle_user", "fleet_manager", "staff")
CHANNELS = ("email", "whatsapp")
# Contacts created in this session: they have no history to look up (acknowledgements).


class Company(Base):
    __tablename__ = "companies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    mail_domain: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    contacts: Mapped[list[Contact]] = relationship(back_populates="company")


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True)
    role: Mapped[str] = mapped_column(String(20), default="vehicle_user")
    preferred_channel: Mapped[str] = mapped_column(String(10), default="email")
    locale: Mapped[str] = mapped_column(String(10), default="es_MX")
    timezone: Mapped[str] = mapped_column(String(40), default="America/Mexico_City")
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    whatsapp_address: Mapped[str | None] = mapped_column(String(40))
    whatsapp_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    last_whatsapp_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    company: Mapped[Company | None] = relationship(back_populates="contacts")
    emails: Mapped[list[ContactEmail]] = relationship(
        back_populates="contact", cascade="all, delete-orphan", order_by="ContactEmail.id"
    )

    @property
    def email(self) -> str | None:
        """The first address: where mail to this contact goes."""
        return self.emails[0].email if self.emails else None

    def display(self) -> str:
        return self.name or self.email or self.phone or f"contact {self.id}"


class ContactEmail(Base):
    __tablename__ = "contact_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)

    contact: Mapped[Contact] = relationship(back_populates="emails")


def normalize_email(address: str) -> str:
    return address.strip().lower()


_BY_EMAIL = select(Contact).join(ContactEmail).where(ContactEmail.email == bindparam("email"))


def find_by_email(session: Session, address: str) -> Contact | None:
    # A statement built once: this lookup runs for every inbound mail.
    return session.scalar(_BY_EMAIL, {"email": normalize_email(address)})


def find_by_phone(session: Session, e164: str) -> Contact | None:
    return session.scalar(select(Contact).where(Contact.phone == e164))


def company_for_domain(session: Session, domain: str) -> Company | None:
    return session.scalar(select(Company).where(func.lower(Company.mail_domain) == domain.lower()))


def get_or_create_by_email(
    session: Session, address: str, name: str = "", *, role: str | None = None
) -> Contact:
    """The contact owning ``address``, created (with its domain's company) when unknown.

    A new contact is only added to the session: it is written with the rest of the
    batch at the next flush. Two doors may meet the same new sender at once; the unique
    address makes the second flush raise IntegrityError, and the caller runs its unit of
    work again (the inbound Processor does), which then finds the winner's row. No
    savepoint here: they cost two round trips per message on the hot path.
    """
    from models.lookups import lookups

    address = normalize_email(address)
    known = lookups(session)
    found = known.contact_by_email(address)
    if found is not None:
        if name and not found.name:
            deferred.change(session, found, name=name)
        return found
    company = known.company_for_domain(address.rsplit("@", 1)[-1])
    values = {"name": storable(name) or "", "company_id": company.id if company else None,
              "role": role or "vehicle_user"}
    if deferred.is_deferring(session):  # a mail batch: plain INSERTs after the flush
        contact = deferred.new_object(Contact, emails=[deferred.new_object(ContactEmail, email=address)], **values)
        deferred.defer_new(session, contact, _CONTACT_COLUMNS, {})
        deferred.defer(session, ContactEmail.__table__, {"email": address}, {"contact_id": contact})
    else:
        contact = Contact(**values)
        contact.emails.append(ContactEmail(email=address))
        session.add(contact)
    known.added_contact(contact, address)
    return contact


#: The columns a new contact of a mail batch is written with (the rest: defaults).
_CONTACT_COLUMNS = ("name", "company_id", "role")


def get_or_create_by_phone(
    session: Session, e164: str, name: str = "", whatsapp_address: str | None = None
) -> Contact:
    """The contact with this E.164 number, created when unknown (named by the profile)."""
    from models.lookups import lookups

    found = find_by_phone(session, e164)
    if found is None:
        contact = Contact(
            name=name, phone=e164, whatsapp_address=whatsapp_address,
            preferred_channel="whatsapp",
        )
        try:
            with session.begin_nested():
                session.add(contact)
                session.flush()
            lookups(session).added_contact(contact)
            return contact
        except IntegrityError:
            found = find_by_phone(session, e164)
            if found is None:
                raise
    if name and not found.name:
        found.name = name
    if whatsapp_address and found.whatsapp_address != whatsapp_address:
        found.whatsapp_address = whatsapp_address
    return found


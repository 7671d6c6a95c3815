"""The ``whatsapp`` handler: a committed Twilio webhook body becomes a ticket message.

The web door (``worker.web``) has checked the signature, kept the form body exactly as
Twilio posted it (``RawMessage.data``) and answered; ``inbound.process.Processor`` calls
``handle`` inside one transaction. Here the form is read, the sender becomes a contact
(by E.164, so ``+52 1 55…`` and ``+52 55…`` are one person), opt-out words are obeyed, and
``inbound.whatsapp_thread`` decides where the message goes.

Each MessageSid is stored once: a Message row (channel ``whatsapp``, external id the sid)
is the claim, backed by the unique constraint; a second delivery of the same sid, even
processed at the same moment by another process, rolls its savepoint back and adds nothing.

Errors::

    Quarantine      the body is not a Twilio message form (no MessageSid, no From, a
                    sender that is not a phone number): kept raw with the reason
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qsl

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config.pipelines import Catalog
from config.settings import Settings
from inbound.process import Quarantine, RawRow
from inbound.whatsapp_words import location_text, opt_word
from models.base import utcnow
from models.contact import Contact, get_or_create_by_phone
from models.message import Message
from models.notify import enqueue
from models.outbox import Outbox
from models.phones import InvalidPhone, normalize_phone

MAX_MEDIA = 20
#: A repeated STOP/ALTA within this time is a duplicate delivery, not a new request.
CONFIRM_QUIET = timedelta(minutes=10)


@dataclass(frozen=True)
class Media:
    url: str
    content_type: str


@dataclass(frozen=True)
class WhatsAppMessage:
    """The fields of Twilio's inbound-message webhook that we use."""

    sid: str
    sender: str  # the From value, ``whatsapp:+5215512345678``: where replies go
    profile_name: str = ""
    wa_id: str | None = None
    body: str = ""
    replied_sid: str | None = None
    button_payload: str | None = None
    location: str | None = None
    media: list[Media] = field(default_factory=list)


def parse_form(data: bytes) -> WhatsAppMessage:
    """Read the urlencoded body Twilio posted.

    Raises:
        Quarantine: not UTF-8 form data, or no MessageSid / From.
    """
    try:
        pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Quarantine(f"not a Twilio form body: {exc}") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value.replace("\x00", ""))  # PostgreSQL text cannot hold NUL
    sid = (form.get("MessageSid") or form.get("SmsMessageSid") or "").strip()
    sender = (form.get("From") or "").strip()
    if not sid or len(sid) > 200:
        raise Quarantine("Twilio form without a usable MessageSid")
    if not sender:
        raise Quarantine(f"Twilio message {sid} without From")
    try:
        count = min(int(form.get("NumMedia") or 0), MAX_MEDIA)
    except ValueError:
        count = 0
    media = [
        Media(url=form[f"MediaUrl{i}"].strip(), content_type=form.get(f"MediaContentType{i}", "").strip())
        for i in range(count)
        if form.get(f"MediaUrl{i}", "").strip().lower().startswith(("https://", "http://"))
    ]
    return WhatsAppMessage(
        sid=sid,
        sender=sender[:40],
        profile_name=" ".join((form.get("ProfileName") or "").split())[:200],
        wa_id=(form.get("WaId") or "").strip() or None,
        body=(form.get("Body") or "").strip(),
        replied_sid=(form.get("OriginalRepliedMessageSid") or "").strip() or None,
        button_payload=(form.get("ButtonPayload") or "").strip() or None,
        location=location_text(form.get("Latitude"), form.get("Longitude"), form.get("Label"),
                               form.get("Address")),
        media=media,
    )


def sender_phone(message: WhatsAppMessage) -> str:
    """The sender's E.164 number, from From (or WaId when From is not a number).

    Raises:
        Quarantine: neither is a phone number.
    """
    candidates = [message.sender] + ([f"+{message.wa_id.lstrip('+')}"] if message.wa_id else [])
    for candidate in candidates:
        try:
            return normalize_phone(candidate)
        except InvalidPhone:
            continue
    raise Quarantine(f"WhatsApp message {message.sid}: sender {message.sender!r} is not a phone number")


def already_stored(session: Session, sid: str) -> bool:
    return session.scalar(
        select(Message.id).where(Message.channel == "whatsapp", Message.external_id == sid)
    ) is not None


def handle(session: Session, raw: RawRow, settings: Settings, catalog: Catalog) -> str:
    """Thread one committed WhatsApp message; return what happened, for the raw row."""
    from inbound.whatsapp_thread import route

    message = parse_form(raw.data)
    if already_stored(session, message.sid):
        return f"duplicate {message.sid}"
    contact = get_or_create_by_phone(
        session, sender_phone(message), message.profile_name, whatsapp_address=message.sender
    )
    now = utcnow()
    if contact.last_whatsapp_in_at is None or contact.last_whatsapp_in_at < now:
        contact.last_whatsapp_in_at = now
    if not (message.body or message.media or message.location):
        # Nothing a person could read (an unsupported message type): no ticket, no answer.
        return f"empty message {message.sid} ignored"
    word = opt_word(message.body) if not message.media and not message.location else None
    if word is not None:
        return opt(session, contact, word, message)
    try:
        with session.begin_nested():
            return route(session, message, contact, raw, settings, catalog)
    except IntegrityError:
        # Another process stored this sid first (its insert held the key): nothing to add.
        if already_stored(session, message.sid):
            return f"duplicate {message.sid}"
        raise


def opt(session: Session, contact: Contact, word: str, message: WhatsAppMessage) -> str:
    """STOP/BAJA opts out of WhatsApp, ALTA/START back in; both confirmed on WhatsApp.

    The change is one conditional UPDATE, so two deliveries of the same word change it
    once; a word repeated while nothing changes is confirmed again only after a quiet
    time (the customer asking twice deserves an answer, a retried webhook does not).
    """
    opting_out = word == "out"
    template = "optout_confirm" if opting_out else "optin_confirm"
    changed = session.execute(
        update(Contact)
        .where(Contact.id == contact.id, Contact.whatsapp_opt_out.is_not(opting_out))
        .values(whatsapp_opt_out=opting_out)
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if not changed:
        recent = session.scalar(
            select(func.count(Outbox.id)).where(
                Outbox.contact_id == contact.id, Outbox.template == template,
                Outbox.created_at >= utcnow() - CONFIRM_QUIET,
            )
        )
        if recent:
            return f"{template} already sent to contact {contact.id} ({message.sid})"
    enqueue(session, ticket=None, contact=contact, template=template,
            payload={"message_sid": message.sid}, channel="whatsapp")
    state = "out of" if opting_out else "back into"
    return f"contact {contact.id} opted {state} WhatsApp ({message.sid})"

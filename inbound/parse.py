"""Parse raw RFC 5322 bytes into a ``ParsedMessage``: once, on bytes, never raising for mess.

Real mail is broken in every way a standard allows and some it does not: wrong or
invented charsets, 8-bit bytes in headers, lost MIME boundaries, bad base64. A helpdesk
cannot answer "your mail was malformed" to a customer, so every such problem degrades to
the best reading we can make and leaves a human-readable note in ``defects``. Only input
that is not a message at all (no headers) raises ``UnparseableMessage``, so the caller
keeps it in quarantine.

Headers are read from the parser's raw values and decoded here (RFC 2047, 8-bit repair)
rather than through ``policy.default``'s header objects: it is faster, and those objects
can raise on headers broken in ways we must tolerate.

Error tree::

    UnparseableMessage   not a message (empty, no headers): quarantine the raw bytes
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from functools import cached_property, lru_cache

from inbound.html import html_to_text, sanitize_html
from inbound.mime import (
    _ID,
    _PARSER,
    _SURROGATE,
    _describe_defect,
    _Mime,
    _mime,
    _payload_bytes,
    _raw_payload,
    _repair_8bit,
    _repair_multipart,
    _unfold,
    clean_filename,
    decode_bytes,
    decode_words,
)

_MAX_DEPTH = 30  # MIME nesting deeper than this is an attack or a bug, not a mail

# Header names whose presence shows the bytes are meant as a message.
_MESSAGE_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "received",
        "return-path",
        "mime-version",
        "content-type",
        "reply-to",
        "in-reply-to",
        "references",
        "delivered-to",
    }
)
_SINGLE_HEADERS = ("from", "to", "cc", "subject", "date", "message-id", "in-reply-to")
# Labels that mean "latin-1" but are nearly always Windows-1252 in practice (WHATWG).


class UnparseableMessage(Exception):
    """The bytes are not a mail message at all; keep them raw in quarantine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Address:
    """A mailbox: display name (decoded) and lower-cased address; either may be missing."""

    name: str | None
    email: str | None


@dataclass(eq=False)
class Attachment:
    """A file carried by the message. ``filename`` is display data only, never a path."""

    filename: str | None
    content_type: str
    size: int
    sha256: str
    data: bytes = field(repr=False)
    inline: bool = False
    content_id: str | None = None


@dataclass(eq=False)
class ParsedMessage:
    """What inbound steps need from one message; ``message`` is the parsed original.

    ``headers`` maps each lower-cased header name to its first value, unfolded and with
    8-bit bytes repaired but not RFC 2047 decoded (use ``header()`` for that).
    ``rfc822_parts`` are attached messages (forwards, a bounce's original);
    ``delivery_status`` and ``rfc822_headers`` are the machine parts of delivery reports.
    """

    message: EmailMessage = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    from_: Address
    to: list[str]
    cc: list[str]
    reply_to: list[str]
    subject: str
    date: datetime | None
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    text: str
    attachments: list[Attachment]
    content_type: str = "text/plain"
    rfc822_parts: list[EmailMessage] = field(default_factory=list, repr=False)
    delivery_status: list[EmailMessage | str] = field(default_factory=list, repr=False)
    rfc822_headers: list[str] = field(default_factory=list, repr=False)
    defects: list[str] = field(default_factory=list)
    unsafe_html: str | None = field(default=None, repr=False)

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, RFC 2047 decoded, or None when absent."""
        raw = self.headers.get(name.lower())
        return None if raw is None else decode_words(raw, [])

    @cached_property
    def html(self) -> str | None:
        """The HTML body sanitized for display (computed on first use: nh3 is not free)."""
        return None if self.unsafe_html is None else sanitize_html(self.unsafe_html)

    @cached_property
    def reply_text(self) -> str:
        """Only the new text of the message: quoted history and signature cut."""
        from inbound.quotes import cut_reply

        return cut_reply(self.text)


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse raw RFC 5322 bytes. Raises ``UnparseableMessage`` only for non-messages."""
    if not raw or not raw.strip():
        raise UnparseableMessage("empty input")
    try:
        message = _PARSER.parsebytes(raw)
    except Exception as exc:  # the stdlib parser is meant never to raise; be sure
        raise UnparseableMessage(f"the MIME parser failed: {type(exc).__name__}") from exc
    names = {name.lower() for name, _ in message.raw_items()}
    if not names & _MESSAGE_HEADERS:
        raise UnparseableMessage("no message headers found")
    try:
        return parse_email_message(message)
    except (RecursionError, MemoryError) as exc:
        raise UnparseableMessage(f"message too deeply nested: {type(exc).__name__}") from exc


def parse_email_message(message: EmailMessage) -> ParsedMessage:
    """Extract a ``ParsedMessage`` from an already parsed message (an attached one too)."""
    defects: list[str] = []
    headers: dict[str, str] = {}
    counts: dict[str, int] = {}
    addresses: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        key = name.lower()
        value = _unfold(str(value))
        if _SURROGATE.search(value):
            value = _repair_8bit(value, name, defects)
        counts[key] = counts.get(key, 0) + 1
        headers.setdefault(key, value)
        if key in ("to", "cc", "reply-to"):  # several To: lines all count
            addresses.setdefault(key, []).append(value)
    for key in _SINGLE_HEADERS:
        if counts.get(key, 0) > 1:
            defects.append(f"{counts[key]} {key.title()} headers; the first was used")

    sender = _first_address(headers.get("from") or headers.get("sender"), defects)
    if "from" not in headers:
        defects.append("missing From header")
    if "message-id" not in headers:
        defects.append("missing Message-ID header")
    ids = _ids(headers.get("message-id", ""))
    body = _Body(defects)
    body.collect(message)
    text = "\n\n".join(t for t in body.texts if t.strip())
    if not body.texts and body.htmls:
        text = html_to_text("\n".join(body.htmls))
    return ParsedMessage(
        message=message,
        headers=headers,
        from_=sender,
        to=_address_list(addresses.get("to", []), defects),
        cc=_address_list(addresses.get("cc", []), defects),
        reply_to=_address_list(addresses.get("reply-to", []), defects),
        subject=decode_words(headers.get("subject", ""), defects).strip(),
        date=_date(headers.get("date"), defects),
        message_id=ids[0] if ids else (headers.get("message-id", "").strip(" <>") or None),
        in_reply_to=_ids(headers.get("in-reply-to", "")),
        references=_ids(headers.get("references", "")),
        text=text,
        attachments=body.attachments,
        content_type=body.root_type,
        rfc822_parts=body.rfc822_parts,
        delivery_status=body.delivery_status,
        rfc822_headers=body.rfc822_headers,
        defects=defects,
        unsafe_html="\n".join(body.htmls) if body.htmls else None,
    )


class _Body:
    """One walk over the MIME tree, sorting parts into text, HTML, files and reports.

    The walk does not enter attached messages: their text is the forwarded mail's, not
    this one's, and they are kept whole in ``rfc822_parts``.
    """

    def __init__(self, defects: list[str]) -> None:
        self.defects = defects
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[Attachment] = []
        self.rfc822_parts: list[EmailMessage] = []
        self.delivery_status: list[EmailMessage | str] = []
        self.rfc822_headers: list[str] = []
        self.root_type = "text/plain"
        self._seen: set[int] = set()

    def collect(self, message: EmailMessage) -> None:
        self._note_defects(message, "message")
        stack: list[tuple[EmailMessage, int]] = [(message, 0)]
        index = 0
        while stack:
            part, depth = stack.pop()
            index += 1
            try:
                mime = _mime(part, self.defects)
            except Exception:  # a header too broken even to split: read as plain text
                self.defects.append(f"part {index}: unreadable MIME headers")
                mime = _Mime("text/plain", {}, None, None, "", None)
            if index == 1:
                self.root_type = mime.ctype
            try:
                self._visit(part, mime, depth, index, stack)
            except Exception as exc:  # one bad part must not lose the rest of the mail
                self.defects.append(f"part {index} ({mime.ctype}) skipped: {type(exc).__name__}")

    def _visit(self, part: EmailMessage, mime: _Mime, depth: int, index: int, stack: list) -> None:
        ctype = mime.ctype
        where = "body" if index == 1 else f"part {index} ({ctype})"
        if index > 1:
            self._note_defects(part, where)
        payload = _raw_payload(part)
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            self.delivery_status.append(part if isinstance(payload, list) else str(payload))
            return
        if ctype in ("message/rfc822", "message/global"):
            if isinstance(payload, list) and payload:
                self.rfc822_parts.append(payload[0])
                return
        elif isinstance(payload, list):
            if depth >= _MAX_DEPTH:
                self.defects.append(f"MIME nesting deeper than {_MAX_DEPTH}; rest ignored")
                return
            stack.extend((child, depth + 1) for child in reversed(payload))
            return
        elif ctype.startswith("multipart/"):
            repaired = _repair_multipart(part, ctype, mime.cte, self.defects)
            if repaired is not None:
                stack.append((repaired, depth + 1))
                return
            ctype = "text/plain"
        data = _payload_bytes(part, mime.cte, where, self.defects)
        if ctype == "text/rfc822-headers":
            self.rfc822_headers.append(decode_bytes(data, mime.params.get("charset"), where, []))
            return
        if ctype in ("text/plain", "text/html") and mime.disposition != "attachment" and not mime.filename:
            text = decode_bytes(data, mime.params.get("charset"), where, self.defects)
            (self.texts if ctype == "text/plain" else self.htmls).append(text)
            return
        self.attachments.append(
            Attachment(
                filename=clean_filename(mime.filename),
                content_type=ctype,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                data=data,
                inline=mime.disposition == "inline" or (mime.disposition is None and mime.content_id is not None),
                content_id=mime.content_id,
            )
        )

    def _note_defects(self, part: EmailMessage, where: str) -> None:
        """Turn the stdlib's defect objects into sentences, once per defect."""
        for defect in getattr(part, "defects", None) or ():
            if id(defect) not in self._seen:
                self._seen.add(id(defect))
                self.defects.append(f"{where}: {_describe_defect(defect)}")


def _address_pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    """``getaddresses``, remembered for short header values. Why: since its strict mode
    (Python 3.11.7) it costs a tenth of parsing a mail, and the same From, To and Cc
    lines come again and again (a conversation, the inbox address). Long lists are not
    kept, so the table stays small. Callers must not change the list."""
    if sum(len(v) for v in values) > 1000:
        return getaddresses(list(values))
    return _remembered_pairs(values)


@lru_cache(maxsize=4096)
def _remembered_pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    return getaddresses(list(values))


def _first_address(raw: str | None, defects: list[str]) -> Address:
    if not raw:
        return Address(None, None)
    pairs = _address_pairs((raw,))
    for name, email in pairs:
        if "@" in email:
            return Address(decode_words(name, defects).strip() or None, email.strip().lower())
    name = decode_words(pairs[0][0] if pairs else raw, defects).strip()
    defects.append(f"no address in From header {raw[:60]!r}")
    return Address(name or None, None)


def _address_list(values: list[str], defects: list[str]) -> list[str]:
    result: list[str] = []
    for _, email in _address_pairs(tuple(values)) if values else []:
        email = email.strip().lower()
        if "@" in email and email not in result:
            result.append(email)
    return result


def _ids(value: str) -> list[str]:
    found = _ID.findall(value)
    if found or not value.strip():
        return found
    return [token.strip("<>,") for token in value.split() if token.strip("<>,")]


def _date(value: str | None, defects: list[str]) -> datetime | None:
    if not value:
        defects.append("missing Date header")
        return None
    parsed = _read_date(value) if len(value) <= 200 else _read_date.__wrapped__(value)
    if parsed is None:
        defects.append(f"unreadable Date header {value[:60]!r}")
    return parsed


@lru_cache(maxsize=1024)
def _read_date(value: str) -> datetime | None:
    """The Date header as an aware datetime, None when unreadable; remembered, since
    mail arriving in the same second carries the same value (datetimes are immutable)."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)



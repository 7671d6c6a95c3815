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

import base64
import binascii
import codecs
import hashlib
import quopri
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.quoprimime import header_decode
from email.utils import decode_params, getaddresses, parsedate_to_datetime
from functools import cached_property

from inbound.html import html_to_text, sanitize_html

_PARSER = BytesParser(policy=policy.default)
_MAX_DEPTH = 30  # MIME nesting deeper than this is an attack or a bug, not a mail

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_SPACE_BETWEEN_WORDS = re.compile(r"(\?=)\s+(?==\?)")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r?\n$")
_ID = re.compile(r"<([^<>\s]+)>")
_C1 = re.compile(r"[\x80-\x9f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_BOUNDARY_LINE = re.compile(rb"^--([^\s-][^\r\n]{0,69}?)\s*$", re.M)

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
_LATIN1_LABELS = frozenset({"iso-8859-1", "iso8859-1", "latin-1", "latin1", "us-ascii", "ascii"})


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


def decode_bytes(data: bytes, charset: str | None, where: str, defects: list[str]) -> str:
    """Text from bytes: declared charset, then utf-8, cp1252 and latin-1; never raises.

    A latin-1 label on text holding C1 control bytes means the sender wrote Windows-1252
    (curly quotes, euro sign, dashes), as the WHATWG encoding standard also assumes.
    """
    label = (charset or "").strip().strip('"').lower()
    if label:
        try:
            info = codecs.lookup(label)
        except (LookupError, ValueError):
            info = None
        if info is None or not getattr(info, "_is_text_encoding", True):
            defects.append(f"{where}: unknown charset {label[:40]!r}")
            codec = ""
        else:
            codec = info.name
    else:
        codec = ""
    if codec:
        try:
            text = data.decode(codec)
        except (UnicodeError, LookupError, ValueError):  # idna & co raise UnicodeError
            defects.append(f"{where}: text is not valid {label}")
        else:
            if label in _LATIN1_LABELS and _C1.search(text):
                try:
                    text = data.decode("cp1252")
                except UnicodeDecodeError:
                    return text
                defects.append(f"{where}: labelled {label} but written in windows-1252")
            return text
    for fallback in ("utf-8", "cp1252"):
        try:
            text = data.decode(fallback)
        except UnicodeDecodeError:
            continue
        if label and fallback != codec:
            defects.append(f"{where}: decoded as {fallback}")
        return text
    defects.append(f"{where}: decoded as latin-1")
    return data.decode("latin-1", errors="replace")


def decode_words(value: str, defects: list[str]) -> str:
    """Decode RFC 2047 encoded words, tolerating unknown charsets and bad base64."""
    if "=?" not in value:
        return value
    value = _SPACE_BETWEEN_WORDS.sub(r"\1", value)

    def word(match: re.Match[str]) -> str:
        charset, encoding, encoded = match.groups()
        charset = charset.split("*", 1)[0]
        try:
            if encoding in "bB":
                encoded += "=" * (-len(encoded) % 4)
                data = base64.b64decode(encoded)
            else:
                data = header_decode(encoded).encode("latin-1", errors="replace")
        except (binascii.Error, ValueError):
            defects.append(f"bad encoded word {match.group(0)[:40]!r}")
            return match.group(0)
        return decode_bytes(data, charset, "header", defects)

    return _ENCODED_WORD.sub(word, value)


def clean_filename(name: str | None) -> str | None:
    """A filename for display: no directories, no control characters, not empty."""
    if not name:
        return None
    name = decode_words(str(name), [])
    name = re.split(r"[\\/]", name)[-1]
    name = _CONTROL.sub("", name).strip().lstrip(".").strip()
    return name[:255] or None


def _unfold(value: str) -> str:
    return _FOLD.sub("", value).strip()


def _repair_8bit(value: str, name: str, defects: list[str]) -> str:
    """Raw 8-bit header bytes (forbidden, common): utf-8 if they are, else cp1252."""
    data = value.encode("ascii", "surrogateescape")
    for codec in ("utf-8", "cp1252"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        defects.append(f"header {name} has raw 8-bit bytes (read as {codec})")
        return text
    defects.append(f"header {name} has raw 8-bit bytes (read as latin-1)")
    return data.decode("latin-1")


def _first_address(raw: str | None, defects: list[str]) -> Address:
    if not raw:
        return Address(None, None)
    pairs = getaddresses([raw])
    for name, email in pairs:
        if "@" in email:
            return Address(decode_words(name, defects).strip() or None, email.strip().lower())
    name = decode_words(pairs[0][0] if pairs else raw, defects).strip()
    defects.append(f"no address in From header {raw[:60]!r}")
    return Address(name or None, None)


def _address_list(values: list[str], defects: list[str]) -> list[str]:
    result: list[str] = []
    for _, email in getaddresses(values) if values else []:
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
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append(f"unreadable Date header {value[:60]!r}")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _safe(getter):  # type: ignore[no-untyped-def]
    """Call a stdlib header accessor that may raise on damaged headers; None if it does."""
    try:
        return getter()
    except Exception:
        return None


def _repair_multipart(part: EmailMessage, ctype: str, cte: str, defects: list[str]) -> EmailMessage | None:
    """A multipart whose boundary is missing or wrong: guess it from the body's lines."""
    body = _payload_bytes(part, cte, "multipart body", defects)
    match = _BOUNDARY_LINE.search(body)
    if match is None or body.count(b"--" + match.group(1)) < 2:
        defects.append("multipart body without usable boundary; read as plain text")
        return None
    boundary = match.group(1).decode("ascii", "replace").replace('"', "")
    defects.append(f"multipart boundary missing or wrong; guessed {boundary!r}")
    head = f'Content-Type: {ctype}; boundary="{boundary}"\r\n\r\n'.encode()
    repaired = _PARSER.parsebytes(head + body)
    if not isinstance(repaired.get_payload(), list):
        return None
    repaired.defects.clear()
    return repaired


@dataclass(frozen=True)
class _Mime:
    """A part's MIME headers read from raw values (the header registry is slow here)."""

    ctype: str
    params: dict[str, str]
    disposition: str | None
    filename: str | None
    cte: str
    content_id: str | None


def _mime(part: EmailMessage, defects: list[str]) -> _Mime:
    raw: dict[str, str] = {}
    for name, value in part.raw_items():
        key = name.lower()
        if key.startswith("content-") and key not in raw:
            raw[key] = _unfold(str(value))
    value, params = _split_params(raw.get("content-type"), defects)
    ctype = value.lower()
    if ctype.count("/") != 1 or not all(ctype.split("/")):
        if value:
            defects.append(f"unreadable Content-Type {value[:40]!r}; read as text/plain")
        ctype = part.get_default_type() if not value else "text/plain"
    disposition, disp_params = _split_params(raw.get("content-disposition"), defects)
    filename = disp_params.get("filename") or params.get("name")
    cid = raw.get("content-id")
    cids = _ID.findall(cid) if cid else []
    return _Mime(
        ctype=ctype,
        params=params,
        disposition=disposition.lower() or None,
        filename=filename,
        cte=raw.get("content-transfer-encoding", "").strip().lower(),
        content_id=cids[0] if cids else (cid.strip(" <>") or None if cid else None),
    )


def _split_params(value: str | None, defects: list[str]) -> tuple[str, dict[str, str]]:
    """``text/plain; charset="x"`` into its value and parameters, RFC 2231 decoded."""
    if not value:
        return "", {}
    main, _, rest = value.partition(";")
    pairs = [(name.lower(), v) for name, v in _PARAM.findall(";" + rest)]
    if not any("*" in name for name, _ in pairs):
        return main.strip(), {n: _unquote(v) for n, v in reversed(pairs)}
    try:
        decoded = decode_params([("", "")] + pairs)[1:]
    except (TypeError, ValueError):  # mixed numbered and unnumbered continuations
        defects.append("broken RFC 2231 parameters")
        return main.strip(), {n.rstrip("*"): _unquote(v) for n, v in reversed(pairs)}
    params: dict[str, str] = {}
    for name, v in decoded:
        if isinstance(v, tuple):
            charset, _, text = v
            data = bytes(_unquote(text), "raw-unicode-escape")
            params.setdefault(name, decode_bytes(data, charset or "us-ascii", "parameter", defects))
        else:
            params.setdefault(name, _unquote(v))
    return main.strip(), params


def _raw_payload(part: EmailMessage) -> str | list | None:
    """The payload as the parser stored it: 8-bit bytes still surrogate-escaped.

    ``get_payload()`` would decode an 8-bit body with its declared charset, lossily and
    before we can choose a better one, so the stored attribute is read directly.
    """
    return getattr(part, "_payload", None)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _payload_bytes(part: EmailMessage, cte: str, where: str, defects: list[str]) -> bytes:
    """The decoded body of a leaf part, tolerating bad base64 and quoted-printable."""
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return b""
    data = payload.encode("utf-8", "surrogateescape")
    if cte == "base64":
        compact = b"".join(data.split())
        cleaned = _NOT_BASE64.sub(b"", compact)
        if cleaned != compact:
            defects.append(f"{where}: invalid characters in base64")
        if len(cleaned) % 4:
            defects.append(f"{where}: bad base64 padding")
        body = cleaned.replace(b"=", b"")
        if len(body) % 4 == 1:  # a lone last character carries no whole byte
            body = body[:-1]
        try:
            return binascii.a2b_base64(body + b"=" * (-len(body) % 4))
        except binascii.Error:
            defects.append(f"{where}: undecodable base64")
            return b""
    if cte == "quoted-printable":
        return quopri.decodestring(data)
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        decoded = _safe(lambda: part.get_payload(decode=True))
        return decoded if isinstance(decoded, bytes) else data
    return data


_DEFECT_TEXT = {
    "InvalidBase64CharactersDefect": "invalid characters in base64",
    "InvalidBase64PaddingDefect": "bad base64 padding",
    "InvalidBase64LengthDefect": "truncated base64",
    "NoBoundaryInMultipartDefect": "multipart without a boundary",
    "StartBoundaryNotFoundDefect": "multipart boundary never found",
    "CloseBoundaryNotFoundDefect": "multipart end boundary missing",
    "MissingHeaderBodySeparatorDefect": "no blank line between headers and body",
    "FirstHeaderLineIsContinuationDefect": "first header line is a continuation",
    "MisplacedEnvelopeHeaderDefect": "misplaced envelope From line",
    "MultipartInvariantViolationDefect": "multipart type on a non-multipart body",
    "InvalidMultipartContentTransferEncodingDefect": "invalid transfer encoding on multipart",
    "UndecodableBytesDefect": "undecodable bytes",
}


def _describe_defect(defect: object) -> str:
    name = type(defect).__name__
    text = _DEFECT_TEXT.get(name) or re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()
    detail = str(defect)
    return f"{text} ({detail})" if detail and len(detail) < 80 else text

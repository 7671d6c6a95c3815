"""Reading MIME the way broken mail needs: charsets, RFC 2047 words, parameters, payloads.

Package-internal helpers of ``inbound.parse``, kept apart so that the parser reads as the
steps of a message and this module as the repairs each step may need. Everything here
degrades instead of raising and notes what it repaired in ``defects``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
import re
from dataclasses import dataclass
from email import policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesParser
from email.quoprimime import header_decode
from email.utils import decode_params

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
_LATIN1_LABELS = frozenset({"iso-8859-1", "iso8859-1", "latin-1", "latin1", "us-ascii", "ascii"})


class _StructureHeaders(HeaderRegistry):
    """``policy.default``'s header registry, remembering the MIME structure headers.

    Why: the stdlib parser asks each part for its content type three times while it
    parses (``get_content_type``/``get_content_maintype`` in ``feedparser``), and with
    ``policy.default`` every ask parses the ``Content-Type`` header again into a new
    header object. That was two thirds of the parse, and the parse a third of threading
    a mail. The header objects are immutable, so the same value parsed once can be
    handed out again; the same classes parse it, the result is the same. Only short
    values of the three structure headers are remembered, in a bounded table.
    """

    REMEMBERED = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})
    LIMIT = 2048  # entries; a value is at most 998 characters (one line of RFC 5322)

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: str) -> BaseHeader:
        key = (name, value)
        if len(value) > 998 or name.lower() not in self.REMEMBERED:
            return super().__call__(name, value)
        found = self._seen.get(key)
        if found is None:
            if len(self._seen) >= self.LIMIT:
                self._seen.clear()
            found = self._seen[key] = super().__call__(name, value)
        return found


#: ``policy.default`` with the structure headers parsed once per distinct value.
PARSE_POLICY = policy.default.clone(header_factory=_StructureHeaders())
_PARSER = BytesParser(policy=PARSE_POLICY)


def _safe(getter):  # type: ignore[no-untyped-def]
    """Call a stdlib header accessor that may raise on damaged headers; None if it does."""
    try:
        return getter()
    except Exception:
        return None


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
    if "\n" not in value:  # most header values are one line: no regex pass for them
        return value.strip()
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
    """The part's MIME headers, read once per distinct set of them.

    Why remembered: every mail repeats the same few ``Content-*`` lines (``text/plain;
    charset="utf-8"``, ``7bit``...), and splitting their parameters was a tenth of
    extracting a parsed mail. The result is immutable and depends only on those lines
    and the part's default type; what reading them noted in ``defects`` is noted again
    each time. Only short sets are kept, in a bounded table.
    """
    raw: dict[str, str] = {}
    for name, value in part.raw_items():
        key = name.lower()
        if key.startswith("content-") and key not in raw:
            raw[key] = _unfold(str(value))
    memo = (part.get_default_type(), *raw.items())
    if sum(len(v) for v in raw.values()) > 998:
        return _read_mime(part, raw, defects)
    found = _MIME_SEEN.get(memo)
    if found is None:
        noted: list[str] = []
        if len(_MIME_SEEN) >= 2048:
            _MIME_SEEN.clear()
        found = _MIME_SEEN[memo] = (_read_mime(part, raw, noted), tuple(noted))
    defects.extend(found[1])
    return found[0]


_MIME_SEEN: dict[tuple[object, ...], tuple[_Mime, tuple[str, ...]]] = {}


def _read_mime(part: EmailMessage, raw: dict[str, str], defects: list[str]) -> _Mime:
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


"""Forwards: staff pass a customer's mail on to the helpdesk; the ticket is the customer's.

The forwarder is staff; the requester is the person in the forwarded header block. Mail
clients forward either as an attached message (message/rfc822) or inline, under a
marker line and a header block whose labels depend on the client and its language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inbound.parse import Address, ParsedMessage, parse_email_message
from inbound.quotes import cut_reply

_GMAIL_OR_APPLE = re.compile(
    r"^\s*-{3,}\s*(?:forwarded message|mensaje reenviado)\s*-{3,}\s*$"
    r"|^\s*(?:begin forwarded message|inicio del mensaje reenviado)\s*:\s*$",
    re.I,
)
_OUTLOOK_MARKER = re.compile(r"^\s*-{3,}\s*(?:original message|mensaje original)\s*-{3,}\s*$", re.I)
_FIELD = re.compile(
    r"^\s*\**(de|from|fecha|date|enviado(?: el)?|sent|asunto|subject|para|to|cc|"
    r"responder a|reply-to)\s*:\**\s*(.*)$",
    re.I,
)
_FIELD_KEYS = {
    "de": "from", "from": "from",
    "fecha": "date", "date": "date", "enviado": "date", "enviado el": "date", "sent": "date",
    "asunto": "subject", "subject": "subject",
    "para": "to", "to": "to", "cc": "cc", "responder a": "reply-to", "reply-to": "reply-to",
}  # fmt: skip
_FORWARD_SUBJECT = re.compile(
    r"^\s*(?:(?:re|rv|fw|fwd|tr|enc|reenviado|reenv)\s*:\s*)*(?:rv|fw|fwd|tr|enc|reenviado|reenv)\s*:",
    re.I,
)
_REPLY_SUBJECT = re.compile(r"^\s*(?:re|rv|fw|fwd|reenviado)\s*:", re.I)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_MAILTO = re.compile(r"\[\s*mailto:\s*([^\]\s]+)\s*\]", re.I)
_ANGLE = re.compile(r"<\s*(?:mailto:)?([^<>\s]+@[^<>\s]+)\s*>", re.I)
_BARE = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass(frozen=True)
class Forwarded:
    """The forwarded mail: its author, subject, date (as written, or ISO) and new text."""

    from_: Address
    subject: str | None
    date: str | None
    text: str


def find_forward(parsed: ParsedMessage) -> Forwarded | None:
    """The mail ``parsed`` forwards, or None. An attached message wins over inline text."""
    if parsed.content_type != "multipart/report":
        for part in parsed.rfc822_parts:
            try:
                inner = parse_email_message(part)
            except Exception:
                continue
            date = inner.date.isoformat() if inner.date else inner.header("date")
            return Forwarded(inner.from_, inner.subject or None, date, cut_reply(inner.text))
    return _inline_forward(parsed.text, parsed.subject)


def _inline_forward(text: str, subject: str) -> Forwarded | None:
    lines = text.replace("\r\n", "\n").split("\n")
    forward_subject = bool(_FORWARD_SUBJECT.match(subject))
    reply_subject = bool(_REPLY_SUBJECT.match(subject))
    for i, line in enumerate(lines):
        if _GMAIL_OR_APPLE.match(line):
            return _block(lines, i + 1)
        outlook_marker = bool(_OUTLOOK_MARKER.match(line))
        outlook_block = _is_from_line(line) and _field_count(lines, i) >= 2
        if not (outlook_marker or outlook_block):
            continue
        if forward_subject or (reply_subject and _at_top(lines, i)):
            return _block(lines, i + 1 if outlook_marker else i)
        return None  # the history of a reply, not a forward
    return None


def _is_from_line(line: str) -> bool:
    match = _FIELD.match(line)
    return bool(match and _FIELD_KEYS[match.group(1).lower()] == "from" and match.group(2))


def _field_count(lines: list[str], start: int) -> int:
    count = 0
    for line in lines[start : start + 8]:
        if not line.strip():
            break
        count += bool(_FIELD.match(line))
    return count


def _at_top(lines: list[str], i: int) -> bool:
    return all(not line.strip() or _UNDERSCORES.match(line) for line in lines[:i])


def _block(lines: list[str], start: int) -> Forwarded | None:
    """Read the header block starting at ``start`` (blank lines first are skipped)."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    fields: dict[str, str] = {}
    last: str | None = None
    while i < len(lines):
        line = lines[i]
        match = _FIELD.match(line)
        if match:
            last = _FIELD_KEYS[match.group(1).lower()]
            fields.setdefault(last, match.group(2).strip())
        elif not line.strip() or last not in ("to", "cc"):
            break
        else:  # a wrapped recipient list
            fields[last] += " " + line.strip()
        i += 1
    if "from" not in fields:
        return None
    body = "\n".join(lines[i:])
    return Forwarded(
        from_=parse_address(fields["from"]),
        subject=fields.get("subject") or None,
        date=fields.get("date") or None,
        text=cut_reply(body),
    )


def parse_address(value: str) -> Address:
    """An address as mail clients write it in forwarded headers, in every usual shape.

    ``"Pérez, Ana" <ana@cliente.mx>``, ``Ana Pérez [mailto:ana@cliente.mx]``,
    ``Ana Pérez <mailto:ana@cliente.mx>``, ``ana@cliente.mx``, or a bare name.
    """
    value = value.replace("*", "").strip()
    match = _MAILTO.search(value) or _ANGLE.search(value) or _BARE.search(value)
    if match is None:
        return Address(_clean_name(value), None)
    email = match.group(1) if match.re is not _BARE else match.group(0)
    name = _clean_name(value[: match.start()] + value[match.end() :])
    email = email.strip().lower()
    return Address(name if name and name.lower() != email else None, email)


def _clean_name(name: str) -> str | None:
    name = name.strip().strip("()").strip().strip("\"'").strip()
    return name or None

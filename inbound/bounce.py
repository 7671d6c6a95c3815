"""Delivery failure reports: who could not be reached, for good or for now, and for which mail.

A bounce must never open a ticket (it would answer the mailer daemon, which answers
back), but it carries news: the customer's address is wrong or their box is full. The
``original_message_id`` lets the caller mark our notification as bounced.

Two shapes exist: RFC 3464 delivery status notifications (``multipart/report;
report-type=delivery-status``), read field by field; and free-text bounces from older
MTAs (qmail, some Exim and Exchange set-ups), read heuristically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import HeaderParser
from email.utils import parseaddr

from inbound.parse import ParsedMessage

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"(?<![\d.])([45])\d\d(?:[ -]|$)", re.M)
_ADDRESS = re.compile(r"[\w.+'=-]+@[\w-]+(?:\.[\w-]+)+", re.A)
_MESSAGE_ID = re.compile(r"^message-id:\s*(.+)$", re.I | re.M)
_ID = re.compile(r"<([^<>\s]+)>")
_DAEMON_LOCALS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_DAEMON_NAME = re.compile(r"mail delivery (?:subsystem|system)|mailer.daemon", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|delivery status notification|delivery (?:has )?failed"
    r"|delivery failure|mail delivery failed|returned mail|failure notice|non remis"
    r"|no se puede entregar|no se pudo entregar|no entregado|notificaci[óo]n de estado"
    r"|error de entrega|devuelto",
    re.I,
)
_TEMPORARY = re.compile(
    r"temporar|delayed|will (?:be )?retr|still trying|has not yet been delivered"
    r"|seguir[áa] intentando|retrasad|temporal",
    re.I,
)
# Where a text bounce starts quoting the original message: addresses below are not failures.
_COPY_MARKER = re.compile(
    r"^.*(?:copy of the (?:original )?message|original message (?:follows|headers)"
    r"|below this line|mensaje original|message headers follow|returned message)"
    r"|^(?:return-path|received|message-id):",
    re.I | re.M,
)


@dataclass(frozen=True)
class BounceRecipient:
    """One address that failed: ``status`` is the RFC 3463 code, 5.x.x is permanent."""

    email: str
    status: str
    permanent: bool
    action: str | None = None
    diagnostic: str | None = None


@dataclass
class BounceReport:
    """A delivery failure report; ``recipients`` may be empty when none could be read."""

    recipients: list[BounceRecipient] = field(default_factory=list)
    original_message_id: str | None = None
    report_type: str = "delivery-status"  # or "text" for heuristic reads


def is_delivery_report(parsed: ParsedMessage) -> bool:
    """An RFC 3464 report: multipart/report; report-type=delivery-status, or its part."""
    if parsed.delivery_status:
        return True
    if parsed.content_type != "multipart/report":
        return False
    try:
        report_type = str(parsed.message.get_param("report-type", "") or "").lower()
    except Exception:
        report_type = ""
    return report_type in ("delivery-status", "global-delivery-status")


def looks_like_text_bounce(parsed: ParsedMessage) -> bool:
    """A bounce without the RFC 3464 structure: from the mailer daemon, or null sender.

    A null Return-Path alone is not enough: RFC 3834 asks auto-replies to use one too.
    """
    sender = parsed.from_
    local = (sender.email or "").split("@", 1)[0]
    if local in _DAEMON_LOCALS or _DAEMON_NAME.search(sender.name or ""):
        return True
    if not _BOUNCE_SUBJECT.search(parsed.subject):
        return False
    null_sender = parsed.headers.get("return-path", "").strip() == "<>"
    return null_sender or _has_failure_text(parsed)


def find_bounce(parsed: ParsedMessage) -> BounceReport | None:
    """The bounce report carried by ``parsed``, or None when it is not a bounce."""
    if is_delivery_report(parsed):
        recipients = [r for block in parsed.delivery_status for r in _dsn_recipients(block)]
        if not recipients:
            recipients = _text_recipients(parsed)
        return BounceReport(recipients, _original_message_id(parsed), "delivery-status")
    if looks_like_text_bounce(parsed):
        return BounceReport(_text_recipients(parsed), _original_message_id(parsed), "text")
    return None


def _dsn_recipients(block: EmailMessage | str) -> list[BounceRecipient]:
    result: list[BounceRecipient] = []
    for fields in _dsn_fields(block):
        address = fields.get("final-recipient") or fields.get("original-recipient")
        if not address:
            continue  # the per-message block
        email = parseaddr(address.split(";", 1)[-1].strip())[1].lower() or address.lower()
        action = (fields.get("action") or "").strip().lower() or None
        match = _STATUS.search(fields.get("status", ""))
        if action in ("delivered", "relayed", "expanded"):
            continue
        if match is None and action not in ("failed", "delayed"):
            continue
        status = match.group(0) if match else ("4.0.0" if action == "delayed" else "5.0.0")
        result.append(
            BounceRecipient(
                email=email,
                status=status,
                permanent=status.startswith("5"),
                action=action,
                diagnostic=fields.get("diagnostic-code") or None,
            )
        )
    return result


def _dsn_fields(block: EmailMessage | str) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status part, parsed or still text."""
    groups: list[dict[str, str]] = []
    if isinstance(block, str):
        for chunk in re.split(r"\r?\n[ \t]*\r?\n", block):
            fields: dict[str, str] = {}
            for name, value in HeaderParser().parsestr(chunk.strip() + "\n\n").items():
                fields.setdefault(name.lower(), " ".join(str(value).split()))
            groups.append(fields)
        return groups
    payload = block.get_payload()
    for sub in payload if isinstance(payload, list) else []:
        fields = {}
        for name, value in sub.raw_items():
            fields.setdefault(name.lower(), " ".join(str(value).split()))
        groups.append(fields)
    return groups


def _has_failure_text(parsed: ParsedMessage) -> bool:
    head = _bounce_head(parsed.text)
    return bool(_STATUS.search(head) or _SMTP_CODE.search(head))


def _bounce_head(text: str) -> str:
    match = _COPY_MARKER.search(text)
    return text[: match.start()] if match else text


def _text_recipients(parsed: ParsedMessage) -> list[BounceRecipient]:
    """Failed addresses read from a bounce's prose, with the nearest status code."""
    ours = {parsed.from_.email, *parsed.to, *parsed.cc}
    head = _bounce_head(parsed.text)
    temporary = bool(_TEMPORARY.search(head))
    lines = head.splitlines()
    result: list[BounceRecipient] = []
    seen: set[str] = set()
    for i, line in enumerate(lines):
        for match in _ADDRESS.finditer(line):
            email = match.group(0).lower().rstrip(".")
            if email in seen or email in ours or email.split("@")[0] in _DAEMON_LOCALS:
                continue
            seen.add(email)
            nearby = "\n".join(lines[i : i + 4])
            status_match = _STATUS.search(nearby)
            if status_match:
                status = status_match.group(0)
            else:
                code = _SMTP_CODE.search(nearby)
                first = code.group(1) if code else ("4" if temporary else "5")
                status = f"{first}.0.0"
            result.append(BounceRecipient(email, status, status.startswith("5"), "failed"))
    return result


def _original_message_id(parsed: ParsedMessage) -> str | None:
    """Message-ID of the mail that bounced: attached message, its headers, or quoted text."""
    for part in parsed.rfc822_parts:
        value = part.get("message-id") if "message-id" in part else None
        found = _ID.findall(str(value or ""))
        if found:
            return found[0]
    sources = [*parsed.rfc822_headers, _after_marker(parsed.text)]
    for text in sources:
        for match in _MESSAGE_ID.finditer(text):
            found = _ID.findall(match.group(1))
            if found and found[0] != parsed.message_id:
                return found[0]
    return None


def _after_marker(text: str) -> str:
    match = _COPY_MARKER.search(text)
    return text[match.start() :] if match else ""

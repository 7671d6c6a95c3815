"""Classify an inbound message: one of ours coming back, a bounce, an auto-reply, or a message.

Only a ``message`` may open or update a ticket and be answered. Everything else is
recorded and never answered automatically (RFC 3834), which is what keeps two robots
from writing to each other forever. The checks run in a fixed order (loop, bounce,
auto_reply) because the later ones also match the earlier ones: a bounce usually says
``Auto-Submitted`` too, and our own notification coming back may look like anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from inbound.bounce import BounceReport, find_bounce
from inbound.parse import ParsedMessage

KINDS = ("message", "auto_reply", "bounce", "loop")

_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})
# Out-of-office subjects as Exchange, Gmail and others write them: the phrase opens the
# subject and is followed by a colon or nothing ("Respuesta automática: Re: ...").
_OOF_PHRASES = (
    r"respuesta\s+autom[áa]tica|fuera\s+de\s+(?:la\s+)?oficina|ausente|ausencia"
    r"|out\s+of\s+(?:the\s+)?office|automatic\s+reply|auto[-\s]?reply|autoreply"
    r"|auto[-\s]?response|vacaciones|estoy\s+de\s+vacaciones|on\s+vacation|away"
    r"|abwesenheitsnotiz|r[ée]ponse\s+automatique|auto"
)
_OOF_SUBJECT = re.compile(r"^\s*(?:(?:re|rv|aw)\s*:\s*)?\[?(?:" + _OOF_PHRASES + r")\]?\s*(?::|-|$)", re.I)
_OOF_ANYWHERE = re.compile(r"\b(?:" + _OOF_PHRASES + r")\b", re.I)
_READ_RECEIPT = re.compile(r"^\s*(?:le[íi]do|no le[íi]do|read|not read)\s*:", re.I)


@dataclass(frozen=True)
class Classification:
    """``kind`` is one of KINDS; ``reason`` says why, in a few English words."""

    kind: str
    reason: str
    bounce: BounceReport | None = None


def classify(
    parsed: ParsedMessage,
    *,
    own_addresses: set[str],
    is_own_message_id: Callable[[str], bool],
) -> Classification:
    """Decide what ``parsed`` is. A customer's reply to our mail is a ``message``.

    Parameters:
      own_addresses: our inbox addresses, lower case.
      is_own_message_id: whether a Message-ID was made by us (signed or stored).
    """
    loop = _loop_reason(parsed, own_addresses, is_own_message_id)
    if loop:
        return Classification("loop", loop)
    bounce = find_bounce(parsed)
    if bounce is not None:
        return Classification("bounce", "delivery failure report", bounce)
    auto = auto_reply_reason(parsed)
    if auto:
        return Classification("auto_reply", auto)
    return Classification("message", "written by a person")


def _loop_reason(parsed: ParsedMessage, own: set[str], is_own_message_id: Callable[[str], bool]) -> str | None:
    """Our own mail coming back: our Message-ID, or sent from our own inbox address.

    In-Reply-To and References are deliberately not looked at: a customer's reply
    carries our Message-ID there, and is exactly what we want to receive.
    """
    own = {address.lower() for address in own}
    if parsed.message_id and is_own_message_id(parsed.message_id):
        return "Message-ID is one of ours"
    if parsed.from_.email and parsed.from_.email in own:
        return "sent from our own inbox address"
    x_loop = parsed.headers.get("x-loop", "").lower()
    if x_loop and any(address in x_loop for address in own):
        return "X-Loop names our inbox address"
    return None


def auto_reply_reason(parsed: ParsedMessage) -> str | None:
    """Why ``parsed`` was written by a program (RFC 3834 and common practice), or None."""
    headers = parsed.headers
    auto_submitted = headers.get("auto-submitted", "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return f"Auto-Submitted: {auto_submitted.split(';')[0]}"
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return "X-Autoreply header"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in _PRECEDENCE:
        return f"Precedence: {precedence}"
    suppress = headers.get("x-auto-response-suppress", "").lower()
    if ("all" in suppress or "oof" in suppress) and _OOF_ANYWHERE.search(parsed.subject):
        return "X-Auto-Response-Suppress with an out-of-office subject"
    if _OOF_SUBJECT.match(parsed.subject):
        return "out-of-office subject"
    if parsed.content_type == "multipart/report" or _READ_RECEIPT.match(parsed.subject):
        report_type = str(_param(parsed, "report-type")).lower()
        if report_type == "disposition-notification":
            return "read receipt"
    return None


def _param(parsed: ParsedMessage, name: str) -> str:
    try:
        return str(parsed.message.get_param(name, "") or "")
    except Exception:
        return ""

"""The JSON object ``helpdesk parse --json`` prints: what parsing and classifying decided.

Operators use it to answer "why did this mail land there?", so it must describe any
input, the worst included: ``describe`` never raises and returns only JSON types. When
something fails, ``error`` says what and the keys hold whatever was learnt before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inbound.classify import classify
from inbound.forward import find_forward
from inbound.parse import UnparseableMessage, parse_message
from models.numbers import find_numbers


def empty_report() -> dict[str, Any]:
    """Every documented key, with the value it has when nothing is known."""
    return {
        "from": {"name": None, "email": None},
        "to": [],
        "cc": [],
        "subject": None,
        "date": None,
        "message_id": None,
        "in_reply_to": [],
        "references": [],
        "text": "",
        "reply_text": "",
        "attachments": [],
        "kind": None,
        "bounce": None,
        "forwarded": None,
        "ticket_numbers": [],
        "defects": [],
    }


def describe(
    raw: bytes,
    *,
    prefix: str,
    own_addresses: set[str],
    is_own_message_id: Callable[[str], bool] = lambda mid: False,
) -> dict[str, Any]:
    """Parse and classify ``raw`` without storing anything; never raises."""
    report = empty_report()
    try:
        _fill(report, raw, prefix, own_addresses, is_own_message_id)
    except UnparseableMessage as exc:
        report["error"] = f"unparseable message: {exc.reason}"
    except Exception as exc:  # the operator's tool must describe even our own bugs
        report["error"] = f"{type(exc).__name__}: {exc}"
    return report


def _fill(
    report: dict[str, Any],
    raw: bytes,
    prefix: str,
    own_addresses: set[str],
    is_own_message_id: Callable[[str], bool],
) -> None:
    parsed = parse_message(raw)
    report.update(
        {
            "from": {"name": parsed.from_.name, "email": parsed.from_.email},
            "to": list(parsed.to),
            "cc": list(parsed.cc),
            "subject": parsed.subject,
            "date": parsed.date.isoformat() if parsed.date else None,
            "message_id": parsed.message_id,
            "in_reply_to": list(parsed.in_reply_to),
            "references": list(parsed.references),
            "text": parsed.text,
            "attachments": [
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                    "sha256": a.sha256,
                }
                for a in parsed.attachments
            ],
            "defects": parsed.defects,
        }
    )
    report["reply_text"] = parsed.reply_text
    result = classify(parsed, own_addresses=own_addresses, is_own_message_id=is_own_message_id)
    report["kind"] = result.kind
    if result.bounce is not None:
        report["bounce"] = {
            "recipients": [
                {"email": r.email, "status": r.status, "permanent": r.permanent} for r in result.bounce.recipients
            ]
        }
    forwarded = find_forward(parsed) if result.kind == "message" else None
    if forwarded is not None:
        report["forwarded"] = {
            "from": {"name": forwarded.from_.name, "email": forwarded.from_.email},
            "subject": forwarded.subject,
            "date": forwarded.date,
            "text": forwarded.text,
        }
    numbers = find_numbers(f"{parsed.subject}\n{parsed.reply_text}", prefix)
    for number in find_numbers(forwarded.text if forwarded else "", prefix):
        if number not in numbers:
            numbers.append(number)
    report["ticket_numbers"] = numbers
    report["defects"] = list(parsed.defects)

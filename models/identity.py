"""Message-IDs we mint for outbound mail, recognisable when they come back.

The id carries an HMAC of the outbox row id, so that a resend of the same row reuses the
same Message-ID (receivers then drop the duplicate) and so that our own notification
arriving back at the inbox is told from a customer's mail without a database lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_OWN = re.compile(r"^hd\.(\d+)\.([0-9a-f]{16})@", re.I)


def _mac(secret: str, outbox_id: int) -> str:
    return hmac.new(secret.encode(), f"outbox:{outbox_id}".encode(), hashlib.sha256).hexdigest()[:16]


def make_message_id(outbox_id: int, domain: str, secret: str) -> str:
    """``hd.<id>.<mac>@domain`` (without angle brackets)."""
    return f"hd.{outbox_id}.{_mac(secret, outbox_id)}@{domain}"


def own_outbox_id(message_id: str | None, secret: str) -> int | None:
    """The outbox row a Message-ID of ours was minted for, or None if it is not ours."""
    if not message_id:
        return None
    match = _OWN.match(message_id.strip().strip("<>"))
    if not match:
        return None
    outbox_id = int(match.group(1))
    if hmac.compare_digest(match.group(2).lower(), _mac(secret, outbox_id)):
        return outbox_id
    return None


def is_own_message_id(message_id: str | None, secret: str) -> bool:
    return own_outbox_id(message_id, secret) is not None


#: Domain of the ids made up for mail that came without a Message-ID (never sent out).
NO_MESSAGE_ID = "no-message-id"


def synthetic_message_id(digest: str) -> str:
    """A stable id for a mail without Message-ID: the same bytes twice are one message."""
    return f"sha256.{digest[:40]}@{NO_MESSAGE_ID}"

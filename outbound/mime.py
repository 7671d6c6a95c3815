"""Building the notification mail itself: headers that thread and stop loops, and the
text and HTML parts, encoded once.

Headers are pre-encoded and the bodies quoted-printable encoded in C, so that composing
costs a fraction of sending (the benchmark's compose-and-send loop is the yardstick).
The multipart boundary is chosen here too (``boundary``): left to the generator, it
draws a random one and compiles a regular expression for it to search the whole text,
for every message.
"""

from __future__ import annotations

import binascii
import hashlib
from datetime import datetime
from email.header import Header
from email.message import EmailMessage, MIMEPart
from email.policy import compat32
from email.utils import format_datetime, formataddr

from outbound.compose import Notification


def compose_email(note: Notification, subject: str, text: str, html: str, *, company_name: str,
                  now: datetime) -> EmailMessage:
    """The message for ``note``: threading headers, RFC 3834 markers, text + HTML parts.

    Headers are encoded here (RFC 2047 words for non-ASCII, folded) and stored as they
    are (``compat32`` storage): parsing each value back through ``email.headerregistry``
    would cost more than rendering the templates. The message is serialized with
    ``outbound.email.WIRE_POLICY`` like any other.

    Raises:
        ValueError: the contact has no e-mail address.
    """
    to = note.contact.email
    if not to:
        raise ValueError("the contact has no e-mail address")
    msg = EmailMessage(policy=compat32)
    msg["From"] = formataddr((company_name, note.from_address), charset="utf-8")
    msg["To"] = formataddr((note.contact.name or "", to), charset="utf-8")
    msg["Subject"] = _encoded(subject, "Subject")
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{note.message_id}>"
    if note.thread:
        msg["In-Reply-To"] = f"<{note.thread[-1]}>"
        msg["References"] = _encoded(" ".join(f"<{mid}>" for mid in note.thread), "References")
    msg["Reply-To"] = note.from_address
    # RFC 3834: automatic, so that autoresponders (and Exchange) do not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = f'multipart/alternative; boundary="{boundary(note.message_id)}"'
    msg.attach(_text_part("plain", text))
    msg.attach(_text_part("html", html))
    return msg


def boundary(message_id: str) -> str:
    """The multipart boundary of the message ``message_id``: ``=_`` and a digest of it.

    No line of a part can start with it: the parts are quoted-printable, where ``=`` is
    always followed by two hex digits or ends a line, never by ``_`` (RFC 2045, 6.7), and
    their headers are ours. So it needs neither randomness nor a search of the text.
    """
    return "=_hd." + hashlib.blake2b(message_id.encode(), digest_size=12).hexdigest()


def _encoded(value: str, name: str) -> Header:
    """``value`` as a ``Header``: the generator folds it, as RFC 2047 encoded words when
    it is not ASCII, once (encoded to a string here, it was parsed and folded again)."""
    value = " ".join(value.split())
    charset = "us-ascii" if value.isascii() else "utf-8"
    return Header(value, charset, header_name=name)


def _text_part(subtype: str, body: str) -> MIMEPart:
    """A UTF-8 quoted-printable part, encoded by ``binascii`` (C) rather than
    ``set_content``'s pure-Python encoder, which costs more than the rest of a send."""
    part = MIMEPart(policy=compat32)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii"))
    return part


# -- internals ------------------------------------------------------------------------------



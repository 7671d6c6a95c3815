"""The notification mail's multipart boundary: chosen when the mail is composed, from its
Message-ID, so that serializing it neither draws a random one nor searches every part's
text for it (both cost more than the rest of the generator's work on a notification)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser

from outbound.compose import Notification
from outbound.context import NotificationContext, RecipientView
from outbound.email import wire_bytes
from outbound.mime import boundary, compose_email
from outbound.snapshot import ContactInfo


def _note(message_id: str) -> Notification:
    contact = ContactInfo(id=1, name="Ana", email="ana@customer.example", phone=None, whatsapp_address=None,
                          whatsapp_opt_out=False, last_whatsapp_in_at=None, preferred_channel="email",
                          timezone=None, locale=None)
    return Notification(
        outbox_id=7, template="stage", channel="email", payload={}, attempts=1, contact=contact, ticket_id=1,
        context=NotificationContext(template="reply", ticket=None, recipient=RecipientView(name="Ana")),
        from_address="soporte@jhleasing.mx", message_id=message_id,
    )


def test_the_boundary_is_the_message_ids_and_text_that_quotes_it_cannot_end_a_part() -> None:
    note = _note("hd.7.0123456789abcdef@jhleasing.mx")
    mark = boundary(note.message_id)
    text = f"--{mark}\n--{mark}--\nLínea con = y =_ y —.\n" * 3
    html = f"<p>--{mark}--</p>\n"
    msg = compose_email(note, "Asunto", text, html, company_name="JHLeasing", now=datetime(2026, 3, 1, tzinfo=UTC))
    data = wire_bytes(msg)
    assert msg.get_boundary() == mark
    assert data.count(f"--{mark}".encode()) == 3, "two part openers and the closing line, nothing from the text"
    parsed = BytesParser(policy=policy.default).parsebytes(data)
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
    assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n") == html


def test_each_message_has_its_own_boundary_and_a_resend_the_same() -> None:
    assert boundary("hd.7.a@jhleasing.mx") == boundary("hd.7.a@jhleasing.mx")
    assert boundary("hd.7.a@jhleasing.mx") != boundary("hd.8.a@jhleasing.mx")

"""Twilio status callbacks update the notification they belong to, once, never backwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from models.contact import Contact, get_or_create_by_phone
from models.outbox import DeliveryEvent, Outbox
from models.tickets import open_ticket
from tests.support.twilio_server import TwilioServer
from tests.web_helpers import OUR_NUMBER, PHONE, WA_FROM, WebApp

pytest_plugins = ["tests.web_fixtures"]


@pytest.fixture
def sent(web: WebApp, twilio: TwilioServer) -> Iterator[tuple[int, str]]:
    """A WhatsApp notification sent through the Twilio server: (outbox id, MessageSid)."""
    with web.rt.transaction() as s:
        contact = get_or_create_by_phone(s, "+525512345678", "Juan", whatsapp_address=WA_FROM)
        contact.last_whatsapp_in_at = None
        ticket = open_ticket(s, catalog=web.rt.catalog, settings=web.rt.settings, pipeline_id="mantenimiento",
                             requester=contact, subject="Frenos", acknowledge=False)
        row = Outbox(ticket_id=ticket.id, contact_id=contact.id, channel="whatsapp", template="stage",
                     payload={"pipeline": "mantenimiento", "stage": "Cita agendada"}, status="pending")
        s.add(row)
        s.flush()
        row_id = row.id
    message = send_via_twilio(twilio, web)
    with web.rt.transaction() as s:
        row = s.get(Outbox, row_id)
        row.provider_id, row.status = message.sid, "sent"
    yield row_id, message.sid


def row(web: WebApp, row_id: int) -> Outbox:
    with web.rt.sessions() as s:
        return s.get(Outbox, row_id)


def test_delivery_and_read_move_the_notification_forward_only(
    web: WebApp, twilio: TwilioServer, sent: tuple[int, str]
) -> None:
    row_id, sid = sent
    assert twilio.send_status_callback(sid, "delivered").status == 200
    assert row(web, row_id).status == "delivered"
    assert twilio.send_status_callback(sid, "read").status == 200
    assert twilio.send_status_callback(sid, "delivered").status == 200  # late, out of order
    assert twilio.send_status_callback(sid, "sent").status == 200
    assert row(web, row_id).status == "read"


def test_a_repeated_callback_is_stored_once(web: WebApp, twilio: TwilioServer, sent: tuple[int, str]) -> None:
    row_id, sid = sent
    for _ in range(3):
        assert twilio.send_status_callback(sid, "delivered").status == 200
    with web.rt.sessions() as s:
        events = list(s.scalars(select(DeliveryEvent)))
    assert [(e.provider_id, e.status, e.outbox_id) for e in events] == [(sid, "delivered", row_id)]


def test_a_failure_records_the_error_code(web: WebApp, twilio: TwilioServer, sent: tuple[int, str]) -> None:
    row_id, sid = sent
    twilio.send_status_callback(sid, "undelivered", 63024)
    failed = row(web, row_id)
    assert failed.status == "undelivered" and failed.last_error.startswith("undelivered 63024")
    with web.rt.sessions() as s:
        assert s.scalar(select(Outbox.id).where(Outbox.id != row_id)) is None  # no resend for 63024


def test_outside_the_24_hour_window_the_notification_goes_again_as_the_template(
    web: WebApp, twilio: TwilioServer
) -> None:
    with web.rt.transaction() as s:
        contact = get_or_create_by_phone(s, "+525512345678", "Juan", whatsapp_address=WA_FROM)
        ticket = open_ticket(s, catalog=web.rt.catalog, settings=web.rt.settings, pipeline_id="mantenimiento",
                             requester=contact, subject="Frenos", acknowledge=False)
        original = Outbox(ticket_id=ticket.id, contact_id=contact.id, channel="whatsapp", template="stage",
                          audience="requester", payload={"stage": "Cita agendada", "note": "10:00"}, status="sent")
        s.add(original)
        s.flush()
        original_id = original.id
    twilio.outside_window(PHONE, delay=0.5)  # the sender records the sid before Twilio calls back
    message = send_via_twilio(twilio, web)
    with web.rt.transaction() as s:
        s.get(Outbox, original_id).provider_id = message.sid
    callback = twilio.wait_for_callbacks(1)[0]
    assert callback.status == 200 and callback.params["ErrorCode"] == "63016"
    twilio.send_status_callback(message.sid, "failed", 63016)  # Twilio repeating itself
    with web.rt.sessions() as s:
        rows = list(s.scalars(select(Outbox).order_by(Outbox.id)))
        contact_id = s.scalars(select(Contact.id)).one()
    failed, resend = rows
    assert failed.status == "failed" and "63016" in failed.last_error
    assert (resend.template, resend.channel, resend.audience, resend.status) == ("stage", "whatsapp", "requester",
                                                                              "pending")
    assert resend.payload == {"stage": "Cita agendada", "note": "10:00", "force_template": True,
                              "resend_of": original_id}
    assert resend.ticket_id == failed.ticket_id and resend.contact_id == contact_id


def test_a_callback_with_a_bad_signature_is_refused(web: WebApp, twilio: TwilioServer, sent: tuple[int, str]) -> None:
    row_id, sid = sent
    assert twilio.send_status_callback(sid, "delivered", auth_token="f" * 32).status == 403
    assert row(web, row_id).status == "sent"
    with web.rt.sessions() as s:
        assert s.scalar(select(DeliveryEvent.id)) is None


def test_a_callback_for_an_unknown_message_is_kept_for_later(web: WebApp) -> None:
    params = {"MessageSid": "SMunknown", "MessageStatus": "delivered", "AccountSid": "AC1"}
    assert web.post_signed("/webhooks/twilio/status", params).status_code == 200
    assert web.post_signed("/webhooks/twilio/status", {"AccountSid": "AC1"}).status_code == 400
    with web.rt.sessions() as s:
        event = s.scalars(select(DeliveryEvent)).one()
    assert (event.provider_id, event.status, event.outbox_id) == ("SMunknown", "delivered", None)


def test_a_callback_before_the_sender_recorded_the_sid_is_applied_afterwards(web: WebApp) -> None:
    from models.delivery import apply_recorded_events

    params = {"MessageSid": "SMearly", "MessageStatus": "delivered", "AccountSid": "AC1"}
    assert web.post_signed("/webhooks/twilio/status", params).status_code == 200
    with web.rt.transaction() as s:
        contact = get_or_create_by_phone(s, "+525512345678", "Juan", whatsapp_address=WA_FROM)
        late = Outbox(contact_id=contact.id, channel="whatsapp", template="optin_confirm", payload={},
                      status="sent", provider_id="SMearly")
        s.add(late)
        s.flush()
        assert apply_recorded_events(s, late) == [f"notification {late.id}: sent → delivered"]
        late_id = late.id
    assert row(web, late_id).status == "delivered"


def send_via_twilio(twilio, web):  # type: ignore[no-untyped-def]
    """A WhatsApp message sent through the Twilio-shaped server, with our status callback."""
    client = twilio.client()
    try:
        return client.messages.create(to=WA_FROM, from_=OUR_NUMBER, body="Tu cita quedó agendada",
                                      status_callback=web.url + "/webhooks/twilio/status")
    finally:
        client.http_client.close()  # type: ignore[attr-defined]

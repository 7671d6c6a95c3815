"""The WhatsApp webhook door: signed, kept once, answered with TwiML, processed after."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select

from inbound.keep import keep_raw
from inbound.media import RetryPolicy
from models.contact import Contact
from models.message import Attachment, Blob, Message, RawMessage
from models.outbox import Outbox
from models.ticket import Ticket
from tests.support.ports import free_port, wait_until
from tests.support.twilio_server import TwilioServer, signed_webhook_post
from tests.web_helpers import WA_FROM, WebApp, inbound, new_sid
from worker.runtime import Runtime
from worker.web import EMPTY_TWIML

pytest_plugins = ["tests.web_fixtures"]


def count(rt: Runtime, model: type) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_a_new_conversation_opens_a_ticket_acknowledged_on_whatsapp(web: WebApp) -> None:
    response = web.whatsapp("Hola, mi camioneta hace un ruido raro al frenar", ProfileName="Juan Pérez")
    assert response.text == EMPTY_TWIML
    assert response.headers["content-type"].startswith("text/xml")
    web.processed()
    with web.rt.sessions() as s:
        ticket = s.scalars(select(Ticket)).one()
        assert ticket.pipeline == "mantenimiento" and ticket.state == "Abierto"
        assert ticket.subject == "Hola, mi camioneta hace un ruido raro al frenar"
        message = s.scalars(select(Message)).one()
        assert (message.channel, message.direction, message.threaded_by) == ("whatsapp", "in", "new")
        contact = s.get(Contact, ticket.requester_id)
        assert contact.phone == "+525512345678"
        assert contact.name == "Juan Pérez"
        assert contact.whatsapp_address == WA_FROM
        assert contact.preferred_channel == "whatsapp"
        assert contact.last_whatsapp_in_at is not None
        ack = s.scalars(select(Outbox)).one()
        assert (ack.template, ack.channel, ack.ticket_id) == ("ack", "whatsapp", ticket.id)


def test_the_same_message_sid_twice_adds_nothing(web: WebApp) -> None:
    sid = new_sid()
    web.whatsapp("Necesito una cita de servicio", sid=sid)
    web.whatsapp("Necesito una cita de servicio", sid=sid)
    web.processed()
    assert (count(web.rt, Ticket), count(web.rt, Message), count(web.rt, Outbox)) == (1, 1, 1)
    with web.rt.sessions() as s:
        outcomes = list(s.scalars(select(RawMessage.outcome).order_by(RawMessage.id)))
    assert outcomes[1] == f"duplicate {sid}"


def test_a_bad_or_missing_signature_is_refused_and_nothing_is_stored(web: WebApp) -> None:
    path = "/webhooks/twilio/whatsapp"
    params = inbound(body="hola")
    headers, body = signed_webhook_post(web.url + path, params, web.auth_token)
    unsigned = {k: v for k, v in headers.items() if k != "X-Twilio-Signature"}
    assert web.http.post(path, content=body, headers=unsigned).status_code == 403
    assert web.post_signed(path, params, token="0" * 32).status_code == 403
    tampered = body.replace(b"hola", b"adios")
    assert web.http.post(path, content=tampered, headers=headers).status_code == 403
    assert web.post_signed(path, params, signed_url="https://elsewhere.example" + path).status_code == 403
    assert count(web.rt, RawMessage) == 0


def test_the_signature_for_public_url_is_accepted_behind_a_proxy(web_factory: Callable[..., WebApp]) -> None:
    public = "https://helpdesk.jhleasing.test"
    web = web_factory(public_url=public + "/")
    path = "/webhooks/twilio/whatsapp"
    params = inbound(body="Hola desde el proxy")
    # Twilio signs the URL it called (the proxy's); the app itself is reached elsewhere.
    assert web.post_signed(path, params, signed_url=public + path).status_code == 200
    assert web.post_signed(path, inbound(body="x"), signed_url=web.url + path).status_code == 403
    web.processed()
    assert count(web.rt, Ticket) == 1


def test_the_two_mexican_forms_of_one_number_are_one_contact(web: WebApp) -> None:
    web.send("Primera pregunta", frm="whatsapp:+5215512345678")
    web.send("Segunda pregunta", frm="whatsapp:+525512345678", WaId="525512345678")
    with web.rt.sessions() as s:
        assert s.scalar(select(func.count(Contact.id))) == 1
        assert s.scalar(select(func.count(Ticket.id))) == 1
        assert [m.threaded_by for m in s.scalars(select(Message).order_by(Message.id))] == ["new", "single_open"]


def test_stop_opts_out_and_alta_opts_back_in_both_confirmed_without_tickets(web: WebApp) -> None:
    web.send("BAJA.")
    with web.rt.sessions() as s:
        contact = s.scalars(select(Contact)).one()
        assert contact.whatsapp_opt_out is True
        rows = list(s.scalars(select(Outbox)))
        assert [(r.template, r.channel) for r in rows] == [("optout_confirm", "whatsapp")]
    web.send("Stop!")  # already out, just confirmed: a duplicate delivery stays quiet
    web.send("alta")
    with web.rt.sessions() as s:
        assert s.scalars(select(Contact)).one().whatsapp_opt_out is False
        assert [r.template for r in s.scalars(select(Outbox).order_by(Outbox.id))] == [
            "optout_confirm", "optin_confirm"]
    assert count(web.rt, Ticket) == 0


def test_media_are_fetched_with_the_account_credentials_and_stored_once(web: WebApp, twilio: TwilioServer) -> None:
    photo = b"\xff\xd8\xff\xe0" + b"JPEG golpe en la defensa" * 100
    url = twilio.add_media("Accounts/AC1/Messages/MM1/Media/ME1", photo, "image/jpeg")
    web.send("Les mando la foto del golpe", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")
    web.send("Otra vez la misma foto", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")

    def stored() -> bool:
        with web.rt.sessions() as s:
            return all(a.sha256 for a in s.scalars(select(Attachment)))

    wait_until(stored, message="media not stored")
    with web.rt.sessions() as s:
        attachments = list(s.scalars(select(Attachment).order_by(Attachment.id)))
        assert [a.filename for a in attachments] == ["foto-1.jpg", "foto-1.jpg"]
        assert attachments[0].sha256 == attachments[1].sha256
        assert attachments[0].size == len(photo) and attachments[0].source_url is None
        assert s.scalar(select(func.count(Blob.sha256))) == 1
        assert s.get(Blob, attachments[0].sha256).data == photo
        texts = [m.text for m in s.scalars(select(Message).order_by(Message.id))]
    assert texts[0] == "Les mando la foto del golpe\n[Adjunto: foto-1.jpg]"
    media_requests = [r for r in twilio.requests if r.path.startswith("/media/")]
    assert media_requests and all(r.auth == (twilio.account_sid, twilio.auth_token) for r in media_requests)


def test_a_failed_media_fetch_keeps_the_url_says_so_and_is_retried(
    web_factory: Callable[..., WebApp], twilio: TwilioServer
) -> None:
    web = web_factory(media_policy=RetryPolicy(first_delay=timedelta(seconds=1)))
    url = twilio.add_media("voice/ME2", b"OggS nota de voz", "audio/ogg")
    twilio.fail_media_next(1, status=503)
    web.send("", NumMedia="1", MediaUrl0=url, MediaContentType0="audio/ogg")

    def attachment() -> Attachment:
        with web.rt.sessions() as s:
            return s.scalars(select(Attachment)).one()

    failed = wait_until(lambda: (a := attachment()).fetch_attempts == 1 and a, message="no failed attempt")
    assert failed.sha256 is None and failed.source_url == url and "503" in failed.fetch_error
    with web.rt.sessions() as s:
        assert s.scalars(select(Message)).one().text == "[Adjunto: audio-1.ogg — pendiente de descarga]"
    stored = wait_until(lambda: (a := attachment()).sha256 and a, message="media never stored")
    assert stored.source_url is None and stored.size == len(b"OggS nota de voz")
    with web.rt.sessions() as s:
        assert s.scalars(select(Message)).one().text == "[Adjunto: audio-1.ogg]"
        assert s.scalars(select(Ticket)).one().subject == "Mensaje por WhatsApp"


def test_a_shared_location_becomes_text(web: WebApp) -> None:
    web.send("", Latitude="19.4326", Longitude="-99.1332", Label="Taller Norte", Address="Av. Central 10")
    with web.rt.sessions() as s:
        assert s.scalars(select(Message)).one().text == "Ubicación: 19.4326, -99.1332 (Taller Norte, Av. Central 10)"


def test_a_message_that_cannot_be_kept_is_answered_503(web_factory: Callable[..., WebApp]) -> None:
    web = web_factory(pump=False, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    response = web.post_signed("/webhooks/twilio/whatsapp", inbound(body="hola"))
    assert response.status_code == 503  # Twilio retries later


def test_messages_kept_before_a_crash_are_processed_when_the_web_starts(
    rt: Runtime, web_factory: Callable[..., WebApp]
) -> None:
    from urllib.parse import urlencode

    body = urlencode(inbound(body="Lo mandé justo antes del reinicio")).encode()
    keep_raw(rt.sessions, source="whatsapp", data=body, envelope_from=WA_FROM)
    web = web_factory()
    web.processed()
    assert count(web.rt, Ticket) == 1


def test_a_message_with_nothing_to_read_opens_nothing(web: WebApp) -> None:
    web.send("", MessageType="unsupported")
    assert (count(web.rt, Ticket), count(web.rt, Message), count(web.rt, Outbox)) == (0, 0, 0)
    with web.rt.sessions() as s:
        assert s.scalars(select(RawMessage)).one().status == "done"


def test_the_same_sid_threaded_by_two_processors_at_once_is_stored_once(rt: Runtime) -> None:
    import threading
    from urllib.parse import urlencode

    from inbound.process import Processor

    for round_ in range(8):
        body = urlencode(inbound(body=f"Mensaje repetido {round_}")).encode()
        ids = [keep_raw(rt.sessions, source="whatsapp", data=body, envelope_from=WA_FROM) for _ in range(2)]
        barrier = threading.Barrier(2)
        outcomes: list[str | None] = []

        def work(raw_id: int, barrier: threading.Barrier, outcomes: list[str | None]) -> None:
            processor = Processor(rt.sessions, rt.settings, rt.catalog)
            barrier.wait()
            outcomes.append(processor.process(raw_id))

        threads = [threading.Thread(target=work, args=(raw_id, barrier, outcomes)) for raw_id in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sum(1 for o in outcomes if o and o.startswith("duplicate")) == 1, outcomes
    assert (count(rt, Message), count(rt, Ticket)) == (8, 1)

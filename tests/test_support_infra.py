"""The real-part test servers work, for real: SMTP sink, Dovecot and the local Twilio.

Other tests rely on these servers to tell the truth, so each promise they make (counts,
faults, TLS, AUTH, IDLE, restarts, Twilio's wire format and signatures) is checked here
with real clients: smtplib, imapclient and the official twilio package.
"""

from __future__ import annotations

import base64
import contextlib
import json
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qs
from urllib.request import ProxyHandler, Request, build_opener

import imapclient
import pytest
from imapclient.exceptions import IMAPClientAbortError, LoginError
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.support import fixtures
from tests.support.dovecot import Dovecot, DovecotMissing
from tests.support.fixtures import INBOX_PASSWORD, INBOX_USER, RELAY_PASSWORD, RELAY_USER
from tests.support.ports import free_port, port_is_open, wait_until
from tests.support.smtp_sink import SmtpSink
from tests.support.twilio_server import (
    LocalTwilioHttpClient,
    TwilioServer,
    signed_webhook_post,
)

# The fixtures under test, bound here so that this module does not depend on what
# tests/conftest.py imports (not ``pytest_plugins``: with the conftest importing the same
# module first, pytest would warn that it cannot rewrite it, an error here).
smtp_sink = fixtures.smtp_sink
smtp_relay_tls = fixtures.smtp_relay_tls
dovecot = fixtures.dovecot
imap_url = fixtures.imap_url
twilio_server = fixtures.twilio_server

pytestmark = pytest.mark.timeout(60)

WHATSAPP_FROM = "whatsapp:+14155238886"
WHATSAPP_TO = "whatsapp:+5215512345678"


def _mail(subject: str) -> bytes:
    return (
        f"From: Sender <sender@example.com>\r\nTo: inbox@jhleasing.mx\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '-')}@example.com>\r\n"
        f"\r\nHola, {subject}.\r\n"
    ).encode()


# -- ports ---------------------------------------------------------------------------------


def test_free_port_can_be_bound_and_nothing_listens_there() -> None:
    port = free_port()
    assert not port_is_open("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls: list[int] = []

    def ready() -> list[int] | None:
        calls.append(1)
        return calls if len(calls) >= 3 else None

    assert wait_until(ready, timeout=2) == [1, 1, 1]


def test_wait_until_fails_with_the_message_describing_the_state_reached() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"outbox not drained: 2 left \(waited 0.2s\)"):
        wait_until(lambda: False, timeout=0.2, message=lambda: "outbox not drained: 2 left")
    assert time.monotonic() - started < 2


# -- SMTP sink -------------------------------------------------------------------------------


def test_sink_records_three_mails_sent_over_one_connection(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        for n in range(3):
            client.sendmail("sender@example.com", ["inbox@jhleasing.mx"], _mail(f"mail {n}"))

    mails = smtp_sink.wait_for_mail(3)

    assert [m.message["Subject"] for m in mails] == ["mail 0", "mail 1", "mail 2"]
    assert mails[0].mail_from == "sender@example.com"
    assert mails[0].rcpt_tos == ("inbox@jhleasing.mx",)
    assert mails[0].data == _mail("mail 0")
    assert mails[0].message.get_content().rstrip() == "Hola, mail 0."
    assert smtp_sink.connections == 1
    assert {m.connection for m in mails} == {1}


def test_sink_counts_each_new_connection(smtp_sink: SmtpSink) -> None:
    for n in range(2):
        with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
            client.sendmail("sender@example.com", ["a@example.com"], _mail(f"c {n}"))

    assert [m.connection for m in smtp_sink.wait_for_mail(2)] == [1, 2]
    assert smtp_sink.connections == 2


def test_sink_fail_next_answers_451_twice_then_accepts(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next(2, code=451, text="4.3.0 try later")
    codes: list[int] = []
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        for _ in range(2):
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("sender@example.com", ["a@example.com"], _mail("retry"))
            codes.append(refused.value.smtp_code)
            assert refused.value.smtp_error == b"4.3.0 try later"
        client.sendmail("sender@example.com", ["a@example.com"], _mail("retry"))

    assert codes == [451, 451]
    assert len(smtp_sink.wait_for_mail(1)) == 1


def test_sink_reject_all_at_rcpt_refuses_until_reset(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject_all(550, "5.1.1 no such user", at="rcpt")
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("sender@example.com", ["gone@example.com"], _mail("x"))
        assert refused.value.recipients == {"gone@example.com": (550, b"5.1.1 no such user")}
        client.rset()
        smtp_sink.reset()
        client.sendmail("sender@example.com", ["back@example.com"], _mail("y"))

    [mail] = smtp_sink.wait_for_mail(1)
    assert mail.rcpt_tos == ("back@example.com",)


def test_sink_wait_for_mail_fails_with_what_arrived(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        client.sendmail("sender@example.com", ["a@example.com"], _mail("only one"))

    with pytest.raises(AssertionError, match="expected 2 mail.*got 1.*only one"):
        smtp_sink.wait_for_mail(2, timeout=0.3)


def test_relay_accepts_mail_only_after_starttls_and_auth(smtp_relay_tls: SmtpSink) -> None:
    sink = smtp_relay_tls
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth"), "AUTH must not be offered before TLS"
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("sender@example.com", ["a@example.com"], _mail("no auth"))
        assert refused.value.smtp_code == 530

        client.starttls(context=sink.client_ssl_context())
        client.ehlo()
        assert client.has_extn("auth")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(RELAY_USER, "wrong")
        client.login(RELAY_USER, RELAY_PASSWORD)
        client.sendmail("sender@example.com", ["a@example.com"], _mail("secure"))

    [mail] = sink.wait_for_mail(1)
    assert (mail.tls, mail.login) == (True, RELAY_USER)
    assert sink.url == f"smtp://relay%40jhleasing.mx:{RELAY_PASSWORD}@127.0.0.1:{sink.port}"


def test_relay_certificate_is_refused_by_a_default_context(smtp_relay_tls: SmtpSink) -> None:
    with (
        smtplib.SMTP(smtp_relay_tls.host, smtp_relay_tls.port, timeout=10) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=ssl.create_default_context())


def test_sink_auth_login_mechanism_without_tls() -> None:
    with SmtpSink(auth=("user", "pw"), require_auth=True) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            client.ehlo()
            client.user, client.password = "user", "pw"
            code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            assert code == 235
            client.sendmail("sender@example.com", ["a@example.com"], _mail("login"))
        assert sink.wait_for_mail(1)[0].login == "user"
    assert not port_is_open(sink.host, sink.port)


def test_sink_stops_cleanly_under_a_connected_client() -> None:
    sink = SmtpSink().start()
    client = smtplib.SMTP(sink.host, sink.port, timeout=10)
    try:
        client.ehlo()
        sink.stop()
        with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
            client.noop()
    finally:
        client.close()


# -- Dovecot ---------------------------------------------------------------------------------


def test_a_missing_dovecot_says_how_to_install_it() -> None:
    with pytest.raises(DovecotMissing, match=r"\.ci/run.*dovecot-imapd"):
        Dovecot(binary="/nonexistent/dovecot").start()


def test_dovecot_url_quotes_the_user(dovecot: Dovecot, imap_url: str) -> None:
    assert imap_url == f"imap://inbox%40jhleasing.mx:secret@127.0.0.1:{dovecot.port}/INBOX"


def test_dovecot_refuses_a_wrong_password(dovecot: Dovecot) -> None:
    imap = imapclient.IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
    try:
        with pytest.raises(LoginError):
            imap.login(INBOX_USER, "wrong")
    finally:
        imap.shutdown()


def test_dovecot_append_then_idle_hears_an_append_from_another_connection(
    dovecot: Dovecot,
) -> None:
    imap = imapclient.IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
    try:
        imap.login(INBOX_USER, INBOX_PASSWORD)
        assert b"IDLE" in imap.capabilities()
        response = imap.append("INBOX", _mail("first"), flags=(imapclient.SEEN,))
        assert b"APPENDUID" in response
        imap.select_folder("INBOX")
        imap.idle()

        uid = dovecot.append(INBOX_USER, "INBOX", _mail("second"))

        events: list[Any] = []
        deadline = time.monotonic() + 10
        while not any(e[1:] == (b"EXISTS",) for e in events) and time.monotonic() < deadline:
            events += imap.idle_check(timeout=1)
        imap.idle_done()
        assert (2, b"EXISTS") in events
        assert uid == 2
        fetched = imap.fetch([uid], ["BODY.PEEK[]"])
        assert fetched[uid][b"BODY[]"] == _mail("second")
    finally:
        with contextlib.suppress(Exception):
            imap.logout()

    assert dovecot.list_uids(INBOX_USER) == [1, 2]
    flags = dovecot.fetch_flags(INBOX_USER)
    assert "\\Seen" in flags[1]
    assert "\\Seen" not in flags[2]


def test_dovecot_restart_keeps_port_mail_and_uidvalidity(dovecot: Dovecot) -> None:
    dovecot.create_mailbox(INBOX_USER, "Procesados")
    dovecot.append(INBOX_USER, "INBOX", _mail("kept"))
    dovecot.append(INBOX_USER, "Procesados", _mail("done"), flags=("\\Seen",))
    validity, port = dovecot.uidvalidity(INBOX_USER), dovecot.port
    old = imapclient.IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
    old.login(INBOX_USER, INBOX_PASSWORD)
    old.select_folder("INBOX")

    dovecot.restart()

    try:
        with pytest.raises((IMAPClientAbortError, OSError)):
            old.noop()  # a client of the old process sees the connection die ...
    finally:
        old.shutdown()
    assert dovecot.port == port  # ... and reconnects to the same address
    assert dovecot.list_uids(INBOX_USER) == [1]
    assert "\\Seen" in dovecot.fetch_flags(INBOX_USER, "Procesados")[1]
    assert dovecot.uidvalidity(INBOX_USER) == validity


def test_dovecot_stop_frees_the_port_and_close_removes_the_data() -> None:
    server = Dovecot({"other@example.com": "pw with/odd@chars%"}).start()
    try:
        assert "other%40example.com:pw%20with%2Fodd%40chars%25@" in server.url()
        server.append("other@example.com", "INBOX", _mail("x"))
        root, port = server.root, server.port
        server.stop()
        assert not port_is_open(server.host, port)
    finally:
        server.close()
    assert root is not None and not root.exists()


# -- Twilio ------------------------------------------------------------------------------------


@pytest.fixture
def twilio_client(twilio_server: TwilioServer) -> Iterator[Client]:
    """The official client, pointed at the local server exactly as the docstring says."""
    http_client = LocalTwilioHttpClient(twilio_server.base_url, timeout=10)
    yield Client(twilio_server.account_sid, twilio_server.auth_token, http_client=http_client)
    http_client.close()


class _CallbackReceiver:
    """A tiny web app standing in for ours: records each form POST and answers 204."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(
                    (self.path, parse_qs(body.decode()), dict(self.headers.items()))
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhooks/twilio/status"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[_CallbackReceiver]:
    rec = _CallbackReceiver()
    yield rec
    rec.close()


def test_twilio_client_creates_a_message_on_the_local_server(
    twilio_server: TwilioServer, twilio_client: Client
) -> None:
    created = twilio_client.messages.create(
        to=WHATSAPP_TO,
        from_=WHATSAPP_FROM,
        content_sid="HX" + "0" * 32,
        content_variables=json.dumps({"1": "JHL#104236"}),
        status_callback="http://127.0.0.1:9/webhooks/twilio/status",
    )

    assert created.sid.startswith("SM") and len(created.sid) == 34
    int(created.sid[2:], 16)
    assert created.status == "queued"
    assert created.to == WHATSAPP_TO and created.from_ == WHATSAPP_FROM
    assert created.error_code is None and created.date_created is not None
    assert created.account_sid == twilio_server.account_sid
    [request] = twilio_server.requests
    assert request.path == f"/2010-04-01/Accounts/{twilio_server.account_sid}/Messages.json"
    assert request.auth == (twilio_server.account_sid, twilio_server.auth_token)
    assert request.form["To"] == WHATSAPP_TO
    assert request.form["ContentSid"] == "HX" + "0" * 32
    assert request.status == 201 and request.message_sid == created.sid
    assert request.headers["User-Agent"].startswith("twilio-python/")
    [message] = twilio_server.messages
    assert message.content_variables_json == {"1": "JHL#104236"}

    fetched = twilio_client.messages(created.sid).fetch()
    assert fetched.status == "queued" and fetched.body == ""


def test_twilio_429_raises_twilio_rest_exception_then_succeeds(
    twilio_server: TwilioServer, twilio_client: Client
) -> None:
    twilio_server.fail_next(1, status=429, retry_after=2)

    with pytest.raises(TwilioRestException) as raised:
        twilio_client.messages.create(to=WHATSAPP_TO, from_=WHATSAPP_FROM, body="Hola")
    assert (raised.value.status, raised.value.code) == (429, 20429)
    assert "Too Many Requests" in raised.value.msg
    assert twilio_server.requests[0].status == 429

    twilio_client.messages.create(to=WHATSAPP_TO, from_=WHATSAPP_FROM, body="Hola")
    assert len(twilio_server.wait_for_messages(1)) == 1


def test_twilio_503_and_invalid_number_shapes(
    twilio_server: TwilioServer, twilio_client: Client
) -> None:
    twilio_server.fail_next(1, status=503)
    twilio_server.reject_to("+5215500000000")

    with pytest.raises(TwilioRestException) as unavailable:
        twilio_client.messages.create(to=WHATSAPP_TO, from_=WHATSAPP_FROM, body="x")
    with pytest.raises(TwilioRestException) as invalid:
        twilio_client.messages.create(
            to="whatsapp:+5215500000000", from_=WHATSAPP_FROM, body="x"
        )

    assert (unavailable.value.status, unavailable.value.code) == (503, 20503)
    assert (invalid.value.status, invalid.value.code) == (400, 21211)
    assert "+5215500000000" in invalid.value.msg
    assert twilio_server.messages == []


def test_twilio_wrong_token_gets_401_like_twilio(twilio_server: TwilioServer) -> None:
    http_client = twilio_server.http_client()
    try:
        client = Client(twilio_server.account_sid, "wrong", http_client=http_client)
        with pytest.raises(TwilioRestException) as raised:
            client.messages.create(to=WHATSAPP_TO, from_=WHATSAPP_FROM, body="x")
    finally:
        http_client.close()
    assert (raised.value.status, raised.value.code) == (401, 20003)


def test_twilio_api_base_url_alternative_also_reaches_the_server(
    twilio_server: TwilioServer,
) -> None:
    http_client = TwilioHttpClient(timeout=10)
    try:
        client = Client(twilio_server.account_sid, twilio_server.auth_token,
                        http_client=http_client)
        client.api.base_url = twilio_server.base_url
        client.messages.create(to=WHATSAPP_TO, from_=WHATSAPP_FROM, body="via base_url")
    finally:
        assert http_client.session is not None
        http_client.session.close()
    assert twilio_server.messages[0].body == "via base_url"


def test_status_callback_arrives_with_a_signature_the_validator_accepts(
    twilio_server: TwilioServer, twilio_client: Client, receiver: _CallbackReceiver
) -> None:
    created = twilio_client.messages.create(
        to=WHATSAPP_TO, from_=WHATSAPP_FROM, body="Hola", status_callback=receiver.url
    )

    result = twilio_server.send_status_callback(created.sid, "delivered")
    forged = twilio_server.send_status_callback(created.sid, "read", auth_token="not-it")

    assert result.status == 204 and forged.status == 204
    (path, form, headers), (_, forged_form, forged_headers) = receiver.posts
    params = {k: v[0] for k, v in form.items()}
    assert path == "/webhooks/twilio/status"
    assert params["MessageSid"] == created.sid
    assert params["MessageStatus"] == "delivered"
    assert params["ChannelPrefix"] == "whatsapp"
    assert params["AccountSid"] == twilio_server.account_sid
    assert "ErrorCode" not in params
    validator = RequestValidator(twilio_server.auth_token)
    assert validator.validate(receiver.url, params, headers["X-Twilio-Signature"])
    forged_params = {k: v[0] for k, v in forged_form.items()}
    assert not validator.validate(receiver.url, forged_params, forged_headers["X-Twilio-Signature"])
    assert twilio_client.messages(created.sid).fetch().status == "read"


def test_outside_window_freeform_fails_with_63016_through_the_callback(
    twilio_server: TwilioServer, twilio_client: Client, receiver: _CallbackReceiver
) -> None:
    twilio_server.outside_window(WHATSAPP_TO)

    freeform = twilio_client.messages.create(
        to=WHATSAPP_TO, from_=WHATSAPP_FROM, body="Hola", status_callback=receiver.url
    )
    template = twilio_client.messages.create(
        to=WHATSAPP_TO, from_=WHATSAPP_FROM, content_sid="HX" + "1" * 32,
        status_callback=receiver.url,
    )

    assert freeform.status == "queued"  # accepted first, as Twilio does
    [callback] = twilio_server.wait_for_callbacks(1)
    wait_until(lambda: receiver.posts, timeout=5, message="callback not received")
    assert callback.params["MessageSid"] == freeform.sid
    assert (callback.params["MessageStatus"], callback.params["ErrorCode"]) == ("failed", "63016")
    assert RequestValidator(twilio_server.auth_token).validate(
        receiver.url, callback.params, callback.signature
    )
    fetched = twilio_client.messages(freeform.sid).fetch()
    assert (fetched.status, fetched.error_code) == ("failed", 63016)
    assert twilio_server.message(template.sid).status == "queued"


def test_auto_status_callbacks_follow_each_message(
    twilio_server: TwilioServer, twilio_client: Client, receiver: _CallbackReceiver
) -> None:
    twilio_server.auto_status_callbacks(("sent", "delivered"))

    created = twilio_client.messages.create(
        to=WHATSAPP_TO, from_=WHATSAPP_FROM, body="Hola", status_callback=receiver.url
    )

    callbacks = twilio_server.wait_for_callbacks(2)
    assert [c.params["MessageStatus"] for c in callbacks] == ["sent", "delivered"]
    assert {c.params["MessageSid"] for c in callbacks} == {created.sid}


def test_media_needs_the_account_credentials_and_can_fail(twilio_server: TwilioServer) -> None:
    url = twilio_server.add_media("ME1/photo.jpg", b"\xff\xd8jpeg", "image/jpeg")
    opener = build_opener(ProxyHandler({}))
    token = base64.b64encode(
        f"{twilio_server.account_sid}:{twilio_server.auth_token}".encode()
    ).decode()

    def fetch(auth: bool) -> tuple[int, bytes, str]:
        headers = {"Authorization": f"Basic {token}"} if auth else {}
        try:
            with opener.open(Request(url, headers=headers), timeout=10) as response:
                return response.status, response.read(), response.headers["Content-Type"]
        except HTTPError as error:
            with error:
                return error.code, error.read(), error.headers["Content-Type"]

    assert fetch(auth=False)[0] == 401
    twilio_server.fail_media_next(1, status=503)
    assert fetch(auth=True)[0] == 503
    assert fetch(auth=True) == (200, b"\xff\xd8jpeg", "image/jpeg")
    assert url == f"{twilio_server.base_url}/media/ME1/photo.jpg"


def test_signed_webhook_post_is_accepted_by_the_validator() -> None:
    url = "https://helpdesk.example.com/webhooks/twilio/whatsapp?x=1"
    params = {"MessageSid": "SM" + "a" * 32, "Body": "Hola ñ", "From": WHATSAPP_TO}

    headers, body = signed_webhook_post(url, params, "token")

    assert RequestValidator("token").validate(url, params, headers["X-Twilio-Signature"])
    assert not RequestValidator("other").validate(url, params, headers["X-Twilio-Signature"])
    assert parse_qs(body.decode()) == {k: [v] for k, v in params.items()}
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"

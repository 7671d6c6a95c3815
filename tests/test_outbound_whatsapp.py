"""Notifications on WhatsApp, through the official twilio client to a local Twilio server.

Free text inside the 24-hour window, the stage's approved template outside it, email
when WhatsApp cannot carry the message, and retries on Twilio's temporary errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from config.settings import DEFAULT_PIPELINES_FILE, Settings
from models.base import utcnow
from models.contact import Contact
from models.message import Message
from models.notify import enqueue
from outbound.deliver import Deliverer, Outcome
from tests.outbound_helpers import PHONE, build_runtime, delivering, move, open_email_ticket, outbox_rows
from tests.support import fixtures
from tests.support.ports import wait_until
from tests.support.smtp_sink import SmtpSink
from tests.support.twilio_server import TwilioServer
from worker.runtime import Runtime

smtp_sink = fixtures.smtp_sink
twilio_server = fixtures.twilio_server

pytestmark = pytest.mark.timeout(60)

WHATSAPP_FROM = "+14155238886"
WHATSAPP_TO = f"whatsapp:{PHONE}"
TEMPLATE_SID = "HX0123456789abcdef0123456789abcdef"


@pytest.fixture
def pipelines_with_template(tmp_path: Path) -> Path:
    """The shipped catalog with an approved template on mantenimiento · Cita agendada."""
    data = yaml.safe_load(DEFAULT_PIPELINES_FILE.read_text(encoding="utf-8"))
    for stage in data["mantenimiento"]["stages"]:
        if stage["name"] == "Cita agendada":
            stage["whatsapp_template"] = TEMPLATE_SID
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def wa_runtime(make_settings: Callable[..., Settings], twilio_server: TwilioServer, smtp_sink: SmtpSink,
               pipelines_with_template: Path) -> Iterator[Runtime]:
    rt = build_runtime(
        make_settings, twilio_account_sid=twilio_server.account_sid, twilio_auth_token=twilio_server.auth_token,
        twilio_whatsapp_from=WHATSAPP_FROM, twilio_api_base=twilio_server.base_url,
        public_url="https://helpdesk.jhleasing.mx/", outbound_smtp_url=smtp_sink.url,
        pipelines_file=pipelines_with_template,
    )
    yield rt
    rt.close()


@pytest.fixture
def deliverer(wa_runtime: Runtime) -> Iterator[Deliverer]:
    d = Deliverer(wa_runtime.sessions, wa_runtime.settings, wa_runtime.catalog)
    yield d
    d.close()


def whatsapp_ticket(rt: Runtime, *, wrote_hours_ago: float | None, opted_out: bool = False) -> int:
    number = open_email_ticket(rt, phone=PHONE, preferred="whatsapp")
    with rt.transaction() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == PHONE)).one()
        contact.whatsapp_address = WHATSAPP_TO
        contact.whatsapp_opt_out = opted_out
        if wrote_hours_ago is not None:
            contact.last_whatsapp_in_at = utcnow() - timedelta(hours=wrote_hours_ago)
    return number


def test_inside_the_window_the_stage_text_goes_as_free_text_with_a_status_callback(
    wa_runtime: Runtime, deliverer: Deliverer, twilio_server: TwilioServer
) -> None:
    number = whatsapp_ticket(wa_runtime, wrote_hours_ago=1)
    move(wa_runtime, number, "Cita agendada")
    [row] = outbox_rows(wa_runtime)
    assert row.channel == "whatsapp"
    assert deliverer.deliver(row.id) == Outcome.SENT
    [sent] = twilio_server.messages
    assert sent.to == WHATSAPP_TO and sent.from_ == f"whatsapp:{WHATSAPP_FROM}"
    assert sent.content_sid is None and "Cita agendada" in sent.body and str(number) in sent.body
    assert len(sent.body) < 1600
    assert sent.status_callback == "https://helpdesk.jhleasing.mx/webhooks/twilio/status"
    [row] = outbox_rows(wa_runtime)
    assert (row.status, row.provider_id) == ("sent", sent.sid)
    with wa_runtime.sessions() as session:
        out = session.scalars(select(Message).where(Message.outbox_id == row.id)).one()
    assert (out.channel, out.direction, out.external_id) == ("whatsapp", "out", sent.sid)


def test_outside_the_window_the_approved_template_goes_with_its_variables(
    wa_runtime: Runtime, deliverer: Deliverer, twilio_server: TwilioServer
) -> None:
    number = whatsapp_ticket(wa_runtime, wrote_hours_ago=30)
    move(wa_runtime, number, "Cita agendada")
    [row] = outbox_rows(wa_runtime)
    assert deliverer.deliver(row.id) == Outcome.SENT
    [sent] = twilio_server.messages
    assert sent.content_sid == TEMPLATE_SID and sent.body == ""
    assert sent.content_variables_json == {
        "1": "Ana López", "2": str(number), "3": "Cita agendada", "4": "Mantenimiento",
    }


def test_a_contact_who_never_wrote_on_whatsapp_gets_the_template(
    wa_runtime: Runtime, deliverer: Deliverer, twilio_server: TwilioServer
) -> None:
    number = whatsapp_ticket(wa_runtime, wrote_hours_ago=None)
    move(wa_runtime, number, "Cita agendada")
    assert deliverer.deliver(outbox_rows(wa_runtime)[0].id) == Outcome.SENT
    assert twilio_server.messages[0].content_sid == TEMPLATE_SID


def test_force_template_sends_the_template_even_inside_the_window(
    wa_runtime: Runtime, deliverer: Deliverer, twilio_server: TwilioServer
) -> None:
    number = whatsapp_ticket(wa_runtime, wrote_hours_ago=1)
    move(wa_runtime, number, "Cita agendada")
    [row] = outbox_rows(wa_runtime)
    with wa_runtime.transaction() as session:
        session.get(type(row), row.id).payload = {**row.payload, "force_template": True}
    assert deliverer.deliver(row.id) == Outcome.SENT
    assert twilio_server.messages[0].content_sid == TEMPLATE_SID


def test_outside_the_window_without_a_template_the_stage_goes_by_email(
    wa_runtime: Runtime, deliverer: Deliverer, twilio_server: TwilioServer, smtp_sink: SmtpSink
) -> None:
    number = whatsapp_ticket(wa_runtime, wrote_hours_ago=30)
    move(wa_runtime, number, "Cotización solicitada")
    [row] = outbox_rows(wa_runtime)
    assert deliverer.deliver(row.id) == Outcome.SENT
    assert twilio_server.messages == []
    [mail] = smtp_sink.wait_for_mail(1)
    assert f"[JHL#{number}]" in mail.message["Subject"]
    [row] = outbox_rows(wa_runtime)
    assert row.channel == "email" and row.payload["fallback_from"] == "whatsapp"


def test_twilio_429_then_success_is_retried_and_sent_once(
    wa_runtime: Runtime, deliverer: Deliverer, twilio_server: TwilioServer
) -> None:
    number = whatsapp_ticket(wa_runtime, wrote_hours_ago=1)
    move(wa_runtime, number, "Cita agendada")
    [row] = outbox_rows(wa_runtime)
    twilio_server.fail_next(1, 429)
    assert deliverer.deliver(row.id) == Outcome.RETRY
    [waiting] = outbox_rows(wa_runtime)
    assert waiting.status == "pending" and "429" in (waiting.last_error or "")
    wait_until(lambda: deliverer.deliver(row.id) == Outcome.SENT, timeout=10)
    assert len(twilio_server.messages) == 1
    assert [r.status for r in twilio_server.requests] == [429, 201]
    [row] = outbox_rows(wa_runtime)
    assert row.attempts == 2 and row.status == "sent"


def test_an_invalid_number_falls_back_to_email(
    wa_runtime: Runtime, deliverer: Deliverer, twilio_server: TwilioServer, smtp_sink: SmtpSink
) -> None:
    number = whatsapp_ticket(wa_runtime, wrote_hours_ago=1)
    twilio_server.reject_to(PHONE, code=21211)
    move(wa_runtime, number, "Cita agendada")
    [row] = outbox_rows(wa_runtime)
    assert deliverer.deliver(row.id) == Outcome.SENT
    [mail] = smtp_sink.wait_for_mail(1)
    assert "Cita agendada" in mail.message["Subject"]
    [row] = outbox_rows(wa_runtime)
    assert (row.status, row.channel) == ("sent", "email")
    assert row.payload["tried_channels"] == ["whatsapp"]


def test_an_invalid_number_without_email_fails_with_the_reason(
    wa_runtime: Runtime, deliverer: Deliverer, twilio_server: TwilioServer
) -> None:
    number = open_email_ticket(wa_runtime, email="", phone=PHONE, preferred="whatsapp")
    twilio_server.reject_to(PHONE, code=21211)
    move(wa_runtime, number, "Cita agendada")
    [row] = outbox_rows(wa_runtime)
    assert deliverer.deliver(row.id) == Outcome.FAILED
    [row] = outbox_rows(wa_runtime)
    assert row.status == "failed" and "21211" in (row.last_error or "")


def test_an_opted_out_contact_gets_email_but_still_the_opt_out_confirmation_on_whatsapp(
    wa_runtime: Runtime, deliverer: Deliverer, twilio_server: TwilioServer, smtp_sink: SmtpSink
) -> None:
    number = whatsapp_ticket(wa_runtime, wrote_hours_ago=0.1, opted_out=True)
    with wa_runtime.transaction() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == PHONE)).one()
        confirm = enqueue(session, ticket=None, contact=contact, template="optout_confirm", channel="whatsapp")
        assert confirm is not None
        confirm_id = confirm.id
    move(wa_runtime, number, "Cita agendada")
    stage_id = outbox_rows(wa_runtime, "stage")[0].id
    assert deliverer.deliver(confirm_id) == Outcome.SENT
    assert deliverer.deliver(stage_id) == Outcome.SENT
    [sent] = twilio_server.messages
    assert "WhatsApp" in sent.body and sent.to == WHATSAPP_TO
    [mail] = smtp_sink.wait_for_mail(1)
    assert "Cita agendada" in mail.message["Subject"]


def test_without_twilio_configured_whatsapp_rows_go_by_email(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url) as (rt, deliverer):
        number = whatsapp_ticket(rt, wrote_hours_ago=1)
        move(rt, number, "Cita agendada")
        assert deliverer.deliver(outbox_rows(rt)[0].id) == Outcome.SENT
        assert len(smtp_sink.wait_for_mail(1)) == 1

"""classify: loops, bounces and auto-replies never reach a ticket as a customer message."""

from __future__ import annotations

from pathlib import Path

import pytest

from inbound.bounce import find_bounce
from inbound.classify import classify
from inbound.parse import parse_message

MAIL = Path(__file__).parent / "mail"
OWN = {"soporte@jhleasing.mx"}
OUR_ID = "jhl.104231.a1b2c3@helpdesk.jhleasing.mx"


def _is_own(message_id: str) -> bool:
    return message_id.endswith("@helpdesk.jhleasing.mx")


def mail(
    extra: str = "",
    *,
    subject: str = "Re: [JHL#104231] Cita",
    sender: str = "ana@cliente.mx",
    mid: str = "<c1@cliente.mx>",
    body: str = "Hola.\n",
) -> bytes:
    head = (
        f"From: Ana <{sender}>\nTo: soporte@jhleasing.mx\nSubject: {subject}\n"
        f"Date: Mon, 03 Mar 2025 10:12:00 -0600\nMessage-ID: {mid}\n"
    )
    return (head + (extra.strip() + "\n" if extra else "") + "\n" + body).encode()


def kind_of(raw: bytes) -> str:
    return classify(parse_message(raw), own_addresses=OWN, is_own_message_id=_is_own).kind


def test_a_customer_reply_carrying_our_message_id_is_a_message_not_a_loop():
    raw = mail(f"In-Reply-To: <{OUR_ID}>\nReferences: <{OUR_ID}>")
    assert kind_of(raw) == "message"


def test_our_own_message_id_coming_back_is_a_loop():
    assert kind_of(mail(mid=f"<{OUR_ID}>")) == "loop"


def test_mail_from_our_own_inbox_is_a_loop_whatever_its_case():
    assert kind_of(mail(sender="Soporte@JHLeasing.mx")) == "loop"


def test_a_loop_wins_over_an_auto_reply():
    result = classify(
        parse_message(mail("Auto-Submitted: auto-generated", mid=f"<{OUR_ID}>")),
        own_addresses=OWN,
        is_own_message_id=_is_own,
    )
    assert (result.kind, result.reason) == ("loop", "Message-ID is one of ours")


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "Auto-Submitted: auto-notified; owner-email=x@y.mx",
        "X-Autoreply: yes",
        "X-Autorespond: vacation",
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: list",
        "Precedence: auto_reply",
    ],
)
def test_auto_reply_headers(header: str):
    assert kind_of(mail(header)) == "auto_reply"


@pytest.mark.parametrize("header", ["Auto-Submitted: no", "Precedence: first-class", ""])
def test_headers_that_do_not_mean_auto_reply(header: str):
    assert kind_of(mail(header)) == "message"


@pytest.mark.parametrize(
    "subject",
    [
        "Respuesta automática: [JHL#104231] Cita",
        "Respuesta automatica: Cita",
        "Fuera de la oficina: Re: Cita",
        "Ausente: Cita agendada",
        "Out of Office: Re: Cita",
        "Automatic reply: Cita",
        "Autoreply: Cita",
        "Auto-reply: Cita",
        "Vacaciones",
        "RE: Respuesta automática: Cita",
    ],
)
def test_out_of_office_subjects(subject: str):
    assert kind_of(mail(subject=subject)) == "auto_reply"


@pytest.mark.parametrize(
    "subject",
    [
        "Re: [JHL#104231] Cita",
        "Vacaciones del chofer: ¿quién recoge la unidad?",
        "La unidad estuvo ausente del patio",
        "Cambio automático de aceite",
    ],
)
def test_subjects_that_only_mention_the_words_are_messages(subject: str):
    assert kind_of(mail(subject=subject)) == "message"


def test_auto_response_suppress_with_an_oof_looking_subject():
    raw = mail("X-Auto-Response-Suppress: OOF", subject="Re: Cita (fuera de la oficina)")
    assert kind_of(raw) == "auto_reply"


def test_auto_response_suppress_alone_is_not_an_auto_reply():
    assert kind_of(mail("X-Auto-Response-Suppress: All")) == "message"


def test_permanent_dsn_reports_the_recipient_and_our_original_message():
    parsed = parse_message((MAIL / "dsn_permanent.eml").read_bytes())
    result = classify(parsed, own_addresses=OWN, is_own_message_id=_is_own)
    assert result.kind == "bounce"
    assert result.bounce.original_message_id == OUR_ID
    (recipient,) = result.bounce.recipients
    assert (recipient.email, recipient.status, recipient.permanent) == ("nadie@cliente.mx", "5.1.1", True)
    assert "User unknown" in recipient.diagnostic


def test_temporary_dsn_with_only_the_original_headers():
    bounce = find_bounce(parse_message((MAIL / "dsn_temporary.eml").read_bytes()))
    assert bounce.original_message_id == OUR_ID
    assert [(r.status, r.permanent, r.action) for r in bounce.recipients] == [("4.2.2", False, "delayed")]


def test_dsn_lists_only_failed_recipients():
    bounce = find_bounce(parse_message((MAIL / "dsn_multiple_recipients.eml").read_bytes()))
    assert [r.email for r in bounce.recipients] == ["malo@cliente.mx", "otro@cliente.mx"]


@pytest.mark.parametrize("name", ["bounce_mailer_daemon_plain", "bounce_exchange_postmaster_es"])
def test_text_bounces_find_the_failed_address_and_our_message(name: str):
    bounce = find_bounce(parse_message((MAIL / f"{name}.eml").read_bytes()))
    assert bounce.report_type == "text"
    assert bounce.original_message_id == OUR_ID
    assert len(bounce.recipients) == 1 and bounce.recipients[0].permanent


def test_a_bounce_wins_over_auto_submitted():
    assert kind_of((MAIL / "dsn_permanent.eml").read_bytes()) == "bounce"


def test_a_null_return_path_alone_is_an_auto_reply_not_a_bounce():
    raw = mail("Return-Path: <>\nAuto-Submitted: auto-replied", subject="Gracias por escribir")
    assert kind_of(raw) == "auto_reply"


def test_a_null_return_path_with_a_bounce_subject_is_a_bounce():
    raw = mail(
        "Return-Path: <>",
        subject="Mail delivery failed: returning message to sender",
        sender="noreply@mx.cliente.mx",
        body="The following address failed:\n\n  juan@cliente.mx\n    550 unknown user\n",
    )
    parsed = parse_message(raw)
    result = classify(parsed, own_addresses=OWN, is_own_message_id=_is_own)
    assert result.kind == "bounce"
    assert [(r.email, r.status) for r in result.bounce.recipients] == [("juan@cliente.mx", "5.0.0")]


def test_a_customer_writing_about_a_failed_delivery_is_a_message():
    raw = mail(subject="Entrega de la unidad", body="La entrega falló, ¿cuándo la reprograman?\n")
    assert kind_of(raw) == "message"


def test_a_read_receipt_is_an_auto_reply():
    assert kind_of((MAIL / "read_receipt.eml").read_bytes()) == "auto_reply"


def test_classification_says_why():
    result = classify(parse_message(mail("Precedence: bulk")), own_addresses=OWN, is_own_message_id=_is_own)
    assert result.reason == "Precedence: bulk" and result.bounce is None

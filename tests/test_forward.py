"""find_forward: a staff forward yields the original customer, subject, date and text."""

from __future__ import annotations

import pytest

from inbound.forward import find_forward, parse_address
from inbound.parse import Address, parse_message


def mail(subject: str, body: str, extra: str = "") -> bytes:
    head = (
        "From: Laura <laura.ruiz@jhleasing.mx>\nTo: soporte@jhleasing.mx\n"
        f"Subject: {subject}\nMessage-ID: <f1@jhleasing.mx>\n{extra}"
        "Content-Type: text/plain; charset=utf-8\n\n"
    )
    return (head + body).encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Pérez, Ana" <ana@cliente.mx>', Address("Pérez, Ana", "ana@cliente.mx")),
        ("Ana Pérez [mailto:ana@cliente.mx]", Address("Ana Pérez", "ana@cliente.mx")),
        ("Ana Pérez <mailto:Ana@Cliente.mx>", Address("Ana Pérez", "ana@cliente.mx")),
        ("**Ana Pérez** <ana@cliente.mx>", Address("Ana Pérez", "ana@cliente.mx")),
        ("ana@cliente.mx", Address(None, "ana@cliente.mx")),
        ("<ana@cliente.mx>", Address(None, "ana@cliente.mx")),
        ("Ana Pérez (ana@cliente.mx)", Address("Ana Pérez", "ana@cliente.mx")),
        ("Ana Pérez", Address("Ana Pérez", None)),
        ("'ana@cliente.mx' <ana@cliente.mx>", Address(None, "ana@cliente.mx")),
    ],
)
def test_forwarded_addresses_in_every_usual_shape(value: str, expected: Address):
    assert parse_address(value) == expected


def test_gmail_spanish_forward():
    body = (
        "Porfa abre ticket.\n\n---------- Mensaje reenviado ---------\n"
        "De: Ana Pérez <ana@cliente.mx>\nDate: lun, 3 mar 2025 a las 9:05\n"
        "Subject: Falla\nTo: <laura.ruiz@jhleasing.mx>\n\nNo enciende la unidad 4.\n\n"
        "El dom, 2 mar 2025 a las 8:00, Pedro <p@cliente.mx> escribió:\n> antes\n"
    )
    fwd = find_forward(parse_message(mail("Fwd: Falla", body)))
    assert fwd.from_ == Address("Ana Pérez", "ana@cliente.mx")
    assert (fwd.subject, fwd.date) == ("Falla", "lun, 3 mar 2025 a las 9:05")
    assert fwd.text == "No enciende la unidad 4."


def test_outlook_block_in_a_forward_with_wrapped_recipients():
    body = (
        "Va.\n\n________________________________\nDe: Ana Pérez [mailto:ana@cliente.mx]\n"
        "Enviado el: lunes, 3 de marzo de 2025 09:05\nPara: Laura <l@jhleasing.mx>; Otro\n"
        " <o@jhleasing.mx>\nAsunto: Balatas\n\nCotización de balatas.\n"
    )
    fwd = find_forward(parse_message(mail("RV: Balatas", body)))
    assert fwd.from_.email == "ana@cliente.mx" and fwd.subject == "Balatas"
    assert fwd.date == "lunes, 3 de marzo de 2025 09:05"
    assert fwd.text == "Cotización de balatas."


@pytest.mark.parametrize("prefix", ["RV:", "FW:", "Fwd:", "Reenviado:", "RE: RV:"])
def test_outlook_original_message_under_forward_subjects(prefix: str):
    body = (
        "Mira.\n\n-----Original Message-----\nFrom: Ana <ana@cliente.mx>\nSent: Monday\n"
        "To: Laura\nSubject: Frenos\n\nLos frenos suenan.\n"
    )
    fwd = find_forward(parse_message(mail(f"{prefix} Frenos", body)))
    assert fwd is not None and fwd.text == "Los frenos suenan."


def test_outlook_block_at_the_top_of_a_re_mail_is_a_forward():
    body = "De: Ana <ana@cliente.mx>\nEnviado: lunes\nPara: Laura\nAsunto: Urgente\n\nGrúa por favor.\n"
    fwd = find_forward(parse_message(mail("RE: Urgente", body)))
    assert fwd.from_.email == "ana@cliente.mx" and fwd.text == "Grúa por favor."


def test_a_customer_reply_with_our_mail_quoted_below_is_not_a_forward():
    body = (
        "Autorizo.\n\n________________________________\nDe: Soporte <soporte@jhleasing.mx>\n"
        "Enviado: lunes\nPara: Ana\nAsunto: [JHL#104231] Cotización\n\nSu cotización...\n"
    )
    assert find_forward(parse_message(mail("RE: [JHL#104231] Cotización", body))) is None


def test_an_outlook_block_without_a_forward_subject_is_not_a_forward():
    body = "De: Ana <ana@cliente.mx>\nEnviado: lunes\nPara: Laura\nAsunto: X\n\nHola\n"
    assert find_forward(parse_message(mail("Pregunta", body))) is None


@pytest.mark.parametrize("marker", ["Begin forwarded message:", "Inicio del mensaje reenviado:"])
def test_apple_mail_forward(marker: str):
    body = (
        f"{marker}\n\nFrom: Ana Pérez <ana@cliente.mx>\nSubject: Parabrisas\n"
        "Date: March 3, 2025 at 9:05:00 AM CST\nTo: laura@jhleasing.mx\n\nSe estrelló.\n"
    )
    fwd = find_forward(parse_message(mail("Fwd: Parabrisas", body)))
    assert fwd.from_ == Address("Ana Pérez", "ana@cliente.mx")
    assert fwd.date == "March 3, 2025 at 9:05:00 AM CST" and fwd.text == "Se estrelló."


def test_forward_as_attachment_reads_the_attached_message():
    inner = (
        "From: =?utf-8?q?P=C3=A9rez=2C_Ana?= <ana@cliente.mx>\nSubject: Llantas\n"
        "Date: Mon, 03 Mar 2025 09:05:00 -0600\nMessage-ID: <o1@cliente.mx>\n\n"
        "Cuatro llantas, folio 104231.\n"
    )
    body = f"--b\nContent-Type: text/plain\n\nVa adjunto.\n--b\nContent-Type: message/rfc822\n\n{inner}--b--\n"
    raw = mail("Fw: Llantas", body).replace(
        b"Content-Type: text/plain; charset=utf-8", b'Content-Type: multipart/mixed; boundary="b"'
    )
    fwd = find_forward(parse_message(raw))
    assert fwd.from_ == Address("Pérez, Ana", "ana@cliente.mx")
    assert (fwd.subject, fwd.date) == ("Llantas", "2025-03-03T09:05:00-06:00")
    assert fwd.text == "Cuatro llantas, folio 104231."


def test_a_plain_message_forwards_nothing():
    assert find_forward(parse_message(mail("Hola", "Necesito servicio.\n"))) is None


def test_a_marker_without_a_from_line_forwards_nothing():
    body = "---------- Forwarded message ---------\n\nsolo texto\n"
    assert find_forward(parse_message(mail("Fwd: x", body))) is None

"""cut_reply keeps only what the customer wrote this time."""

from __future__ import annotations

import pytest

from inbound.quotes import cut_reply

NEW = "Buenos días, ¿ya está lista la unidad?"

CASES = {
    "gmail_es": f"{NEW}\n\nEl lun, 3 mar 2025 a las 10:12, Ana <a@b.mx> escribió:\n> cita\n",
    "gmail_es_wrapped_over_two_lines": (
        f"{NEW}\n\nEl lun, 3 mar 2025 a las 10:12, Soporte JHLeasing (<\nsoporte@jhleasing.mx>) "
        "escribió:\n\n> Su ticket pasó a Cita agendada.\n"
    ),
    "gmail_es_name_wrapped": (
        f"{NEW}\n\nEl lun., 3 mar. 2025 a las 10:12, Soporte\nJHLeasing <soporte@jhleasing.mx> escribió:\n> cita\n"
    ),
    "gmail_es_header_on_three_lines": (f"{NEW}\n\nEl lun, 3 mar 2025\na las 10:12, Ana\n<a@b.mx> escribió:\n> cita\n"),
    "gmail_en": f"{NEW}\n\nOn Mon, Mar 3, 2025 at 10:12 AM Ana <a@b.mx> wrote:\n> quote\n",
    "gmail_en_wrapped": f"{NEW}\n\nOn Mon, Mar 3, 2025 at 10:12 AM Ana <\na@b.mx> wrote:\n> q\n",
    "apple_mail_es": (f"{NEW}\n\nEl 3 mar 2025, a las 10:12, Ana <a@b.mx> escribió:\n\n> cita\n> más\n"),
    "apple_mail_en": f"{NEW}\n\nOn Mar 3, 2025, at 10:12, Ana <a@b.mx> wrote:\n\n> q\n",
    "outlook_es": (
        f"{NEW}\n\n________________________________\nDe: Soporte <soporte@jhleasing.mx>\n"
        "Enviado: lunes, 3 de marzo de 2025 10:12\nPara: Ana\nAsunto: Cita\n\nSu cita...\n"
    ),
    "outlook_es_enviado_el": (
        f"{NEW}\n\nDe: Soporte [mailto:soporte@jhleasing.mx]\nEnviado el: lunes, 3 de marzo\n"
        "Para: Ana\nCC: Pedro\nAsunto: Cita\n\nSu cita...\n"
    ),
    "outlook_es_bold_from_html": (
        f"{NEW}\n\n*De:* Soporte <soporte@jhleasing.mx>\n*Enviado:* lunes\n*Para:* Ana\n*Asunto:* Cita\n\nSu cita...\n"
    ),
    "outlook_en": (
        f"{NEW}\n\n________________________________\nFrom: Support <s@x.mx>\nSent: Monday\n"
        "To: Ana\nSubject: Appointment\n\nYour appointment...\n"
    ),
    "outlook_fecha": f"{NEW}\n\nDe: Soporte\nFecha: 3 de marzo\nPara: Ana\nAsunto: X\n\nSu...\n",
    "mensaje_original": f"{NEW}\n\n-----Mensaje original-----\nDe: Soporte\nAsunto: x\n\nhola\n",
    "original_message": f"{NEW}\n\n-----Original Message-----\nFrom: S\nSubject: x\n\nhi\n",
    "quoted_lines_only": f"{NEW}\n\n> línea citada\n> otra línea\n",
    "signature_dash_space": f"{NEW}\n\n-- \nAna Pérez\nGerente de Flota\n",
    "signature_dash_no_space": f"{NEW}\n--\nAna Pérez\n",
    "enviado_desde_iphone": f"{NEW}\n\nEnviado desde mi iPhone\n",
    "sent_from_iphone": f"{NEW}\n\nSent from my iPhone\n",
    "huawei": f"{NEW}\n\nEnviado desde mi teléfono Huawei\n",
    "samsung": f"{NEW}\n\nEnviado desde mi Samsung Galaxy smartphone.\n",
    "outlook_android": f"{NEW}\n\nObtener Outlook para Android\n",
    "outlook_ios_en": f"{NEW}\n\nGet Outlook for iOS\n",
    "mobile_then_quote": (
        f"{NEW}\n\nEnviado desde mi iPhone\n\nEl 3 mar 2025, a las 10:12, S <s@x.mx> escribió:\n> q\n"
    ),
    "disclaimer_es": (f"{NEW}\n\nAVISO DE CONFIDENCIALIDAD: Este correo electrónico es confidencial.\n"),
    "disclaimer_este_correo": (
        f"{NEW}\n\nEste correo electrónico y sus anexos son confidenciales y para uso exclusivo.\n"
    ),
    "disclaimer_en": (
        f"{NEW}\n\nThis e-mail and any attachments are confidential and intended solely for the addressee.\n"
    ),
    "disclaimer_then_outlook_block": (
        f"{NEW}\n\nAviso de privacidad: consulte www.cliente.mx/privacidad\n\n"
        "De: S <s@x.mx>\nEnviado: lunes\nPara: Ana\nAsunto: x\n\nhola\n"
    ),
    "forward_marker": f"{NEW}\n\n---------- Mensaje reenviado ---------\nDe: Ana <a@b.mx>\n\nx\n",
    "begin_forwarded": f"{NEW}\n\nBegin forwarded message:\n\nFrom: Ana <a@b.mx>\n\nx\n",
    "crlf_line_endings": f"{NEW}\r\n\r\nOn Mon, Mar 3, 2025 at 10:12 AM Ana <a@b.mx> wrote:\r\n> q\r\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_only_the_new_text_is_kept(name: str):
    assert cut_reply(CASES[name]) == NEW


def test_text_without_any_quote_is_kept_whole():
    text = "Hola.\n\nLa unidad 45 tiene una falla en el motor.\n\nGracias,\nAna"
    assert cut_reply(text) == text


def test_empty_text_stays_empty():
    assert cut_reply("") == ""


def test_a_bottom_posted_answer_is_found_below_the_quote():
    text = "El lun, 3 mar 2025 a las 10:12, S <s@x.mx> escribió:\n> pregunta\n\nRespuesta.\n"
    assert cut_reply(text) == "Respuesta."


def test_a_bottom_posted_answer_loses_its_signature():
    assert cut_reply("> pregunta\n> más\n\nRespuesta.\n-- \nAna\n") == "Respuesta."


def test_inline_answers_keep_the_answers_and_drop_the_quotes():
    text = "> ¿Placas?\nABC-123-D\n\n> ¿Kilometraje?\n45,000 km\n"
    assert cut_reply(text) == "ABC-123-D\n\n45,000 km"


def test_a_mail_that_is_only_a_quote_has_no_new_text():
    assert cut_reply("On Mon, Mar 3, 2025 at 10:12 AM S <s@x.mx> wrote:\n> hi\n") == ""


def test_a_sentence_starting_with_el_is_not_a_reply_header():
    text = "El vehículo no enciende.\nEl mecánico dijo que escribió:\nnada"
    assert cut_reply(text) == text


def test_a_disclaimer_as_the_only_text_is_not_cut_to_nothing():
    text = "Este correo es confidencial y contiene el folio 104231 de la unidad."
    assert cut_reply(text) == text


def test_disclaimer_words_inside_a_paragraph_are_kept():
    text = "Le confirmo que\neste correo es para agendar la cita."
    assert cut_reply(text) == text


def test_the_earliest_marker_wins():
    text = f"{NEW}\n-- \nAna\n\nEl lun, 3 mar 2025 a las 10:12, S <s@x.mx> escribió:\n> q\n"
    assert cut_reply(text) == NEW


def test_a_line_of_dashes_in_the_text_is_not_a_signature():
    text = "Lista:\n---\n1. frenos\n2. llantas"
    assert cut_reply(text) == text


def test_an_outlook_from_line_without_its_fields_is_kept():
    text = "De: parte de la gerencia, favor de revisar la unidad.\nGracias"
    assert cut_reply(text) == text


def test_blank_runs_are_collapsed_and_edges_stripped():
    assert cut_reply("\n\nHola\n\n\n\nAdiós\n\n") == "Hola\n\nAdiós"


def test_new_text_is_never_lost_when_it_precedes_the_quote():
    for name, text in CASES.items():
        assert cut_reply(text), name

"""What a WhatsApp text means on its own: opt words, survey scores, locations, media names."""

from __future__ import annotations

import pytest

from inbound.whatsapp_words import location_text, media_filename, opt_word, subject_from, survey_score


@pytest.mark.parametrize("text", ["STOP", "Stop", "stop.", "BAJA", "baja!", " Baja ", "¡BAJA!", "Dar de baja",
                                  "UNSUBSCRIBE", "baja 🙏"])
def test_opt_out_words(text: str) -> None:
    assert opt_word(text) == "out"


@pytest.mark.parametrize("text", ["ALTA", "alta", "Alta.", "START", "start!", "dar de alta"])
def test_opt_in_words(text: str) -> None:
    assert opt_word(text) == "in"


@pytest.mark.parametrize("text", ["", None, "no me den de baja", "stop por favor no",
                                  "quiero dar de alta un vehículo", "bajas", "altas"])
def test_words_inside_a_message_are_content(text: str | None) -> None:
    assert opt_word(text) is None


@pytest.mark.parametrize(("text", "score"), [
    ("5", 5), (" 1 ", 1), ("5️⃣", 5), ("4 estrellas", 4), ("1 estrella", 1), ("5 de 5", 5), ("3/5", 3),
    ("cinco", 5), ("Dos", 2), ("⭐⭐⭐⭐", 4), ("⭐️⭐️⭐️⭐️⭐️", 5), ("★★", 2), ("5!", 5),
    ("Calificación: 4", 4),
])
def test_survey_scores(text: str, score: int) -> None:
    assert survey_score(text) == score


@pytest.mark.parametrize("text", ["", "0", "6", "10", "⭐⭐⭐⭐⭐⭐", "5 llantas", "mi placa es 5",
                                  "123", "4.5", "gracias"])
def test_texts_that_are_not_scores(text: str) -> None:
    assert survey_score(text) is None


def test_the_quick_reply_payload_wins_over_the_text() -> None:
    assert survey_score("Excelente", "survey:5") == 5
    assert survey_score("3", "otro:boton") == 3
    assert survey_score("Excelente", "survey:9") is None


def test_locations() -> None:
    assert location_text("19.4326", "-99.1332") == "Ubicación: 19.4326, -99.1332"
    assert location_text("19.4326", "-99.1332", "Taller", "Av. 1") == "Ubicación: 19.4326, -99.1332 (Taller, Av. 1)"
    assert location_text("19.4326", "-99.1332", "Taller", "Taller") == "Ubicación: 19.4326, -99.1332 (Taller)"
    assert location_text(None, None) is None
    assert location_text("abc", "1") is None
    assert location_text("91", "0") is None


@pytest.mark.parametrize(("content_type", "index", "name"), [
    ("image/jpeg", 1, "foto-1.jpg"), ("image/png", 2, "foto-2.png"), ("audio/ogg", 1, "audio-1.ogg"),
    ("video/mp4", 1, "video-1.mp4"), ("application/pdf", 3, "documento-3.pdf"),
    ("text/vcard", 1, "documento-1.vcf"), ("application/x-unknown-thing", 1, "documento-1.bin"),
    ("", 1, "documento-1.bin"), (None, 1, "documento-1.bin"), ("image/jpeg; charset=binary", 1, "foto-1.jpg"),
])
def test_media_names_come_from_the_content_type(content_type: str | None, index: int, name: str) -> None:
    assert media_filename(content_type, index) == name


def test_subjects_are_the_first_line_shortened() -> None:
    assert subject_from("  Hola\nsegunda línea") == "Hola"
    assert subject_from("") == "Mensaje por WhatsApp"
    long = subject_from("a" * 200)
    assert len(long) == 80 and long.endswith("…")

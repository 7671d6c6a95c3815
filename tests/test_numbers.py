"""Ticket numbers: the Damm check digit and the finder that reads them in free text."""

from __future__ import annotations

import random

import pytest

from models.numbers import check_digit, find_numbers, format_tag, is_valid, make_number

N = make_number(10423)
M = make_number(20777)


def test_make_number_appends_a_check_digit_that_validates() -> None:
    for seq in (10000, 10423, 99999, 123456789):
        number = make_number(seq)
        assert str(number).startswith(str(seq))
        assert is_valid(number)
        assert check_digit(str(number)) == 0


def test_every_single_digit_error_is_caught() -> None:
    rng = random.Random(7)
    for _ in range(300):
        digits = str(make_number(rng.randrange(10000, 10**9)))
        for pos in range(len(digits)):
            for d in "0123456789":
                if d != digits[pos]:
                    assert check_digit(digits[:pos] + d + digits[pos + 1:]) != 0


def test_every_adjacent_swap_is_caught() -> None:
    rng = random.Random(11)
    for _ in range(300):
        digits = str(make_number(rng.randrange(10000, 10**9)))
        for pos in range(len(digits) - 1):
            a, b = digits[pos], digits[pos + 1]
            if a != b:
                swapped = digits[:pos] + b + a + digits[pos + 2:]
                assert check_digit(swapped) != 0


@pytest.mark.parametrize(
    "text",
    [
        f"Re: [JHL#{N}] Cita",
        f"RE: RV: [jhl # {N}] Cotización",
        f"mi folio es el {N}",
        f"Mi número de ticket es {N}, gracias",
        f"ticket no. {N}",
        f"Ticket #{N}",
        f"sobre el #{N} que abrí ayer",
        f"JHL-{N}",
        f"Folio: {N}",
        f"No. de ticket {N}",
        f"ref. {N}",
    ],
)
def test_finder_reads_the_forms_people_write(text: str) -> None:
    assert find_numbers(text, "JHL") == [N]


def test_finder_keeps_order_and_drops_repeats() -> None:
    assert find_numbers(f"ticket {M} y también [JHL#{N}] y folio {M}", "JHL") == [M, N]


def test_finder_rejects_a_number_whose_check_digit_fails() -> None:
    wrong = N + 1 if N % 10 != 9 else N - 1
    assert find_numbers(f"[JHL#{wrong}] folio {wrong}", "JHL") == []


def test_finder_finds_nothing_in_plates_vins_phones_dates_and_amounts() -> None:
    text = (
        "Placas ABC-123-D y JKL-9876, VIN 3VW1K1AJ5EM123456 y 1HGCM82633A004352. "
        "Llámame al 55 1234 5678 o al +52 1 55 8765 4321 o 5512345678. "
        "La cita es el 12/05/2025 a las 10:30, o 2025-05-12. Kilometraje 123456 km. "
        "Importe $12,345.50 MXN, total 104,231.00, factura A-104231, CP 06600, "
        "orden 1042315 y 99999999. Serie 8AJFB8CD5K1234567."
    )
    assert find_numbers(text, "JHL") == []


def test_bare_digits_never_count_even_with_a_valid_check_digit() -> None:
    assert find_numbers(f"el monto fue {N} pesos", "JHL") == []


def test_tag_format() -> None:
    assert format_tag("JHL", N) == f"[JHL#{N}]"


def test_short_numbers_are_never_ticket_numbers() -> None:
    assert not is_valid(make_number(12))
    assert find_numbers(f"ticket {make_number(12)}", "JHL") == []

"""Phone numbers normalise to one E.164 form per person."""

from __future__ import annotations

import pytest

from models.phones import InvalidPhone, normalize_phone


@pytest.mark.parametrize(
    "raw",
    ["+5215512345678", "+525512345678", "whatsapp:+5215512345678", "55 1234 5678",
     "+52 1 55 1234 5678", "(55) 1234-5678", "044 55 1234 5678"],
)
def test_the_mexican_forms_of_one_mobile_are_one_number(raw: str) -> None:
    assert normalize_phone(raw) == "+525512345678"


def test_other_countries_are_kept() -> None:
    assert normalize_phone("+1 415 555 2671") == "+14155552671"
    assert normalize_phone("whatsapp:+34612345678") == "+34612345678"


@pytest.mark.parametrize("raw", ["hola", "", "12", "+52"])
def test_garbage_is_refused(raw: str) -> None:
    with pytest.raises(InvalidPhone):
        normalize_phone(raw)

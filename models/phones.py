"""Phone numbers as E.164, with Mexico's two mobile forms folded into one.

WhatsApp reports Mexican mobiles as ``+52 1 55 ...`` (the old mobile prefix) while people
write ``+52 55 ...`` or just ``55 ...``: they are the same person, so contacts are keyed by
the form without the ``1``. ``phonenumbers`` does the parsing; only the fold is ours.
"""

from __future__ import annotations

import phonenumbers


class InvalidPhone(ValueError):
    """Text that is not a phone number we can write to."""


def normalize_phone(raw: str, default_region: str = "MX") -> str:
    """E.164 for ``raw`` (``whatsapp:`` prefix allowed); Mexican mobiles without the ``1``."""
    text = raw.strip()
    if text.lower().startswith("whatsapp:"):
        text = text[len("whatsapp:"):]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number: {raw!r}") from exc
    if number.country_code == 52:
        national = str(number.national_number)
        if len(national) == 11 and national.startswith("1"):
            national = national[1:]
        elif len(national) == 12 and national[:2] in ("44", "45"):
            national = national[2:]  # the old 044/045 mobile dialling prefix
        number = phonenumbers.PhoneNumber(country_code=52, national_number=int(national))
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhone(f"not a possible phone number: {raw!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

"""Ticket numbers: a sequence value followed by a Damm check digit.

Why Damm and not Luhn: Damm catches every single-digit error and every swap of two
adjacent digits, so a number quoted in free text (``mi folio es el 104236``) can be told
from a plate, a VIN fragment, a phone number or an amount, which will almost never carry
a valid check digit *and* sit behind one of the words that introduce a ticket number.
"""

from __future__ import annotations

import re

# The quasigroup of order 10 from H. Michael Damm's thesis (2004).
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)

MIN_DIGITS = 5  # shorter numbers are too easy to hit by chance
MAX_DIGITS = 12


def check_digit(digits: str) -> int:
    interim = 0
    for ch in digits:
        interim = _DAMM[interim][ord(ch) - 48]
    return interim


def make_number(sequence_value: int) -> int:
    """The ticket number for a sequence value: the value with its check digit appended."""
    if sequence_value < 0:
        raise ValueError("sequence values are positive")
    digits = str(sequence_value)
    return int(digits + str(check_digit(digits)))


def is_valid(number: int | str) -> bool:
    digits = str(number).strip()
    if not digits.isdigit() or not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        return False
    if digits[0] == "0":
        return False
    return check_digit(digits) == 0


def format_tag(prefix: str, number: int) -> str:
    """The subject tag, ``[JHL#104236]``."""
    return f"[{prefix}#{number}]"


_NUM = rf"(\d{{{MIN_DIGITS},{MAX_DIGITS}}})"
_INTRO = (
    r"(?:n[uú]mero\s+de\s+(?:ticket|folio|caso)|no\.?\s+de\s+(?:ticket|folio)"
    r"|ticket|folio|caso|case|ref(?:erencia)?\.?)"
    r"(?:\s*(?:no\.?|n[uú]m\.?|n[uú]mero|nr\.?|#|:|n[°º]|number))*"
)


def _patterns(prefix: str) -> list[re.Pattern[str]]:
    p = re.escape(prefix)
    return [
        re.compile(rf"\[\s*{p}\s*#\s*{_NUM}\s*\]", re.I),  # [JHL#104236]
        re.compile(rf"(?<![\w]){p}\s*[-#]\s*{_NUM}(?!\d)", re.I),  # JHL-104236
        re.compile(rf"(?<![\w]){_INTRO}[\s:#]*(?:es\s+(?:el\s+)?)?{_NUM}(?!\d)", re.I),
        re.compile(rf"(?<![\w#])#\s?{_NUM}(?![\d/.,-]\d)"),  # #104236
    ]


_CACHE: dict[str, list[re.Pattern[str]]] = {}
#: Every pattern needs this many digits in a row: text without them is not scanned
#: four times (most mail bodies; the scans were 3 % of threading a mail).
_ENOUGH_DIGITS = re.compile(rf"\d{{{MIN_DIGITS}}}")


def find_numbers(text: str | None, prefix: str) -> list[int]:
    """Valid ticket numbers mentioned in ``text``, first mention first, no repeats.

    Only numbers introduced as ticket numbers count (the subject tag, ``PREFIX-N``,
    ``ticket N``, ``#N``, ``folio N``, ``número de ticket N`` ...), and only when their
    check digit holds; bare digits (plates, VINs, phones, dates, amounts) never match.
    """
    if not text or not _ENOUGH_DIGITS.search(text):
        return []
    patterns = _CACHE.get(prefix)
    if patterns is None:
        patterns = _CACHE[prefix] = _patterns(prefix)
    found: list[tuple[int, int]] = []
    for pattern in patterns:
        for match in pattern.finditer(text):
            digits = match.group(1)
            if is_valid(digits):
                found.append((match.start(1), int(digits)))
    seen: set[int] = set()
    result: list[int] = []
    for _, number in sorted(found):
        if number not in seen:
            seen.add(number)
            result.append(number)
    return result

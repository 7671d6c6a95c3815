"""Money, quantities, dates and times as a Mexican reader expects them (Babel + zoneinfo).

Why a module of its own: these are pure functions with many edge cases (time zones that
dropped daylight saving time, negative amounts, rounding), so they get plain unit tests,
and the renderer registers them as Jinja filters without the templates knowing about
Babel. Explicit date patterns are used, not Babel's "long"/"full" presets, so that a
CLDR update cannot silently change how an appointment reads.

All datetimes are shown in the recipient's time zone. A naive datetime is taken as UTC,
because that is how the database stores them; converting it as local time would move
an appointment by six hours.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel.dates import format_date as _babel_date
from babel.dates import format_datetime as _babel_datetime
from babel.numbers import format_currency, format_decimal

DEFAULT_LOCALE = "es_MX"
DEFAULT_TIMEZONE = "America/Mexico_City"
CURRENCY = "MXN"

DATE_LONG = "EEEE d 'de' MMMM 'de' y"  # lunes 3 de marzo de 2025
DATE_SHORT = "d 'de' MMMM 'de' y"  # 3 de marzo de 2025
TIME_SHORT = "h:mm a"  # 10:30 a.m.

_CENT = Decimal("0.01")


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def to_decimal(value: Decimal | int | float | str) -> Decimal:
    """``value`` as a Decimal; floats go through ``str`` so 0.1 stays 0.1.

    Raises:
        TypeError: for booleans and anything that is not a number (a template passing
            the wrong field must fail, not print ``$1.00`` for ``True``).
    """
    if isinstance(value, bool):
        raise TypeError("a boolean is not an amount")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | float | str):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise TypeError(f"not a number: {value!r}") from None
    raise TypeError(f"not a number: {value!r}")


def money(amount: Decimal | int | float | str, locale: str = DEFAULT_LOCALE) -> str:
    """``$1,234.50``: rounded half up to cents (as invoices are), never ``-$0.00``."""
    value = to_decimal(amount).quantize(_CENT, rounding=ROUND_HALF_UP)
    if value == 0:
        value = abs(value)
    return format_currency(value, CURRENCY, locale=locale)


def quantity(value: Decimal | int | float | str, locale: str = DEFAULT_LOCALE) -> str:
    """``2``, ``1.5``, ``1,250``: no trailing zeros (``2.000`` liters reads as two).

    Babel's decimal pattern keeps up to three decimals, enough for liters and hours.
    """
    number = to_decimal(value)
    return format_decimal(abs(number) if number == 0 else number, locale=locale)


def to_local(value: datetime, timezone: str = DEFAULT_TIMEZONE) -> datetime:
    """``value`` in ``timezone``; a naive datetime is taken as UTC."""
    if not isinstance(value, datetime):
        raise TypeError(f"not a datetime: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(_zone(timezone))


def date_long(
    value: datetime | date, timezone: str = DEFAULT_TIMEZONE, locale: str = DEFAULT_LOCALE
) -> str:
    """``lunes 3 de marzo de 2025``; a plain date is shown as is (no zone to apply)."""
    return _format_day(value, DATE_LONG, timezone, locale)


def date_short(
    value: datetime | date, timezone: str = DEFAULT_TIMEZONE, locale: str = DEFAULT_LOCALE
) -> str:
    """``3 de marzo de 2025``, for places where the weekday is noise (validity dates)."""
    return _format_day(value, DATE_SHORT, timezone, locale)


def time_short(
    value: datetime, timezone: str = DEFAULT_TIMEZONE, locale: str = DEFAULT_LOCALE
) -> str:
    """``10:30 a.m.`` (12-hour clock, as appointments are told in Mexico)."""
    return _babel_datetime(to_local(value, timezone), TIME_SHORT, locale=locale)


def datetime_long(
    value: datetime, timezone: str = DEFAULT_TIMEZONE, locale: str = DEFAULT_LOCALE
) -> str:
    """``lunes 3 de marzo de 2025 a las 10:30 a.m.`` (``a la 1:15 p.m.`` for one o'clock)."""
    local = to_local(value, timezone)
    article = "a la" if local.hour % 12 == 1 else "a las"
    return f"{date_long(local, timezone, locale)} {article} {time_short(local, timezone, locale)}"


def _format_day(value: datetime | date, pattern: str, timezone: str, locale: str) -> str:
    if isinstance(value, datetime):
        value = to_local(value, timezone)
        return _babel_datetime(value, pattern, locale=locale)
    if isinstance(value, date):
        return _babel_date(value, pattern, locale=locale)
    raise TypeError(f"not a date: {value!r}")

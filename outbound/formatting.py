"""Money, quantities, dates and times as a Mexican reader expects them (Babel + zoneinfo).

Why a module of its own: these are pure functions with many edge cases (time zones that
dropped daylight saving time, negative amounts, rounding), so they get plain unit tests,
and the renderer registers them as Jinja filters without the templates knowing about
Babel. Explicit date patterns are used, not Babel's "long"/"full" presets, so that a
CLDR update cannot silently change how an appointment reads.

All datetimes are shown in the recipient's time zone. A naive datetime is taken as UTC,
because that is how the database stores them; converting it as local time would move
an appointment by six hours.

The second half shapes text per output (paragraphs, emphasis, clipping for WhatsApp):
the same copy is rendered as HTML (autoescaped), plain text and WhatsApp, and these
filters look at the output, never at what the data means.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date as _babel_date
from babel.dates import format_datetime as _babel_datetime
from babel.numbers import format_currency, format_decimal
from jinja2 import pass_context, pass_eval_context
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from markupsafe import Markup, escape

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


def date_long(value: datetime | date, timezone: str = DEFAULT_TIMEZONE, locale: str = DEFAULT_LOCALE) -> str:
    """``lunes 3 de marzo de 2025``; a plain date is shown as is (no zone to apply)."""
    return _format_day(value, DATE_LONG, timezone, locale)


def date_short(value: datetime | date, timezone: str = DEFAULT_TIMEZONE, locale: str = DEFAULT_LOCALE) -> str:
    """``3 de marzo de 2025``, for places where the weekday is noise (validity dates)."""
    return _format_day(value, DATE_SHORT, timezone, locale)


def time_short(value: datetime, timezone: str = DEFAULT_TIMEZONE, locale: str = DEFAULT_LOCALE) -> str:
    """``10:30 a.m.`` (12-hour clock, as appointments are told in Mexico)."""
    return _babel_datetime(to_local(value, timezone), TIME_SHORT, locale=locale)


def datetime_long(value: datetime, timezone: str = DEFAULT_TIMEZONE, locale: str = DEFAULT_LOCALE) -> str:
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


# ---------------------------------------------------------------------------------------
# Output shaping: paragraphs, emphasis and clipping, per output (HTML, text, WhatsApp).

_P_STYLE = {
    "normal": "margin:0 0 16px 0;font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:22px;color:#1f2937;",
    "small": "margin:0 0 8px 0;font-family:Arial,Helvetica,sans-serif;font-size:12px;line-height:18px;color:#6b7280;",
}
# A chunk that starts with a block element is already laid out; inline ones get a <p>.
_BLOCK_CHUNK = re.compile(r"<(?!(?:strong|b|em|i|a|span|br)\b)[a-zA-Z]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


@pass_eval_context
def paragraphs(eval_ctx: EvalContext, value: Any, size: str = "normal") -> str:
    """Blank lines separate paragraphs; in HTML each becomes an inline-styled ``<p>`` and
    single newlines become ``<br>``. Whitespace left by conditionals is tidied away."""
    html = eval_ctx.autoescape
    if html and not isinstance(value, Markup):
        value = escape(value)
    chunks = []
    for chunk in _PARAGRAPH_BREAK.split(str(value)):
        lines = [line.rstrip() for line in chunk.strip("\n").splitlines()]
        if any(lines):
            chunks.append(lines)
    if not html:
        return "\n\n".join("\n".join(lines) for lines in chunks)
    out = []
    for lines in chunks:
        joined = "\n".join(lines).strip()
        if _BLOCK_CHUNK.match(joined):
            out.append(joined)
        else:
            body = "<br>\n".join(line.strip() for line in lines if line.strip())
            out.append(f'<p style="{_P_STYLE[size]}">{body}</p>')
    return Markup("\n".join(out))


@pass_context
def bold(context: Context, value: Any) -> str:
    """Emphasis in the output's own terms: ``<strong>``, WhatsApp ``*x*``, or plain."""
    text = str(value).strip()
    if context.eval_ctx.autoescape:
        return Markup("<strong>%s</strong>") % text
    if context.get("channel") == "whatsapp" and text:
        return f"*{text}*"
    return text


def clip(value: Any, limit: int) -> str:
    """``value`` cut to ``limit`` characters at a word boundary, with an ellipsis."""
    text = str(value).strip()
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    if " " in head[limit // 2 :]:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,.;:\n") + "…"


@pass_context
def short(context: Context, value: Any, limit: int) -> str:
    """Clip free text to ``limit`` characters on WhatsApp only; email shows it whole."""
    if context.get("channel") == "whatsapp":
        return clip(value, limit)
    return value


def oneline(value: Any) -> str:
    """Collapse newlines and runs of spaces: for subjects and one-line labels."""
    return " ".join(str(value).split())


def tidy(text: str) -> str:
    """Trailing spaces off, at most one blank line in a row, one final newline."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def cut_paragraphs(text: str, limit: int) -> str:
    """Last resort: keep the first paragraphs that fit, an ellipsis, and the last paragraph
    (the ticket reference), all within ``limit`` characters."""
    paragraphs = text.strip().split("\n\n")
    last = paragraphs.pop() if len(paragraphs) > 1 else ""
    budget = limit - len(last) - len("\n\n…\n\n\n")
    kept: list[str] = []
    for paragraph in paragraphs:
        if len(paragraph) + 2 > budget:
            break
        kept.append(paragraph)
        budget -= len(paragraph) + 2
    if not kept:
        return text[: limit - 2].rstrip() + "…\n"
    return "\n\n".join([*kept, "…", last]).rstrip() + "\n"

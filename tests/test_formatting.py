"""Money, quantities, dates and times as shown to Mexican customers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from outbound.formatting import (
    date_long,
    date_short,
    datetime_long,
    money,
    quantity,
    time_short,
    to_local,
)


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("1234.5"), "$1,234.50"),
        (Decimal("0"), "$0.00"),
        (Decimal("-0.00"), "$0.00"),
        (Decimal("-0.004"), "$0.00"),
        (Decimal("-1234.5"), "-$1,234.50"),
        (Decimal("1234567890.99"), "$1,234,567,890.99"),
        (Decimal("0.125"), "$0.13"),  # half up, as invoices round
        (Decimal("2.675"), "$2.68"),
        (10, "$10.00"),
        (0.1 + 0.2, "$0.30"),
        ("99.9", "$99.90"),
    ],
)
def test_money_is_shown_as_mexican_pesos(amount, shown):
    assert money(amount) == shown


def test_money_in_another_locale_uses_its_separators():
    assert money(Decimal("12345.5"), locale="es_ES") == "12.345,50\xa0MXN"


@pytest.mark.parametrize("bad", [True, None, "abc", object()])
def test_money_refuses_what_is_not_an_amount(bad):
    with pytest.raises(TypeError):
        money(bad)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("2.000"), "2"),
        (Decimal("1.5"), "1.5"),
        (Decimal("1250"), "1,250"),
        (Decimal("-0"), "0"),
        (3, "3"),
        (Decimal("0.25"), "0.25"),
    ],
)
def test_quantities_drop_trailing_zeros(value, shown):
    assert quantity(value) == shown


def test_dates_read_as_spanish_long_dates():
    moment = datetime(2025, 3, 3, 16, 30, tzinfo=UTC)
    assert date_long(moment) == "lunes 3 de marzo de 2025"
    assert date_short(moment) == "3 de marzo de 2025"
    assert time_short(moment) == "10:30 a.m."
    assert datetime_long(moment) == "lunes 3 de marzo de 2025 a las 10:30 a.m."


def test_one_oclock_takes_the_singular_article():
    assert datetime_long(datetime(2025, 3, 3, 19, 15, tzinfo=UTC)).endswith("a la 1:15 p.m.")


def test_a_utc_evening_is_the_same_day_in_mexico_city_and_the_next_utc_day_is_not():
    assert date_long(datetime(2025, 3, 4, 5, 59, tzinfo=UTC)) == "lunes 3 de marzo de 2025"
    assert date_long(datetime(2025, 3, 4, 6, 0, tzinfo=UTC)) == "martes 4 de marzo de 2025"


def test_naive_datetimes_are_taken_as_utc():
    assert time_short(datetime(2025, 3, 3, 16, 30)) == "10:30 a.m."
    assert to_local(datetime(2025, 3, 3, 16, 30)).utcoffset() == timedelta(hours=-6)


def test_aware_datetimes_in_other_zones_are_converted():
    madrid = timezone(timedelta(hours=1))
    assert time_short(datetime(2025, 3, 3, 17, 30, tzinfo=madrid)) == "10:30 a.m."


def test_mexico_city_kept_summer_time_until_2022_and_not_after():
    # Mexico abolished daylight saving time in October 2022 (except along the border).
    assert time_short(datetime(2021, 7, 1, 16, 0, tzinfo=UTC)) == "11:00 a.m."  # CDT, -5
    assert time_short(datetime(2022, 7, 1, 16, 0, tzinfo=UTC)) == "11:00 a.m."  # last summer
    assert time_short(datetime(2023, 7, 1, 16, 0, tzinfo=UTC)) == "10:00 a.m."  # CST, -6
    assert time_short(datetime(2025, 4, 6, 16, 0, tzinfo=UTC)) == "10:00 a.m."  # no April jump


def test_mexico_city_2021_spring_forward_boundary():
    # DST began Sunday 4 April 2021 at 02:00 local (08:00 UTC).
    assert time_short(datetime(2021, 4, 4, 7, 59, tzinfo=UTC)) == "1:59 a.m."
    assert time_short(datetime(2021, 4, 4, 8, 0, tzinfo=UTC)) == "3:00 a.m."


def test_tijuana_still_follows_us_daylight_saving_time():
    tz = "America/Tijuana"
    # US DST began Sunday 9 March 2025 at 02:00 PST (10:00 UTC).
    assert time_short(datetime(2025, 3, 9, 9, 59, tzinfo=UTC), tz) == "1:59 a.m."
    assert time_short(datetime(2025, 3, 9, 10, 0, tzinfo=UTC), tz) == "3:00 a.m."
    # and ended Sunday 2 November 2025 at 02:00 PDT (09:00 UTC): 1 a.m. happens twice.
    assert time_short(datetime(2025, 11, 2, 8, 30, tzinfo=UTC), tz) == "1:30 a.m."
    assert time_short(datetime(2025, 11, 2, 9, 30, tzinfo=UTC), tz) == "1:30 a.m."
    assert time_short(datetime(2025, 11, 2, 10, 30, tzinfo=UTC), tz) == "2:30 a.m."


def test_cancun_is_five_hours_behind_utc_all_year():
    for month in (1, 7):
        assert time_short(datetime(2025, month, 1, 15, 0, tzinfo=UTC), "America/Cancun") == ("10:00 a.m.")


def test_plain_dates_are_shown_without_zone_conversion():
    assert date_long(date(2025, 12, 25)) == "jueves 25 de diciembre de 2025"


def test_another_locale_changes_the_words():
    # The patterns carry the Spanish "de": other locales only change month and day names.
    assert date_long(datetime(2025, 3, 3, 16, 30, tzinfo=UTC), locale="es_ES") == ("lunes 3 de marzo de 2025")
    assert date_long(datetime(2025, 3, 3, 16, 30, tzinfo=UTC), locale="en_US") == ("Monday 3 de March de 2025")


def test_an_unknown_time_zone_fails_loudly():
    with pytest.raises(LookupError):
        time_short(datetime(2025, 3, 3, tzinfo=UTC), "America/Atlantis")

"""Every time cas-audit writes is UTC to the second (scanner/util/timefmt.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from scanner.util.timefmt import (
    compact_utc,
    day_text,
    display_utc,
    exact_utc,
    iso,
    iso_exact,
    iso_utc,
    iso_utc_ms,
    parse_iso_exact,
    parse_iso_utc,
    registry_day,
    utc_day,
    utc_naive,
)

CET = timezone(timedelta(hours=1))


def test_aware_times_are_converted_and_naive_ones_taken_as_utc() -> None:
    assert iso_utc(datetime(2026, 11, 20, 11, 0, 0, 999999, tzinfo=CET)) == "2026-11-20T10:00:00Z"
    assert iso_utc(datetime(2026, 11, 20, 10, 0)) == "2026-11-20T10:00:00Z"
    assert iso(None) is None and day_text(None) is None and utc_naive(None) is None
    assert display_utc(datetime(2026, 11, 21, 0, 30, tzinfo=CET)) == "2026-11-20 23:30:00"


def test_the_day_is_the_utc_day() -> None:
    just_after_midnight_in_berlin = datetime(2026, 11, 21, 0, 30, tzinfo=CET)
    assert utc_day(just_after_midnight_in_berlin) == date(2026, 11, 20)
    assert day_text(just_after_midnight_in_berlin) == "2026-11-20"


def test_excel_gets_naive_utc_to_the_second() -> None:
    assert utc_naive(datetime(2026, 11, 20, 11, 0, 5, 700000, tzinfo=CET)) == datetime(2026, 11, 20, 10, 0, 5)


def test_parse_is_the_inverse_and_strict() -> None:
    moment = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert parse_iso_utc(iso_utc(moment)) == moment
    for text in ("2026-11-20 10:00:00", "2026-11-20T10:00:00", "2026-11-20T10:00:00+01:00"):
        with pytest.raises(ValueError):
            parse_iso_utc(text)


def test_the_history_keeps_microseconds_and_refuses_naive_times() -> None:
    moment = datetime(2026, 11, 20, 11, 0, 5, 123456, tzinfo=CET)
    assert exact_utc(moment) == "2026-11-20T10:00:05.123456+00:00"
    assert parse_iso_exact(exact_utc(moment)) == moment and iso_exact(None) is None and parse_iso_exact(None) is None
    with pytest.raises(ValueError, match="naive"):
        exact_utc(datetime(2026, 11, 20, 10, 0))


def test_log_lines_file_names_and_the_registry() -> None:
    moment = datetime(2026, 11, 20, 11, 0, 5, 987654, tzinfo=CET)
    assert iso_utc_ms(moment) == "2026-11-20T10:00:05.987Z"
    assert compact_utc(moment) == "20261120T100005Z"
    assert registry_day(date(2026, 1, 2)) == "20260102"

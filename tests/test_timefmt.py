"""Every time cas-audit writes is UTC to the second (scanner/util/timefmt.py)."""

from __future__ import annotations

import ast
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scanner.util.timefmt import (
    ISO_UTC,
    compact_utc,
    day_iso,
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


FORMATTERS = {"strftime", "isoformat", "ctime"}  # a datetime's or date's ways to become text
PACKAGE = Path(__file__).resolve().parent.parent / "scanner"


def formatting_calls(source: str) -> list[str]:
    """Calls of a time's own formatters: `x.strftime(...)`, `x.isoformat()`, `x.ctime()`."""
    return [f"line {node.lineno}: .{node.func.attr}()" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FORMATTERS]


def test_all_time_formatting_goes_through_timefmt() -> None:
    """Issue 14 item 3. Before: the HTML report wrote its own copy of "%Y-%m-%d %H:%M:%S",
    the lab its backup stamp, the reports, the history and the policy their days."""
    found = [f"{path.relative_to(PACKAGE.parent)} {call}" for path in sorted(PACKAGE.rglob("*.py"))
             if path.name != "timefmt.py" for call in formatting_calls(path.read_text(encoding="utf-8"))]
    assert found == [], "format times with scanner/util/timefmt.py: " + "; ".join(found)


def test_the_formatting_check_sees_each_formatter_and_lets_parsing_pass() -> None:
    source = ("a.strftime('%Y')\nb.date().isoformat()\nc.isoformat(timespec='seconds')\nd.ctime()\n"
              "datetime.fromisoformat(t)\ndatetime.strptime(t, f)\n")
    assert formatting_calls(source) == ["line 1: .strftime()", "line 2: .isoformat()", "line 3: .isoformat()",
                                        "line 4: .ctime()"]


def test_a_day_is_written_as_iso_8601() -> None:
    assert day_iso(date(2026, 1, 2)) == "2026-01-02"


def test_parse_accepts_and_refuses_what_strptime_does() -> None:
    """The collector's times are read without strptime in the usual shape: every text
    (hostile ones included) gives the same datetime, or the same refusal, as strptime."""
    texts = ["2026-11-20T10:00:00Z", "2024-02-29T23:59:59Z", "2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z",
             "2026-00-10T00:00:00Z", "2026-11-31T00:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
             "2026-11-20T24:00:00Z", "2026-11-20T10:60:00Z", "2026-11-20T10:00:60Z", "2026-11-20T10:00:61Z",
             "2026-1-5T1:2:3Z", "2026-11-20t10:00:00z", "2026-11-20T10:00:00Z\n", " 2026-11-20T10:00:00Z",
             "\u0662\u0660\u0662\u0666-11-20T10:00:00Z", "２０２６-11-20T10:00:00Z", "2026-11-20T10:00:00.5Z",
             "+2026-11-20T10:00:00Z", "20261-11-20T10:00:00Z", "2026-11-20T10:00:00ZZ", ""]
    for text in texts:
        try:
            expected: datetime | str = datetime.strptime(text, ISO_UTC).replace(tzinfo=UTC)
        except ValueError:
            expected = "refused"
        try:
            got: datetime | str = parse_iso_utc(text)
        except ValueError:
            got = "refused"
        assert got == expected, text
        assert not isinstance(got, datetime) or got.tzinfo is UTC

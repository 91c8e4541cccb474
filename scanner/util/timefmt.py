"""Points in time as cas-audit writes them: always UTC, to the second.

Every module that turns a datetime into text (reports, the collector's cut-off, the lab's
answers, tables on the terminal) or into a day goes through here, so the format is
written once. A naive datetime is taken as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # 2026-11-20T10:00:00Z, as collect.ps1 and the JSON report write it
DISPLAY_UTC = "%Y-%m-%d %H:%M:%S"  # for people, in columns headed "(UTC)"


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso_utc(moment: datetime) -> str:
    """2026-11-20T10:00:00Z (sub-seconds dropped)."""
    return as_utc(moment).strftime(ISO_UTC)


def iso_utc_ms(moment: datetime) -> str:
    """2026-11-20T10:00:00.123Z (to the millisecond: the time of a JSON log line)."""
    return as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def compact_utc(moment: datetime) -> str:
    """20261120T100000Z: UTC to the second, for file names."""
    return as_utc(moment).strftime("%Y%m%dT%H%M%SZ")


def registry_day(day: date) -> str:
    """20261120: a day as the Windows registry writes one (InstallDate of an update)."""
    return day.strftime("%Y%m%d")


def iso(value: datetime | None) -> str | None:
    """`iso_utc`, with None staying None."""
    return None if value is None else iso_utc(value)


def exact_utc(moment: datetime) -> str:
    """2026-11-20T10:00:00.123456+00:00: UTC with the microseconds, as the history keeps a
    time in its documents, so a value read back equals the value written. A naive
    datetime is refused (ValueError): the store is given aware ones."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} given to the store: pass an aware datetime")
    return moment.astimezone(UTC).isoformat()


def iso_exact(value: datetime | None) -> str | None:
    """`exact_utc`, with None staying None."""
    return None if value is None else exact_utc(value)


def parse_iso_exact(text: str | None) -> datetime | None:
    """The inverse of `iso_exact` (any ISO 8601 time with an offset): an aware UTC datetime."""
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


#: The shape `iso_utc` writes, in ASCII digits: read without strptime (a third of its CPU;
#: a collector result carries about six such times: bench/README.md, "CPU per server").
_ISO_UTC_EXACT = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def parse_iso_utc(text: str) -> datetime:
    """The inverse of `iso_utc`: an aware UTC datetime; ValueError for any other shape.

    What strptime(ISO_UTC) accepts beyond the exact shape (one-digit fields, other
    digits, a lower-case t or z) still goes to strptime, so what is accepted is unchanged."""
    match = _ISO_UTC_EXACT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return datetime.strptime(text, ISO_UTC).replace(tzinfo=UTC)
    year, month, day, hour, minute, second = map(int, match.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)  # ValueError out of range, as strptime


def display_utc(moment: datetime) -> str:
    """2026-11-20 10:00:00 (UTC, for tables people read)."""
    return as_utc(moment).strftime(DISPLAY_UTC)


def utc_day(moment: datetime) -> date:
    """The UTC date of the instant (waivers and reports judge days in UTC)."""
    return as_utc(moment).date()


def day_iso(day: date) -> str:
    """2026-11-20: a calendar day (a waiver's dates) as ISO 8601 writes it."""
    return day.isoformat()


def day_text(value: datetime | None) -> str | None:
    """2026-11-20, the UTC date; None stays None."""
    return None if value is None else day_iso(utc_day(value))


def utc_naive(value: datetime | None) -> datetime | None:
    """A naive UTC datetime to the second, for Excel, which has no time zones."""
    if value is None:
        return None
    return as_utc(value).replace(tzinfo=None, microsecond=0)

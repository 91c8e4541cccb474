"""The plain table types the workbook, CSV and HTML exporters share: a sheet, its columns
and rows, and `clean` (text XML can carry). No report content lives here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

__all__ = ["REPLACEMENT", "CellValue", "Column", "Row", "Sheet", "TrendBlock", "clean"]

CellValue = str | int | datetime | date | None
Row = tuple[CellValue, ...]

# XML 1.0 forbids these (openpyxl raises IllegalCharacterError); lone surrogates cannot be
# encoded as UTF-8. Tab, LF and CR are legal and kept.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Column:
    header: str | None  # None: a column without a header (the Summary's trend table)
    width: float


@dataclass(frozen=True)
class TrendBlock:
    """Where the Summary holds the trend table (1-based sheet rows and columns)."""

    header_row: int
    first_row: int
    last_row: int
    first_series_col: int
    last_series_col: int
    title: str
    y_title: str
    x_title: str


@dataclass
class Sheet:
    key: str
    name: str
    columns: list[Column]
    rows: Iterable[Row]
    filter_rows: int | None = None  # data rows the autofilter spans; None: all of them
    filter_cols: int | None = None  # columns the header and autofilter span; None: all
    bold_rows: frozenset[int] = field(default_factory=frozenset)  # 1-based sheet rows
    trend: TrendBlock | None = None
    fit_to_page: bool = False  # print one page wide (the Summary)


def clean(value: str | None) -> str | None:
    """The string with XML-illegal characters replaced by U+FFFD."""
    if value is None:
        return None
    return _ILLEGAL.sub(REPLACEMENT, value)

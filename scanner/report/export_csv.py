"""The findings of one run as CSV (`cas-audit report --format csv`), safe to open in a
spreadsheet.

Same columns and words as the workbook's Findings sheet, in the report's language. CSV has
no cell types, so a text that a spreadsheet would take for a formula (starting with `=`,
`+`, `-`, `@`, tab or CR) is written with a leading single quote, and every field is
quoted (OWASP's advice on CSV injection). Dates are ISO 8601 UTC (`2026-11-20T10:00:00Z`).
"""

from __future__ import annotations

import csv
import typing
from datetime import date, datetime

from scanner.report.labels import Labels
from scanner.report.model import RunReport
from scanner.report.sheets import CellValue, findings_columns, findings_rows
from scanner.util.timefmt import day_iso, iso_utc

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_field(value: CellValue) -> str:
    """One value as CSV text, escaped so a spreadsheet shows it as text."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return day_iso(value)
    if isinstance(value, str):
        text = str(value)
        return "'" + text if text.startswith(FORMULA_STARTS) else text
    return str(value)


def write_findings_csv(report: RunReport, stream: typing.TextIO) -> None:
    """Write one header row and one row per finding to the text `stream`.

    Open a file for it with `newline=""` (rows end in CRLF); `utf-8-sig` lets Excel
    detect the encoding.
    """
    labels = Labels(report.lang)
    writer = csv.writer(stream, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow([c.header for c in findings_columns(labels)])
    for row in findings_rows(report, labels):
        writer.writerow([csv_field(v) for v in row])

"""Findings as CSV: the Findings sheet's columns and words, escaped against formula injection."""

from __future__ import annotations

import csv
import io

import pytest
from reportdata import HOSTILE_VALUES, sample_report

from scanner.report.export_csv import write_findings_csv
from scanner.report.labels import Labels
from scanner.report.model import RunReport


def csv_text(report: RunReport) -> str:
    stream = io.StringIO(newline="")
    write_findings_csv(report, stream)
    return stream.getvalue()


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("lang", ["en", "de"])
def test_one_row_per_finding_with_the_workbook_columns(lang: str) -> None:
    report = sample_report(lang)
    labels = Labels(lang)
    rows = parse(csv_text(report))
    header, data, resolved = rows[0], rows[1:1 + len(report.findings)], rows[1 + len(report.findings):]
    if lang == "de":
        assert header[:7] == ["Regel", "Titel", "Schweregrad", "Zustand", "Server", "Standort",
                              "Protokoll"]
    assert len(data) == len(report.findings)
    col = {name: i for i, name in enumerate(header)}
    for row, f in zip(data, report.findings, strict=True):
        assert row[col[labels("col.rule")]] == f.rule
        assert row[col[labels("col.server")]] == (f.server or "")
        assert row[col[labels("col.message")]] == f.message
        assert row[col[labels("col.severity")]] == labels(f"severity.{f.severity}")
        assert row[col[labels("col.first_seen_run")]] == str(f.first_seen_run)
    assert data[0][col[labels("col.first_seen_at")]] == "2026-11-21T09:30:00Z"
    # the finding the run resolved follows, naming the change that resolved it
    assert [(r[col[labels("col.rule")]], r[col[labels("col.state")]]) for r in resolved] == \
        [("XS-002", labels("state.resolved_by", ticket="CHG-1234"))]


def test_every_field_is_quoted_and_rows_end_in_crlf() -> None:
    text = csv_text(sample_report("en"))
    first = text.split("\r\n")[0]
    assert first.startswith('"Rule","Title","Severity","State"')
    assert text.endswith("\r\n")


@pytest.mark.parametrize("hostile", HOSTILE_VALUES, ids=repr)
def test_formula_like_text_gets_a_leading_quote(hostile: str) -> None:
    report = sample_report("en", hostile=hostile)
    labels = Labels("en")
    rows = parse(csv_text(report))
    col = {name: i for i, name in enumerate(rows[0])}
    dangerous = hostile.startswith(("=", "+", "-", "@", "\t", "\r"))
    shown = "'" + hostile if dangerous else hostile
    for key in ("col.rule", "col.title", "col.server", "col.site", "col.observed",
                "col.expected", "col.message", "col.remediation", "col.protocol"):
        values = [row[col[labels(key)]] for row in rows[1:1 + len(report.findings)] if row[col[labels(key)]]]
        assert values and all(v == shown for v in values), key
    # no field of the file starts with a formula character
    for row in rows:
        for field in row:
            assert not field.startswith(("=", "+", "-", "@", "\t", "\r")), field


def test_ordinary_text_is_not_changed() -> None:
    text = csv_text(sample_report("en"))
    assert not any(field.startswith("'") for row in parse(text) for field in row)
    assert '"CAS02 POP3 allows cross-site sessions (file value true); the baseline is false."' in text

"""What a scan did not establish, in the report model's exports (fast, no lab): the rows
after the findings have the findings' columns, a server's own error text stays text in the
CSV and the workbook, and refused_logons is null only where the log was not read. The lab
scan end to end is test_event_log_gaps.py."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest
from openpyxl import load_workbook
from reportdata import sample_report

from scanner.report.labels import Labels
from scanner.report.model import RunReport
from scanner.report.write import render

HOSTILE = '=HYPERLINK("http://evil","x")'


def with_gaps(lang: str) -> RunReport:
    report = sample_report(lang)
    first, second, *rest = report.servers
    unread = replace(first, events_error=HOSTILE, collector_errors=(("events", HOSTILE), ("-site", "+1+1")))
    partial = replace(second, events_truncated="window", events_limit=10000)
    return replace(report, servers=(unread, partial, *rest))


@pytest.mark.parametrize("lang", ["en", "de"])
def test_gap_rows_follow_the_findings_with_their_columns(lang: str) -> None:
    report = with_gaps(lang)
    labels = Labels(lang)
    rows = list(csv.reader(io.StringIO(render(report, "csv").decode("utf-8-sig"))))
    header, body = rows[0], rows[1:]
    assert all(len(row) == len(header) for row in body)
    gaps = body[len(report.findings):len(body) - len(report.resolved)]  # the resolved findings come last
    col = {name: i for i, name in enumerate(header)}
    states = [(row[col[labels("col.server")]], row[col[labels("col.state")]]) for row in gaps]
    unread, partial = report.servers[0].name, report.servers[1].name
    assert states == [(unread, labels("note.not_evaluated")), (unread, labels("note.collector_error")),
                      (unread, labels("note.collector_error")), (partial, labels("note.lower_bound"))]
    for row in body:  # the server's own text never starts a field as a formula
        assert not any(field.startswith(("=", "+", "-", "@")) for field in row), row


def test_the_workbook_keeps_a_servers_error_text_as_text() -> None:
    book = load_workbook(io.BytesIO(render(with_gaps("en"), "xlsx")))
    labels = Labels("en")
    servers = [list(r) for r in book[labels.sheet("servers")].iter_rows()]
    header = [c.value for c in servers[0]]
    log_cell = servers[1][header.index(labels("col.application_log"))]
    assert log_cell.value == labels("log.not_read", reason=HOSTILE) and log_cell.data_type == "s"
    errors_cell = servers[1][header.index(labels("col.collector_errors"))]
    assert errors_cell.value == f"events: {HOSTILE}; -site: +1+1"
    assert servers[1][header.index(labels("col.p.refused_logons", p="POP3"))].value == labels("note.not_evaluated")
    assert servers[2][header.index(labels("col.p.refused_logons", p="POP3"))].value.endswith("+")


def test_json_refused_logons_is_null_only_where_the_log_was_not_read() -> None:
    data = json.loads(render(with_gaps("en"), "json"))
    unread, partial, *others = data["servers"]
    assert {p["refused_logons"] for p in unread["protocols"].values()} == {None}
    assert unread["application_log"]["error"] == HOSTILE
    assert unread["collector_errors"][1] == {"stage": "-site", "message": "+1+1"}
    assert partial["application_log"]["lower_bound_reason"] == "window"
    assert all(p["refused_logons_lower_bound"] for p in partial["protocols"].values())
    for server in others:
        assert all(isinstance(p["refused_logons"], int) for p in server["protocols"].values())

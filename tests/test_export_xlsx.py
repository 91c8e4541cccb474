"""The auditor's workbook, read back with openpyxl: sheets, headers, contents, formats, and
formula injection on every sheet."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from datetime import datetime, timedelta, timezone

import pytest
from openpyxl import load_workbook
from openpyxl.workbook import Workbook
from openpyxl.worksheet.worksheet import Worksheet
from reportdata import HOSTILE_VALUES, sample_report

from scanner.errors import ConfigError
from scanner.report.export_xlsx import SEVERITY_COLOURS, write_xlsx
from scanner.report.labels import LANGUAGES, Labels, clean_sheet_name, label_keys
from scanner.report.model import RunReport

SHEETS_EN = ["Summary", "Findings", "Servers", "Changes", "Evidence", "Waivers", "Scope", "Rules", "Applied changes"]
SHEETS_DE = [
    "Zusammenfassung", "Befunde", "Server", "Änderungen", "Nachweise", "Ausnahmen",
    "Prüfumfang", "Regeln", "Durchgeführte Änderungen",
]


def xlsx_bytes(report: RunReport) -> bytes:
    stream = io.BytesIO()
    write_xlsx(report, stream)
    return stream.getvalue()


def read_back(report: RunReport) -> Workbook:
    return load_workbook(io.BytesIO(xlsx_bytes(report)))


def naive(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=None, microsecond=0)


def table(ws: Worksheet) -> list[dict[str, object]]:
    """Data rows as {header: value}."""
    rows = list(ws.iter_rows(values_only=True))
    headers = rows[0]
    return [dict(zip(headers, row, strict=True)) for row in rows[1:]]


def cells_by_header(ws: Worksheet, header: str) -> list:
    headers = [c.value for c in ws[1]]
    col = headers.index(header) + 1
    return [ws.cell(row=r, column=col) for r in range(2, ws.max_row + 1)]


@pytest.fixture(scope="module", params=LANGUAGES)
def lang_book(request) -> tuple[str, Workbook, RunReport]:
    report = sample_report(request.param)
    return request.param, read_back(report), report


def test_nine_sheets_with_proper_names_in_english_and_german() -> None:
    assert read_back(sample_report("en")).sheetnames == SHEETS_EN
    assert read_back(sample_report("de")).sheetnames == SHEETS_DE


def test_languages_define_the_same_words_and_sheet_names_are_valid() -> None:
    assert label_keys("en") == label_keys("de")
    for lang in LANGUAGES:
        labels = Labels(lang)
        for key in ("summary", "findings", "servers", "changes", "evidence", "waivers",
                    "scope", "rules"):
            assert len(labels.sheet(key)) <= 31
    assert clean_sheet_name("Findings [site: A/B]? *" + "x" * 40) == "Findings _site_ A_B__ _xxxxxxxx"
    with pytest.raises(ConfigError):
        Labels("fr")


def test_every_sheet_has_bold_frozen_header_autofilter_and_sized_columns(lang_book) -> None:
    _, wb, _ = lang_book
    for ws in wb:
        assert ws.freeze_panes == "A2", ws.title
        header = [c for c in ws[1] if c.value is not None]
        assert header and all(c.font.b for c in header), ws.title
        assert ws.auto_filter.ref and ws.auto_filter.ref.startswith("A1:"), ws.title
        assert ws.column_dimensions["A"].width > 8, ws.title
    # the filter spans all data rows of a table sheet
    findings = wb.worksheets[1]
    assert findings.auto_filter.ref == f"A1:P{findings.max_row}"


def test_findings_sheet_equals_the_model(lang_book) -> None:
    lang, wb, report = lang_book
    labels = Labels(lang)
    ws = wb.worksheets[1]
    rows, resolved = table(ws)[:len(report.findings)], table(ws)[len(report.findings):]
    assert len(rows) == len(report.findings)
    # after the findings, the finding the run resolved names the change that resolved it
    (row,) = resolved
    assert (row[labels("col.rule")], row[labels("col.server")], row[labels("col.severity")]) == ("XS-002", "CAS01", None)
    assert row[labels("col.state")] == {"en": "resolved by change CHG-1234", "de": "behoben durch Änderung CHG-1234"}[lang]
    assert "CHG-1234" in row[labels("col.message")] and "4c" * 32 in row[labels("col.message")]
    if lang == "de":
        assert [c.value for c in ws[1]][:10] == [
            "Regel", "Titel", "Schweregrad", "Zustand", "Server", "Standort", "Protokoll",
            "Beobachtet", "Erwartet (Vorgabe)", "Befund",
        ]
    for row, f in zip(rows, report.findings, strict=True):
        assert row[labels("col.rule")] == f.rule
        assert row[labels("col.title")] == f.title
        assert row[labels("col.server")] == f.server
        assert row[labels("col.site")] == f.site
        assert row[labels("col.protocol")] == (f.protocol.upper() if f.protocol else None)
        assert row[labels("col.observed")] == f.observed
        assert row[labels("col.expected")] == f.expected
        assert row[labels("col.message")] == f.message
        assert row[labels("col.remediation")] == f.remediation
        assert row[labels("col.first_seen_run")] == f.first_seen_run
        assert row[labels("col.first_seen_at")] == naive(f.first_seen_at)
    words = {
        "en": ["high", "high", "medium", "high", "high", "high", "medium", "medium", "info"],
        "de": ["hoch", "hoch", "mittel", "hoch", "hoch", "hoch", "mittel", "mittel", "Information"],
    }[lang]
    assert [r[labels("col.severity")] for r in rows] == words
    states = [r[labels("col.state")] for r in rows]
    if lang == "en":
        assert states[0] == "new"
        assert states[3] == "persisting since 2026-11-14 (run 6)"
        assert states[4] == "waived"
        assert states[7] == "waiver expired"
    else:
        assert states[0] == "neu"
        assert states[3] == "besteht seit 2026-11-14 (Lauf 6)"
        assert states[4] == "durch Ausnahme genehmigt"
        assert states[7] == "Ausnahme abgelaufen"
    waiver = rows[4][labels("col.waiver")]
    assert "Partner mailboxes in Hamburg until migration" in waiver and "J. Weber, CISO" in waiver


def test_severity_is_shown_by_colour_on_findings_summary_and_rules(lang_book) -> None:
    lang, wb, report = lang_book
    labels = Labels(lang)
    findings = wb.worksheets[1]
    severity_cells = cells_by_header(findings, labels("col.severity"))[:len(report.findings)]  # not the resolved
    for cell, f in zip(severity_cells, report.findings, strict=True):
        assert cell.fill.fill_type == "solid"
        assert cell.fill.fgColor.rgb.endswith(SEVERITY_COLOURS[f.severity][0])
    fills = {c.fill.fgColor.rgb for c in severity_cells}
    assert len(fills) == 3  # high, medium, info
    summary = wb.worksheets[0]
    coloured = {
        c.value: c.fill.fgColor.rgb[-6:] for c in summary["A"] if c.fill.fill_type == "solid"
    }
    for sev, (fill, _) in SEVERITY_COLOURS.items():
        assert coloured[labels(f"severity.{sev}")] == fill
    rules = wb.worksheets[7]
    for cell in cells_by_header(rules, labels("col.applied_severity")):
        assert cell.fill.fill_type == "solid"


def test_dates_are_real_datetimes_in_utc_with_a_readable_format(lang_book) -> None:
    lang, wb, report = lang_book
    labels = Labels(lang)
    cell = cells_by_header(wb.worksheets[1], labels("col.first_seen_at"))[0]
    assert labels("col.first_seen_at").endswith("(UTC)")
    assert cell.is_date and cell.value == datetime(2026, 11, 21, 9, 30, 0)
    assert cell.number_format == "yyyy-mm-dd hh:mm:ss"
    waivers = wb.worksheets[5]
    expires = cells_by_header(waivers, labels("col.expires"))[0]
    assert expires.is_date and expires.value == datetime(2027, 3, 31)
    assert expires.number_format == "yyyy-mm-dd"


def test_summary_shows_run_coverage_counts_and_trend_chart(lang_book) -> None:
    lang, wb, report = lang_book
    labels = Labels(lang)
    ws = wb.worksheets[0]
    rows = list(ws.iter_rows(values_only=True))
    items = {row[0]: row[1] for row in rows[:14] if row[0] is not None}
    sections = {row[0]: row[1] for row in rows[14:] if isinstance(row[0], str)}
    assert items[labels("summary.organisation")] == "Contoso Ltd."
    assert items[labels("summary.run")] == 7
    assert items[labels("summary.started")] == datetime(2026, 11, 21, 9, 30, 0)
    assert items[labels("summary.finished")] == datetime(2026, 11, 21, 9, 31, 12)
    assert items[labels("summary.operator")] == "CONTOSO\\auditor"
    assert items[labels("summary.scanning_host")] == "audit-vm01"
    assert items[labels("summary.tool_version")] == "0.1.0"
    assert items[labels("summary.catalog_version")] == "2026.11"
    assert (items[labels("summary.planned")], items[labels("summary.scanned")],
            items[labels("summary.failed")]) == (5, 3, 2)
    # active = not waived: the waived XS-001 on CAS03 is not counted, the expired waiver is
    counts = [sections[labels(f"severity.{s}")]
              for s in ("critical", "high", "medium", "low", "info")]
    assert counts == [0, 4, 3, 0, 1]
    assert (sections["Berlin"], sections["Hamburg"], sections["München"]) == (5, 2, 1)
    trend = [row[:7] for row in rows if isinstance(row[0], int)]
    assert trend[-1] == (7, datetime(2026, 11, 21, 9, 30), 0, 4, 3, 0, 1)
    assert [row[0] for row in trend] == [p.run_id for p in report.trend]
    assert ws["B2"].value == "Contoso Ltd." and ws["B3"].value == 7
    charts = ws._charts
    assert len(charts) == 1
    chart = charts[0]
    assert len(chart.series) == 5
    assert all(ws.title in s.val.numRef.f for s in chart.series)
    if lang == "de":
        assert sections["Aktive Befunde nach Schweregrad"] == "Anzahl"


def test_servers_sheet_has_one_row_per_server_with_the_protocol_matrix(lang_book) -> None:
    lang, wb, report = lang_book
    labels = Labels(lang)
    rows = table(wb.worksheets[2])
    assert [r[labels("col.server")] for r in rows] == [s.name for s in report.servers]
    by_name = {r[labels("col.server")]: r for r in rows}

    def col(key: str, protocol: str) -> str:
        return labels(key, p=protocol.upper())

    cas02 = by_name["CAS02"]
    assert cas02[labels("col.site")] == "Berlin"
    assert cas02[labels("col.build")] == "8.3.83.6"
    assert cas02[labels("col.service_pack")] == "SP3"
    assert cas02[col("col.p.value", "pop3")] == "true"
    assert cas02[col("col.p.value", "imap4")] == "false"
    assert cas02[col("col.p.source", "pop3")] == labels("source.file")
    assert cas02[col("col.p.pending_restart", "pop3")] == labels("yes")
    assert cas02[col("col.p.service", "pop3")] == "Running"
    assert cas02[col("col.p.start_mode", "pop3")] == "Auto"
    assert by_name["CAS01"][col("col.p.refused_logons", "pop3")] == 1
    assert by_name["CAS03"][col("col.p.config_status", "imap4")] == labels("config.missing")
    assert by_name["CAS03"][col("col.p.source", "imap4")] == labels("source.default")
    cas04 = by_name["CAS04"]
    assert cas04[labels("col.scan_status")] == labels("scan.error")
    assert cas04[col("col.p.value", "pop3")] is None
    if lang == "de":
        assert "POP3 Dienststatus" in cas02 and cas02[labels("col.scan_status")] == "geprüft"


def test_changes_sheet_equals_the_model(lang_book) -> None:
    lang, wb, report = lang_book
    labels = Labels(lang)
    rows = table(wb.worksheets[3])
    assert len(rows) == len(report.changes)
    for row, c in zip(rows, report.changes, strict=True):
        assert row[labels("col.server")] == c.server
        assert row[labels("col.before")] == c.before
        assert row[labels("col.after")] == c.after
        assert row[labels("col.before_run")] == c.before_run
        assert row[labels("col.after_run")] == c.after_run
        assert row[labels("col.before_at")] == naive(c.before_at)
        assert row[labels("col.after_at")] == naive(c.after_at)
        assert row[labels("col.build_changed")] == labels("yes")
    assert rows[0][labels("col.field")] == "Build"
    assert rows[1][labels("col.field")] == "AllowCrossSiteSessions"
    assert rows[1][labels("col.protocol")] == "POP3"


def test_evidence_sheet_names_path_hash_size_times_and_method(lang_book) -> None:
    lang, wb, report = lang_book
    labels = Labels(lang)
    rows = table(wb.worksheets[4])
    expected = [(s, p) for s in report.servers for p in ("pop3", "imap4") if p in s.protocols]
    assert len(rows) == len(expected) == 6
    for row, (server, protocol) in zip(rows, expected, strict=True):
        p = server.protocols[protocol]
        assert row[labels("col.server")] == server.name
        assert row[labels("col.protocol")] == protocol.upper()
        assert row[labels("col.config_path")] == p.config_path
        assert row[labels("col.sha256")] == p.config_sha256
        if p.config_bytes is not None:
            assert row[labels("col.sha256")] == hashlib.sha256(p.config_bytes).hexdigest()
            assert row[labels("col.size")] == len(p.config_bytes)
        assert row[labels("col.modified")] == naive(p.config_modified)
        assert row[labels("col.collected_at")] == naive(server.finished_at)
        assert "ReadAllBytes" in row[labels("col.method")]


def test_waivers_scope_and_rules_sheets_equal_the_model(lang_book) -> None:
    lang, wb, report = lang_book
    labels = Labels(lang)
    waivers = table(wb.worksheets[5])
    assert [(w[labels("col.rule")], w[labels("col.scope")], w[labels("col.justification")],
             w[labels("col.approver")]) for w in waivers] == [
        (w.rule, w.scope, w.justification, w.approver) for w in report.waivers]
    assert [w[labels("col.created")] for w in waivers] == [
        datetime(2026, 11, 1), datetime(2026, 6, 1)]
    assert [w[labels("col.waiver_state")] for w in waivers] == [
        labels("waiver.active"), labels("waiver.expired")]

    scope = table(wb.worksheets[6])
    assert [(r[labels("col.server")], r[labels("col.address")], r[labels("col.site")],
             r[labels("col.error_kind")], r[labels("col.reason")]) for r in scope] == [
        (e.name, e.address, e.site, e.error_kind, e.error) for e in report.scope]
    assert scope[-1][labels("col.server")] == "CAS05"
    assert scope[-1][labels("col.scan_status")] == labels("scan.error")

    rules = table(wb.worksheets[7])
    assert [r[labels("col.rule")] for r in rules] == [r.id for r in report.rules]
    xs010 = next(r for r in rules if r[labels("col.rule")] == "XS-010")
    assert xs010[labels("col.applied_severity")] == labels("severity.medium")
    assert xs010[labels("col.default_severity")] == labels("severity.low")
    assert xs010[labels("col.overridden")] == labels("yes")


# Columns fed by a server, the inventory or the policy, per sheet (label keys).
OUTSIDE_COLUMNS: dict[int, list[str]] = {
    1: ["col.rule", "col.title", "col.server", "col.site", "col.protocol", "col.observed",
        "col.expected", "col.message", "col.remediation"],
    2: ["col.server", "col.site", "col.address", "col.computer", "col.reported_site", "col.inventory_site",
        "col.build", "col.service_pack", "col.rollup",
        "col.p.service|POP3", "col.p.start_mode|POP3", "col.p.service|IMAP4",
        "col.p.start_mode|IMAP4"],
    3: ["col.server", "col.site", "col.protocol", "col.before", "col.after"],
    4: ["col.server", "col.site", "col.config_path", "col.sha256", "col.encoding",
        "col.raw_value", "col.key_notes"],
    5: ["col.rule", "col.scope", "col.justification", "col.approver", "col.created",
        "col.expires"],
    6: ["col.server", "col.address", "col.site", "col.error_kind", "col.reason"],
    7: ["col.rule", "col.title", "col.rationale", "col.remediation", "col.references"],
    8: ["col.server", "col.protocol", "col.operator", "col.config_path", "col.before_sha256", "col.after_sha256",
        "col.found_sha256", "col.backup_path", "col.restart", "col.result", "col.message"],
}
SUMMARY_OUTSIDE = ["summary.organisation", "summary.operator", "summary.scanning_host",
                   "summary.tool_version", "summary.catalog_version", "summary.site_filter"]


@pytest.mark.parametrize("hostile", HOSTILE_VALUES, ids=repr)
def test_outside_strings_are_text_never_formulas_on_every_sheet(hostile: str) -> None:
    report = sample_report("en", hostile=hostile)
    wb = read_back(report)
    labels = Labels("en")
    for ws in wb:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type not in ("f", "e"), (ws.title, cell.coordinate, cell.value)
    for index, keys in OUTSIDE_COLUMNS.items():
        ws = wb.worksheets[index]
        for key in keys:
            name, _, protocol = key.partition("|")
            header = labels(name, p=protocol) if protocol else labels(name)
            cells = [c for c in cells_by_header(ws, header) if c.value is not None]
            if index == 1:  # the resolved finding's row says in our words what resolved it
                cells = cells[:len(report.findings)]
            assert cells, (ws.title, header)
            for cell in cells:
                assert cell.value == hostile, (ws.title, header, cell.coordinate)
                assert cell.data_type == "s"
    # composite columns carry the outside text inside our own words
    findings = wb.worksheets[1]
    for header in (labels("col.waiver"), labels("col.evidence")):
        values = [c.value for c in cells_by_header(findings, header) if c.value is not None]
        assert values and all(isinstance(v, str) for v in values)
    summary = wb.worksheets[0]
    values = {row[0].value: row[1] for row in summary.iter_rows(max_col=2) if row[0].value}
    for key in SUMMARY_OUTSIDE:
        assert values[labels(key)].value == hostile and values[labels(key)].data_type == "s"
    site_rows = [row for row in summary.iter_rows(max_col=2) if row[0].value == hostile]
    assert site_rows and site_rows[0][1].value == len(
        [f for f in report.findings if f.active])  # every finding's site is the hostile text


def test_characters_illegal_in_xml_are_replaced_visibly_not_a_crash() -> None:
    report = sample_report("en", hostile="CAS\x01evil\x00\x1f\ud800\ufffe")
    wb = read_back(report)
    assert wb.worksheets[2]["A2"].value == "CAS\ufffdevil\ufffd\ufffd\ufffd\ufffd"
    assert wb.worksheets[1]["E2"].value == "CAS\ufffdevil\ufffd\ufffd\ufffd\ufffd"


def test_tab_newline_and_carriage_return_are_kept() -> None:
    wb = read_back(sample_report("en", hostile="a\tb\nc\rd"))
    assert wb.worksheets[2]["A2"].value == "a\tb\nc\rd"


def test_same_report_gives_the_same_workbook() -> None:
    first = zipfile.ZipFile(io.BytesIO(xlsx_bytes(sample_report("de"))))
    second = zipfile.ZipFile(io.BytesIO(xlsx_bytes(sample_report("de"))))
    assert first.namelist() == second.namelist()
    for name in first.namelist():
        if name == "docProps/core.xml":  # holds the time the file was written
            continue
        assert first.read(name) == second.read(name), name


def test_naive_and_aware_utc_datetimes_give_the_same_cells() -> None:
    report = sample_report("en")
    run = dataclasses.replace(
        report.run,
        started_at=report.run.started_at.replace(tzinfo=None),
        finished_at=report.run.finished_at.astimezone(timezone(timedelta(hours=1))),
    )
    wb = read_back(dataclasses.replace(report, run=run))
    items = {r[0]: r[1] for r in wb.worksheets[0].iter_rows(values_only=True) if r[0]}
    assert items["Started (UTC)"] == datetime(2026, 11, 21, 9, 30, 0)
    assert items["Finished (UTC)"] == datetime(2026, 11, 21, 9, 31, 12)


def test_empty_run_still_has_all_sheets_with_headers() -> None:
    report = dataclasses.replace(
        sample_report("en"), servers=(), scope=(), findings=(), changes=(), waivers=(),
        rules=(), trend=(), resolved=(), applied_changes=())
    wb = read_back(report)
    assert wb.sheetnames == SHEETS_EN
    for ws in wb.worksheets[1:]:
        assert ws.max_row == 1 and ws.auto_filter.ref.endswith("1")
    assert wb.worksheets[0]._charts == []


def test_waiver_dates_that_are_not_dates_stay_text() -> None:
    report = sample_report("en")
    waiver = dataclasses.replace(report.waivers[0], expires="end of migration")
    wb = read_back(dataclasses.replace(report, waivers=(waiver,)))
    assert table(wb.worksheets[5])[0]["Expires"] == "end of migration"
    assert table(wb.worksheets[5])[0]["Created"] == datetime(2026, 11, 1)


def test_text_longer_than_an_excel_cell_is_cut_to_the_cell_limit() -> None:
    report = sample_report("en")
    finding = dataclasses.replace(report.findings[0], message="=" + "x" * 40_000)
    wb = read_back(dataclasses.replace(report, findings=(finding,)))
    cell = wb.worksheets[1]["J2"]
    assert cell.data_type == "s" and cell.value == ("=" + "x" * 40_000)[:32767]

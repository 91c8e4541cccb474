"""The tables of the auditor's workbook, as plain rows built from a `RunReport`.

Both the XLSX and the CSV exporter write these rows; tests compare them with what Excel
and LibreOffice show. Values are `str`, `int`, naive-UTC `datetime`, `date` or `None`;
severity cells are `SeverityWord` (the translated word, carrying its severity key).
Every string is cleaned of characters XML cannot carry.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

from scanner.facts import PROTOCOLS, SEVERITIES
from scanner.parse.builds import rollup_check
from scanner.parse.observe import ReferenceObservation, ServerObservation
from scanner.report.applied_sheet import applied_changes_sheet, resolved_rows
from scanner.report.controls import controls_text
from scanner.report.labels import Labels
from scanner.report.model import FindingInfo, RunReport
from scanner.report.notes import (
    application_log_text,
    collector_errors_text,
    note_rows,
    refused_logons_cell,
    server_notes,
)
from scanner.report.reasons import reason_text
from scanner.report.table import (  # the exporters import these from here too
    CellValue as CellValue,
)
from scanner.report.table import Column, Row, TrendBlock
from scanner.report.table import Sheet as Sheet
from scanner.report.table import clean as clean
from scanner.util.timefmt import day_text, iso, utc_naive


class SeverityWord(str):
    """A translated severity word that remembers its severity key (for colour)."""

    severity: str

    def __new__(cls, text: str, severity: str) -> SeverityWord:
        obj = super().__new__(cls, text)
        obj.severity = severity
        return obj


def _date_or_text(value: str | None) -> date | str | None:
    """A policy date ("2027-03-31") as a date; anything else as the text given."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return clean(value)


def _bool_word(labels: Labels, value: bool | None) -> str:
    if value is None:
        return labels("value.unknown")
    return labels("value.true") if value else labels("value.false")


def _yes_no(labels: Labels, value: bool | None) -> str | None:
    if value is None:
        return None
    return labels("yes") if value else labels("no")


def severity_word(labels: Labels, severity: str) -> SeverityWord:
    return SeverityWord(clean(labels.word("severity", severity)) or "", severity)


def _protocol(labels: Labels, protocol: str | None) -> str | None:
    return clean(labels.word("protocol", protocol))


def reference_text(labels: Labels, ref: ReferenceObservation | None) -> str | None:
    """The file=/configSource= file of the section in force, in one line: what it is, what
    became of it, and the file as collected (path, SHA-256, LastWriteTimeUtc)."""
    if ref is None:
        return None
    parts = [f"{ref.attribute}={ref.value}: {labels.word('reference', ref.outcome)}"]
    if ref.error:
        parts.append(labels.word("collector", ref.error) or ref.error)
    parts += [p for p in (ref.path, f"SHA-256 {ref.sha256}" if ref.sha256 else "", iso(ref.modified) or "") if p]
    return "; ".join(parts)


def _protocols_of(server: ServerObservation) -> list[str]:
    known = [p for p in PROTOCOLS if p in server.protocols]
    return known + sorted(p for p in server.protocols if p not in PROTOCOLS)


def finding_state(labels: Labels, finding: FindingInfo) -> str:
    """New, persisting since <date> (run n), waived, waiver expired."""
    if finding.state == "persisting":
        seen_on = day_text(finding.first_seen_at)
        if seen_on is not None and finding.first_seen_run is not None:
            return labels("state.persisting_since", date=seen_on, run=finding.first_seen_run)
        if finding.first_seen_run is not None:
            return labels("state.persisting_since_run", run=finding.first_seen_run)
    return clean(labels.word("state", finding.state)) or ""


_WAIVER_KEYS = ("justification", "approver", "created", "expires", "scope", "state")


def _waiver_text(waiver: dict[str, Any] | None) -> str | None:
    if not waiver:
        return None
    keys = [k for k in _WAIVER_KEYS if k in waiver] + sorted(
        k for k in waiver if k not in _WAIVER_KEYS
    )
    return clean("; ".join(f"{k}: {waiver[k]}" for k in keys if waiver[k] not in (None, "")))


def _evidence_text(evidence: dict[str, Any]) -> str | None:
    if not evidence:
        return None
    return clean(json.dumps(evidence, sort_keys=True, ensure_ascii=False, default=str))


# ---------------------------------------------------------------- sheets


def _summary_items(report: RunReport, labels: Labels) -> list[Row]:
    """The Summary's first rows: the run, or for the organisation view the time it is as of."""
    view = report.as_of
    if view is not None:
        return [
            (labels("summary.organisation"), clean(view.organisation)),
            (labels("summary.as_of"), utc_naive(view.time)),
            (labels("summary.stale_days"), view.stale_days),
            (labels("summary.servers"), len(report.servers)),
            (labels("summary.stale_servers"), view.stale_servers),
            (labels("summary.runs"), ", ".join(str(r) for r in view.runs) or None),
            (labels("summary.tool_version"), clean(view.tool_version)),
        ]
    run = report.run
    if run is None:
        raise ValueError("a report has either a run or an as-of time")
    return [
        (labels("summary.organisation"), clean(run.organisation)),
        (labels("summary.run"), run.id),
        (labels("summary.status"), clean(labels.word("run", run.status))),
        (labels("summary.started"), utc_naive(run.started_at)),
        (labels("summary.finished"), utc_naive(run.finished_at)),
        (labels("summary.operator"), clean(run.operator)),
        (labels("summary.scanning_host"), clean(run.scanning_host)),
        (labels("summary.tool_version"), clean(run.tool_version)),
        (labels("summary.catalog_version"), clean(run.catalog_version)),
        (labels("summary.site_filter"), clean(run.site_filter)),
        (labels("summary.planned"), run.servers_planned),
        (labels("summary.scanned"), run.servers_scanned),
        (labels("summary.failed"), run.servers_failed),
    ]


def _seal_items(report: RunReport, labels: Labels) -> list[Row]:
    """The seal of the history (and the signing key's id when signed): on the printed page too."""
    rows: list[Row] = [(labels("summary.seal"), report.seal or labels("summary.not_sealed"))]
    if report.key_id is not None:
        rows.append((labels("summary.key_id"), report.key_id))
    return rows


def summary_sheet(report: RunReport, labels: Labels) -> Sheet:
    item_rows = _summary_items(report, labels) + _seal_items(report, labels)
    active = [f for f in report.findings if f.active]
    rows: list[Row] = list(item_rows)
    bold: set[int] = set()

    def section(*header: CellValue) -> None:
        rows.append(())
        rows.append(header)
        bold.add(len(rows) + 1)  # +1: the sheet's header row

    by_severity = Counter(f.severity for f in active)
    section(labels("summary.by_severity"), labels("summary.count"))
    severities = list(SEVERITIES) + sorted(s for s in by_severity if s not in SEVERITIES)
    for sev in severities:
        rows.append((severity_word(labels, sev), by_severity.get(sev, 0)))

    by_site = Counter(f.site for f in active)
    section(labels("summary.by_site"), labels("summary.count"))
    for site in sorted(by_site, key=lambda s: (s is None, s or "")):
        name = clean(site) if site is not None else labels("summary.no_site")
        rows.append((name, by_site[site]))

    trend: TrendBlock | None = None
    if report.trend:
        trend_severities = list(SEVERITIES) + sorted(
            {s for p in report.trend for s in p.active_by_severity} - set(SEVERITIES)
        )
        section(
            labels("summary.run"),
            labels("summary.started"),
            *(severity_word(labels, s) for s in trend_severities),
        )
        header_row = len(rows) + 1
        for point in report.trend:
            rows.append(
                (
                    point.run_id,
                    utc_naive(point.started_at),
                    *(point.active_by_severity.get(s, 0) for s in trend_severities),
                )
            )
        trend = TrendBlock(
            header_row=header_row,
            first_row=header_row + 1,
            last_row=len(rows) + 1,
            first_series_col=3,
            last_series_col=2 + len(trend_severities),
            title=labels("summary.trend"),
            y_title=labels("summary.chart_y"),
            x_title=labels("summary.run"),
        )
    n_cols = max(len(r) for r in rows)
    columns = [Column(labels("summary.item"), 34), Column(labels("summary.value"), 30)]
    columns += [Column(None, 12) for _ in range(n_cols - 2)]
    return Sheet(
        key="summary",
        name=labels.sheet("summary"),
        columns=columns,
        rows=rows,
        filter_rows=len(item_rows),
        filter_cols=2,
        fit_to_page=True,
        bold_rows=frozenset(bold),
        trend=trend,
    )


def findings_columns(labels: Labels) -> list[Column]:
    return [
        Column(labels("col.rule"), 9),
        Column(labels("col.title"), 36),
        Column(labels("col.severity"), 12),
        Column(labels("col.state"), 28),
        Column(labels("col.server"), 16),
        Column(labels("col.site"), 16),
        Column(labels("col.protocol"), 10),
        Column(labels("col.observed"), 14),
        Column(labels("col.expected"), 14),
        Column(labels("col.message"), 70),
        Column(labels("col.remediation"), 60),
        Column(labels("col.first_seen_run"), 10),
        Column(labels("col.first_seen_at"), 20),
        Column(labels("col.waiver"), 40),
        Column(labels("col.evidence"), 50),
        Column(labels("col.controls"), 40),
    ]


def findings_rows(report: RunReport, labels: Labels) -> Iterator[Row]:
    """One row per finding, in the model's order."""
    words: dict[str, SeverityWord] = {s: severity_word(labels, s) for s in SEVERITIES}
    for f in report.findings:
        yield (
            clean(f.rule),
            clean(f.title),
            words.get(f.severity) or severity_word(labels, f.severity),
            finding_state(labels, f),
            clean(f.server),
            clean(f.site),
            _protocol(labels, f.protocol),
            clean(f.observed),
            clean(f.expected),
            clean(f.message),
            clean(f.remediation),
            f.first_seen_run,
            utc_naive(f.first_seen_at),
            _waiver_text(f.waiver),
            _evidence_text(f.evidence),
            clean(controls_text(labels, f.controls)),
        )
    yield from _note_rows(report, labels)
    yield from resolved_rows(report, labels)


def _note_rows(report: RunReport, labels: Labels) -> Iterator[Row]:
    """After the findings: what the scans did not establish (report/notes.py)."""
    titles = {r.id: r.title for r in report.rules}
    notes = [n for s in report.servers for n in server_notes(s, report.services_unread_on(s.name))]
    for row in note_rows(notes, labels, titles):
        yield tuple(clean(v) if isinstance(v, str) else v for v in row)


def findings_sheet(report: RunReport, labels: Labels) -> Sheet:
    return Sheet(
        "findings", labels.sheet("findings"), findings_columns(labels), findings_rows(report, labels)
    )


_PROTOCOL_FIELDS = (
    ("col.p.value", 24),
    ("col.p.source", 16),
    ("col.p.config_status", 16),
    ("col.p.service", 14),
    ("col.p.start_mode", 12),
    ("col.p.pending_restart", 12),
    ("col.p.refused_logons", 12),
)


def servers_sheet(report: RunReport, labels: Labels) -> Sheet:
    columns = [
        Column(labels("col.server"), 16),
        Column(labels("col.site"), 16),
        Column(labels("col.address"), 18),
        Column(labels("col.scan_status"), 14),
        Column(labels("col.scanned_at"), 20),
        Column(labels("col.computer"), 16),
        Column(labels("col.reported_site"), 16),
        Column(labels("col.site_source"), 16),
        Column(labels("col.inventory_site"), 16),
        Column(labels("col.build"), 14),
        Column(labels("col.service_pack"), 10),
        Column(labels("col.rollup"), 12),
        Column(labels("col.rollup_listed"), 12),
        Column(labels("col.build_check"), 24),
        Column(labels("col.application_log"), 30),
        Column(labels("col.collector_errors"), 40),
    ]
    for protocol in PROTOCOLS:
        shown = labels.word("protocol", protocol)
        columns += [Column(labels(key, p=shown), width) for key, width in _PROTOCOL_FIELDS]
    view = report.as_of
    if view is not None:  # the organisation view: which run each row comes from
        columns += [Column(labels("col.source_run"), 10), Column(labels("col.stale"), 10)]

    def rows() -> Iterator[Row]:
        for index, s in enumerate(report.servers):
            row: list[CellValue] = [
                clean(s.name),
                clean(s.site),
                clean(s.address),
                clean(labels.word("scan", s.scan_status)),
                utc_naive(s.finished_at),
                clean(s.computer),
                clean(s.reported_site),
                clean(s.site_source),
                clean(s.inventory_site),
                clean(s.build),
                clean(s.service_pack),
                clean(s.rollup),
                clean(s.rollup_listed),
                clean(labels.word("build_check", rollup_check(s.build, s.rollup_listed)))
                if s.scan_status == "ok" else None,
                clean(application_log_text(labels, s)),
                clean(collector_errors_text(s)),
            ]
            for protocol in PROTOCOLS:
                p = s.protocols.get(protocol)
                if p is None:
                    row += [None] * len(_PROTOCOL_FIELDS)
                    continue
                row += [
                    _bool_word(labels, p.allow_cross_site),
                    clean(labels.word("source", p.value_source)),
                    clean(labels.word("config", p.config_status)),
                    # not read on a scanned server: "unknown", never an empty cell
                    clean(p.service) or labels("value.unknown"),
                    clean(p.start_mode) or (None if p.service == "absent" else labels("value.unknown")),
                    _yes_no(labels, p.pending_restart) or labels("value.unknown"),
                    refused_logons_cell(labels, s, p),
                ]
            if view is not None:
                source = view.sources[index]
                row += [source.run_id, _yes_no(labels, source.stale)]
            yield tuple(row)

    return Sheet("servers", labels.sheet("servers"), columns, rows())


def changes_sheet(report: RunReport, labels: Labels) -> Sheet:
    columns = [
        Column(labels("col.server"), 16),
        Column(labels("col.site"), 16),
        Column(labels("col.protocol"), 10),
        Column(labels("col.field"), 26),
        Column(labels("col.before"), 24),
        Column(labels("col.after"), 24),
        Column(labels("col.before_run"), 10),
        Column(labels("col.after_run"), 10),
        Column(labels("col.before_at"), 20),
        Column(labels("col.after_at"), 20),
        Column(labels("col.build_changed"), 14),
    ]
    rows = (
        (
            clean(c.server),
            clean(c.site),
            _protocol(labels, c.protocol),
            clean(labels.word("field", c.field)),
            clean(c.before),
            clean(c.after),
            c.before_run,
            c.after_run,
            utc_naive(c.before_at),
            utc_naive(c.after_at),
            _yes_no(labels, c.build_changed),
        )
        for c in report.changes
    )
    return Sheet("changes", labels.sheet("changes"), columns, rows)


def evidence_sheet(report: RunReport, labels: Labels) -> Sheet:
    columns = [
        Column(labels("col.server"), 16),
        Column(labels("col.site"), 16),
        Column(labels("col.protocol"), 10),
        Column(labels("col.config_path"), 60),
        Column(labels("col.sha256"), 66),
        Column(labels("col.size"), 12),
        Column(labels("col.modified"), 22),
        Column(labels("col.collected_at"), 20),
        Column(labels("col.method"), 50),
        Column(labels("col.config_status"), 16),
        Column(labels("col.config_detail"), 60),
        Column(labels("col.encoding"), 12),
        Column(labels("col.raw_value"), 14),
        Column(labels("col.key_notes"), 40),
        Column(labels("col.reference"), 60),
    ]
    method = labels("method.winrm")

    def rows() -> Iterator[Row]:
        for s in report.servers:
            for protocol in _protocols_of(s):
                p = s.protocols[protocol]
                yield (
                    clean(s.name),
                    clean(s.site),
                    _protocol(labels, protocol),
                    clean(p.config_path),
                    clean(p.config_sha256),
                    p.config_length,
                    utc_naive(p.config_modified),
                    utc_naive(s.finished_at),
                    method,
                    clean(labels.word("config", p.config_status)),
                    clean(reason_text(p.detail, labels.lang)) or None,
                    clean(p.config_encoding),
                    clean(p.raw_value),
                    clean("; ".join(p.key_notes)) or None,
                    clean(reference_text(labels, p.config_reference)),
                )

    return Sheet("evidence", labels.sheet("evidence"), columns, rows())


def waivers_sheet(report: RunReport, labels: Labels) -> Sheet:
    columns = [
        Column(labels("col.rule"), 9),
        Column(labels("col.scope"), 30),
        Column(labels("col.justification"), 50),
        Column(labels("col.approver"), 24),
        Column(labels("col.created"), 12),
        Column(labels("col.expires"), 12),
        Column(labels("col.waiver_state"), 14),
    ]
    rows = (
        (
            clean(w.rule),
            clean(w.scope),
            clean(w.justification),
            clean(w.approver),
            _date_or_text(w.created),
            _date_or_text(w.expires),
            clean(labels.word("waiver", w.state)),
        )
        for w in report.waivers
    )
    return Sheet("waivers", labels.sheet("waivers"), columns, rows)


def scope_sheet(report: RunReport, labels: Labels) -> Sheet:
    columns = [
        Column(labels("col.server"), 16),
        Column(labels("col.address"), 20),
        Column(labels("col.site"), 16),
        Column(labels("col.scan_status"), 14),
        Column(labels("col.error_kind"), 12),
        Column(labels("col.reason"), 70),
    ]
    rows = (
        (
            clean(e.name),
            clean(e.address),
            clean(e.site),
            clean(labels.word("scan", e.scan_status)),
            clean(e.error_kind),
            clean(e.error),
        )
        for e in report.scope
    )
    return Sheet("scope", labels.sheet("scope"), columns, rows)


def rules_sheet(report: RunReport, labels: Labels) -> Sheet:
    columns = [
        Column(labels("col.rule"), 9),
        Column(labels("col.title"), 50),
        Column(labels("col.applied_severity"), 14),
        Column(labels("col.default_severity"), 14),
        Column(labels("col.overridden"), 12),
        Column(labels("col.rationale"), 70),
        Column(labels("col.remediation"), 70),
        Column(labels("col.references"), 50),
        Column(labels("col.controls"), 80),
    ]
    rows = (
        (
            clean(r.id),
            clean(r.title),
            severity_word(labels, r.severity),
            severity_word(labels, r.default_severity),
            _yes_no(labels, r.severity != r.default_severity),
            clean(r.rationale),
            clean(r.remediation),
            clean("; ".join(r.references)) or None,
            clean(controls_text(labels, r.controls, titles=True)),
        )
        for r in report.rules
    )
    return Sheet("rules", labels.sheet("rules"), columns, rows)


def workbook_sheets(report: RunReport) -> list[Sheet]:
    """The nine sheets of the workbook, in order, in the report's language."""
    labels = Labels(report.lang)
    return [
        summary_sheet(report, labels),
        findings_sheet(report, labels),
        servers_sheet(report, labels),
        changes_sheet(report, labels),
        evidence_sheet(report, labels),
        waivers_sheet(report, labels),
        scope_sheet(report, labels),
        rules_sheet(report, labels),
        applied_changes_sheet(report, labels),
    ]

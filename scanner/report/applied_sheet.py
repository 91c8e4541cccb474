"""The workbook's rows about recorded changes (`fix apply` / `fix rollback`): one row per
resolved finding after the findings (Findings sheet, CSV, HTML), naming the change that
resolved it, and the "Applied changes" sheet of the run window's changes
(report/applied.py decides which change resolved what).

Every value is cleaned like the other sheets' values and written through the same cell
writer (text stays text: no formula, no error value).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from scanner.report.labels import Labels
from scanner.report.model import ChangeRecord, ResolvedInfo, RunReport
from scanner.report.table import Column, Row, Sheet, clean
from scanner.util.timefmt import iso, utc_naive

__all__ = ["applied_changes_sheet", "resolved_rows", "resolved_state"]


def resolved_state(labels: Labels, resolved: ResolvedInfo) -> str:
    """"resolved" or "resolved by change CHG-1234" (in the report's language)."""
    if resolved.change is None:
        return labels("state.resolved")
    return clean(labels("state.resolved_by", ticket=resolved.change.ticket)) or ""


def _message(labels: Labels, resolved: ResolvedInfo) -> str:
    c = resolved.change
    if c is None:
        return labels("resolved.message")
    fields = {"ticket": c.ticket, "time": iso(c.changed_at), "operator": c.operator,
              "sha256": c.after_sha256 or "-"}
    key = "resolved.by_restart" if resolved.rule == "XS-005" else "resolved.by_change"
    return clean(labels(key, **fields)) or ""


def _evidence(c: ChangeRecord | None) -> str | None:
    if c is None:
        return None
    change = {"ticket": c.ticket, "kind": c.kind, "operator": c.operator, "changed_at": iso(c.changed_at),
              "config_path": c.config_path, "before_sha256": c.before_sha256, "after_sha256": c.after_sha256,
              "backup_path": c.backup_path, "restart": c.restart, "result": c.result}
    return clean(json.dumps({"change": change}, sort_keys=True, ensure_ascii=False))


def resolved_rows(report: RunReport, labels: Labels) -> Iterator[Row]:
    """After the findings (columns of sheets.findings_columns): one row per finding the run
    resolved, its state saying which change resolved it."""
    titles = {r.id: r.title for r in report.rules}
    sites = {s.name.casefold(): s.site for s in report.servers}
    for r in report.resolved:
        yield (
            clean(r.rule), clean(titles.get(r.rule)), None, resolved_state(labels, r), clean(r.server),
            clean(sites.get((r.server or "").casefold())), clean(labels.word("protocol", r.protocol)), None, None,
            _message(labels, r), None, None, None, None, _evidence(r.change), None,
        )


def applied_changes_sheet(report: RunReport, labels: Labels) -> Sheet:
    """The changes recorded in the run's window (report/applied.py), oldest first."""
    columns = [
        Column(labels("col.changed_at"), 20),
        Column(labels("col.ticket"), 16),
        Column(labels("col.change_kind"), 12),
        Column(labels("col.result"), 10),
        Column(labels("col.server"), 16),
        Column(labels("col.protocol"), 10),
        Column(labels("col.operator"), 24),
        Column(labels("col.config_path"), 60),
        Column(labels("col.before_sha256"), 66),
        Column(labels("col.after_sha256"), 66),
        Column(labels("col.found_sha256"), 66),
        Column(labels("col.backup_path"), 60),
        Column(labels("col.restart"), 12),
        Column(labels("col.message"), 60),
    ]
    rows = (
        (
            utc_naive(c.changed_at),
            clean(c.ticket),
            clean(labels.word("change_kind", c.kind)),
            clean(c.result),
            clean(c.server_name),
            clean(labels.word("protocol", c.protocol)),
            clean(c.operator),
            clean(c.config_path) or None,
            clean(c.before_sha256) or None,
            clean(c.after_sha256) or None,
            clean(c.found_sha256) or None,
            clean(c.backup_path) or None,
            clean(c.restart),
            clean(c.message) or None,
        )
        for c in report.applied_changes
    )
    return Sheet("applied", labels.sheet("applied"), columns, rows)

"""The one-screen summary at the end of a scan: coverage, findings by severity, what is
new since the previous scan, where the history and the reports are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scanner.facts import SEVERITIES, RunStatus, is_active
from scanner.judge.not_evaluated import restarts_not_evaluated, services_not_evaluated
from scanner.judge.policy import Policy
from scanner.store.repo import Store


@dataclass(frozen=True)
class ScanSummary:
    run_id: int
    status: RunStatus
    planned: int
    scanned: int
    failed: int
    unscanned: list[tuple[str, str]]  # (server, why in one word) of each server not scanned
    active: dict[str, int]  # active (not waived) findings per severity, most severe first
    new: int  # findings that were not there in the previous scan of their server
    waived: int
    resolved: int
    previous_run_id: int | None
    history: str  # the database, password masked
    reports: list[str] = field(default_factory=list)
    # (server, what) of each scanned server whose result has a gap (report/notes.py)
    incomplete: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready mapping (the `scan-summary` event of --log-format json)."""
        return {
            "run": self.run_id, "status": self.status, "servers_planned": self.planned,
            "servers_scanned": self.scanned, "servers_failed": self.failed,
            "unscanned": [{"server": name, "error_kind": kind} for name, kind in self.unscanned],
            "active_findings": self.active, "new_findings": self.new, "waived_findings": self.waived,
            "resolved_findings": self.resolved, "previous_run": self.previous_run_id,
            "history": self.history, "reports": self.reports,
            "incomplete": [{"server": name, "gap": gap} for name, gap in self.incomplete],
        }


def summarise(store: Store, run_id: int, reports: list[str] | None = None) -> ScanSummary:
    """The summary of run `run_id` as stored (findings after waivers and severity overrides)."""
    run = store.run(run_id)
    findings = store.findings(run_id)
    active: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        if is_active(finding.state):
            active[finding.severity if finding.severity in active else "info"] += 1
    unscanned: list[tuple[str, str]] = sorted(
        (obs.name, obs.error_kind or "error")
        for obs in store.server_observations(run_id) if obs.scan_status != "ok"
    )
    policy = Policy.from_text(run.policy_text, source="<policy stored with the run>") if run.policy_text else None
    # what a scanned server's result lacks (report/notes.py); "" when nothing
    incomplete = sorted(
        (obs.name, gap) for obs in store.server_observations(run_id) if obs.scan_status == "ok" and (
            gap := _gap(obs.events_error is not None, obs.events_truncated is not None, len(obs.collector_errors),
                        services_not_evaluated(policy or Policy.default(), obs), restarts_not_evaluated(obs)))
    )
    previous = [r.id for r in store.runs() if r.id < run_id]
    return ScanSummary(
        run_id=run_id, status=run.status, planned=run.servers_planned, scanned=run.servers_scanned,
        failed=run.servers_failed, unscanned=unscanned, active=active,
        new=sum(1 for f in findings if f.state == "new"),
        waived=sum(1 for f in findings if not is_active(f.state)),
        resolved=len(store.resolved(run_id)),
        previous_run_id=max(previous) if previous else None,
        history=store.url_display, reports=list(reports or []), incomplete=incomplete,
    )


def _gap(unread: bool, lower_bound: bool, errors: int, services: Sequence[str] = (),
         restarts: Sequence[str] = ()) -> str:
    """What a server's result lacks, in a few words."""
    what = ["Application log not read (XS-010 not evaluated)" if unread else
            "refused logons a lower bound" if lower_bound else ""]
    if services:
        what.append(f"{'/'.join(services)} start mode not read (XS-013 not evaluated)")
    if restarts:
        what.append(f"{'/'.join(restarts)} pending restart unknown (XS-005 not evaluated)")
    if errors:
        what.append(f"{errors} collector error(s)")
    return "; ".join(w for w in what if w)


def summary_lines(summary: ScanSummary) -> list[str]:
    """The summary as a few lines of text, each under 100 characters where names allow."""
    s = summary
    lines = [f"run {s.run_id} {s.status}: {s.scanned} scanned, {s.failed} failed, of {s.planned} planned server(s)"]
    if s.unscanned:
        shown = ", ".join(f"{name} ({kind})" for name, kind in s.unscanned[:8])
        more = f" and {len(s.unscanned) - 8} more" if len(s.unscanned) > 8 else ""
        lines.append(f"  not scanned: {shown}{more}")
    if s.incomplete:
        shown = ", ".join(f"{name} ({gap})" for name, gap in s.incomplete[:4])
        more = f" and {len(s.incomplete) - 4} more" if len(s.incomplete) > 4 else ""
        lines.append(f"  incomplete: {shown}{more}")
    counts = ", ".join(f"{n} {severity}" for severity, n in s.active.items() if n) or "none"
    since = f"run {s.previous_run_id}" if s.previous_run_id is not None else "first scan"
    lines.append(f"  active findings: {counts}")
    lines.append(f"  since {since}: {s.new} new, {s.resolved} resolved" + (f"; {s.waived} waived" if s.waived else ""))
    lines.append(f"  history: {s.history}")
    if s.reports:
        lines.extend(f"  report: {path}" for path in s.reports)
    else:
        lines.append(f"  reports: cas-audit report --run {s.run_id} --format xlsx (or json, csv)")
    return lines

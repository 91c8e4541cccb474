"""The JSON report of docs/contracts.md, from the report model."""

from __future__ import annotations

import json
from typing import Any, TextIO

from scanner.facts import PROTOCOLS
from scanner.parse.builds import rollup_check
from scanner.parse.observe import ProtocolObservation, ServerObservation
from scanner.parse.protocol_state import REFERENCE_REPORTED, REPORTED, protocol_state, reference_state
from scanner.report.model import ChangeRecord, RunReport
from scanner.report.notes import json_application_log, json_not_evaluated, server_notes
from scanner.util.timefmt import iso


def _protocol(p: ProtocolObservation, s: ServerObservation) -> dict[str, Any]:
    # config_detail is an addition to the contract: why the value is unknown or the status
    # not ok ("" when ok)
    return {
        **protocol_state(p, REPORTED, iso),
        # null when the Application log could not be read: XS-010 not evaluated, never "none"
        "refused_logons": len(p.refused_logons) if s.events_error is None else None,
        # addition to the contract: the count is a lower bound (application_log says why)
        "refused_logons_lower_bound": s.events_truncated is not None,
        # addition to the contract: the file=/configSource= file of the section in force
        "config_reference": reference_state(p.config_reference, REFERENCE_REPORTED, iso),
    }


def _server(s: ServerObservation) -> dict[str, Any]:
    error = None
    if s.scan_status != "ok":
        error = f"{s.error_kind}: {s.error}" if s.error_kind else s.error
    return {
        "name": s.name,
        "site": s.site,
        "scan_status": s.scan_status,
        "error": error,
        "build": s.build,
        "service_pack": s.service_pack,
        "rollup": s.rollup,
        # additions to the contract: the registry's Patches list as a second opinion
        "rollup_listed": s.rollup_listed,
        "build_check": rollup_check(s.build, s.rollup_listed) if s.scan_status == "ok" else None,
        "protocols": {p: _protocol(s.protocols[p], s) for p in PROTOCOLS if p in s.protocols},
        # additions to the contract: what the scan did not establish (report/notes.py)
        "application_log": json_application_log(s),
        "collector_errors": [{"stage": stage, "message": message} for stage, message in s.collector_errors],
        # where the site comes from: the server's Netlogon value (SiteName | DynamicSiteName),
        # and the site the inventory planned when it differs from the server's (docs/contracts.md)
        "site_source": s.site_source,
        "inventory_site": s.inventory_site if s.site_differs else None,
    }


def change_dict(c: ChangeRecord) -> dict[str, Any]:
    """One recorded change of `fix apply`/`fix rollback` (addition to the contract)."""
    return {
        "ticket": c.ticket,
        "kind": c.kind,
        "operator": c.operator,
        "server": c.server_name,
        "protocol": c.protocol,
        "config_path": c.config_path or None,
        "before_sha256": c.before_sha256 or None,
        "after_sha256": c.after_sha256 or None,
        "found_sha256": c.found_sha256 or None,
        "backup_path": c.backup_path or None,
        "restart": c.restart,
        "result": c.result,
        "message": c.message or None,
        "changed_at": iso(c.changed_at),
    }


def resolved_change(c: ChangeRecord | None) -> dict[str, Any] | None:
    """The change that resolved a finding: its ticket (docs/contracts.md)."""
    if c is None:
        return None
    return {"ticket": c.ticket, "changed_at": iso(c.changed_at), "operator": c.operator,
            "after_sha256": c.after_sha256 or None, "restart": c.restart, "result": c.result}


def _head(report: RunReport) -> tuple[str, dict[str, Any]]:
    """("run", the run) for a run's report; ("as_of", the view's time) for the organisation view."""
    if report.as_of is not None:
        view = report.as_of
        return "as_of", {
            "time": iso(view.time),
            "stale_days": view.stale_days,
            "servers": len(report.servers),
            "stale_servers": view.stale_servers,
            "runs": list(view.runs),
            "tool_version": view.tool_version,
            "seal": report.seal,
        }
    run = report.run
    if run is None:
        raise ValueError("a report has either a run or an as-of time")
    return "run", {
        "id": run.id,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "status": run.status,
        "servers_planned": run.servers_planned,
        "servers_scanned": run.servers_scanned,
        "tool_version": run.tool_version,
        "seal": report.seal,
        # addition to the contract: the window `applied_changes` lists (report/applied.py)
        "applied_changes_window": {"after": iso(report.applied_window[0]), "through": iso(report.applied_window[1])},
    }


def report_dict(report: RunReport) -> dict[str, Any]:
    """The report as the JSON-ready dictionary of docs/contracts.md.

    The organisation view has "as_of" in place of "run", and says per server where its
    observation comes from (run_id, observed_at, stale) and per finding its run_id.
    """
    key, head = _head(report)
    view = report.as_of
    servers = [_server(s) for s in report.servers]
    if view is not None:
        for entry, source in zip(servers, view.sources, strict=True):
            entry.update(run_id=source.run_id, observed_at=iso(source.observed_at), stale=source.stale)
    findings: list[dict[str, Any]] = [
        {
            "rule": f.rule,
            "severity": f.severity,
            "server": f.server,
            "protocol": f.protocol,
            "state": f.state,
            "message": f.message,
            # the contract has no site key: a site-level finding (XS-009) names it here
            "evidence": f.evidence if f.site is None or "site" in f.evidence
            else {**f.evidence, "site": f.site},
            # the controls the rule serves (rules/catalog.toml), as docs/contracts.md names them
            "controls": [c.as_json() for c in f.controls],
        }
        for f in report.findings
    ]
    if view is not None:
        for entry, run_id in zip(findings, view.finding_runs, strict=True):
            entry["run_id"] = run_id
    return {
        key: head,
        "servers": servers,
        "findings": findings,
        # "change": the recorded change that resolved it (its ticket), else null
        "resolved": [{"rule": r.rule, "server": r.server, "protocol": r.protocol, "change": resolved_change(r.change)}
                     for r in report.resolved],
        # addition to the contract: each rule a scan could not judge, where and why (report/notes.py)
        "not_evaluated": json_not_evaluated(
            [n for s in report.servers for n in server_notes(s, report.services_unread_on(s.name))]),
        # addition to the contract: the changes recorded in the run's window, oldest first
        # (a run's report; the organisation view has no run window)
        **({} if view is not None else {"applied_changes": [change_dict(c) for c in report.applied_changes]}),
    }


def write_json(report: RunReport, stream: TextIO) -> None:
    """Write the JSON report (UTF-8 text, stable key order as in docs/contracts.md)."""
    json.dump(report_dict(report), stream, ensure_ascii=False, indent=2, default=str)
    stream.write("\n")

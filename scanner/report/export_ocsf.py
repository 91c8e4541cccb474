"""The OCSF report: JSON Lines, one OCSF 1.5.0 Compliance Finding (class_uid 2003) per finding,
then one per rule a scan could not judge on a server (report/notes.py: compliance status
Warning, status_detail "not-evaluated", the reason in the evidence), so a SIEM sees the gap,
then one Close per finding the run resolved (status Resolved, compliance Pass, the uid of
the lines that reported it, the change that resolved it: docs/contracts.md).

Schema: https://schema.ocsf.io/1.5.0/classes/compliance_finding (the version of the models in
Prowler's py-ocsf-models 0.10, which tests/test_export_ocsf.py validates every line against).
Built from the JSON report's dictionary (export_json.report_dict), so the evidence, the
controls and the run's seal are the JSON report's own.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, TextIO

from scanner.report.export_json import report_dict, resolved_change
from scanner.report.labels import Labels
from scanner.report.model import FindingInfo, ResolvedInfo, RunReport
from scanner.report.notes import ServerNote, not_evaluated_fix, note_message, server_notes
from scanner.util.timefmt import iso, iso_exact

OCSF_VERSION = "1.5.0"
CLASS_UID = 2003  # Compliance Finding
CATEGORY_UID = 2  # Findings
ACTIVITY_CREATE = 1
ACTIVITY_CLOSE = 3  # a finding was closed: the run resolved it
STATUS_RESOLVED = 4
_ACTIVITY_NAMES = {ACTIVITY_CREATE: "Create", ACTIVITY_CLOSE: "Close"}
# OCSF severity_id: 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical
SEVERITY_IDS: dict[str, tuple[int, str]] = {
    "info": (1, "Informational"),
    "low": (2, "Low"),
    "medium": (3, "Medium"),
    "high": (4, "High"),
    "critical": (5, "Critical"),
}
# the finding's status_id: 1 New (not reviewed), 3 Suppressed (a waiver covers it)
_STATUS: dict[str, tuple[int, str]] = {
    "new": (1, "New"),
    "persisting": (1, "New"),
    "waiver-expired": (1, "New"),
    "waived": (3, "Suppressed"),
}
# XS-011: the server could not be scanned, so the check yielded no result (compliance
# status_id 2 Warning: "did not yield a result due to missing information"), not a failure
_NO_RESULT_RULES = frozenset({"XS-011"})


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _head(activity_id: int, moment: datetime, severity: tuple[int, str], status: tuple[int, str, str],
          message: str, tool_version: str, lang: str) -> dict[str, Any]:
    """The keys every line of the class starts with, in this order: activity, category, class,
    type, time, severity, status (id, name, detail), message and metadata."""
    activity = _ACTIVITY_NAMES[activity_id]
    return {
        "activity_id": activity_id, "activity_name": activity,
        "category_uid": CATEGORY_UID, "category_name": "Findings",
        "class_uid": CLASS_UID, "class_name": "Compliance Finding",
        "type_uid": CLASS_UID * 100 + activity_id, "type_name": f"Compliance Finding: {activity}",
        "time": _ms(moment),
        "severity_id": severity[0], "severity": severity[1],
        "status_id": status[0], "status": status[1], "status_detail": status[2],
        "message": message,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "cas-audit", "vendor_name": "cas-audit", "version": tool_version, "lang": lang},
        },
    }


def finding_uid(f: FindingInfo | ResolvedInfo) -> str:
    """Stable per finding across runs: rule, server, protocol and when it was first seen."""
    first = iso_exact(f.first_seen_at)  # the history's exact UTC time: the uids made so far
    key = json.dumps([f.rule, f.server, f.protocol, f.site if f.server is None else None, first],
                     ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def resolved_uid(r: ResolvedInfo) -> str:
    """The uid of the finding a resolved line closes; without its first-seen time (no longer
    in the history) one of rule, server, protocol and "first-seen-unknown", which matches
    no earlier line."""
    if r.first_seen_at is not None:
        return finding_uid(r)
    key = json.dumps(["first-seen-unknown", r.rule, r.server, r.protocol], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _compliance(f: FindingInfo, controls: list[dict[str, Any]]) -> dict[str, Any]:
    status = (2, "Warning") if f.rule in _NO_RESULT_RULES else (3, "Fail")
    return _compliance_of(f"{f.rule} {f.title}", controls, status)


def _compliance_of(control: str, controls: list[dict[str, Any]], status: tuple[int, str]) -> dict[str, Any]:
    """OCSF `compliance`: the rule, the controls it serves, and Pass (1), Warning (2) or Fail (3)."""
    return {
        "control": control,
        "requirements": [f"{c['framework']} {c['id']}" for c in controls],
        "standards": sorted({str(c["framework"]) for c in controls}),
        "status": status[1],
        "status_id": status[0],
    }


def _resource(f: FindingInfo) -> dict[str, Any]:
    if f.server is None:  # a site-level finding (XS-009)
        data: dict[str, Any] = {"site": f.site, "protocol": f.protocol}
        return {"type": "Active Directory site", "name": f.site, "uid": f.site, "data": data}
    return _resource_of(f.server, f.site, f.protocol)


def _resource_of(server: str, site: str | None, protocol: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {"type": "Exchange 2007 Client Access Server", "name": server,
                                "uid": server, "data": {"site": site, "protocol": protocol}}
    if site is not None:
        resource["group"] = {"type": "Active Directory site", "name": site}
    return resource


def ocsf_events(report: RunReport) -> list[dict[str, Any]]:
    """One OCSF Compliance Finding per finding of the report, in the report's order, then one per
    rule not evaluated on a server."""
    head = report_dict(report)
    run = head.get("run")
    view = head.get("as_of")
    if report.as_of is not None:
        moment, tool_version = report.as_of.time, report.as_of.tool_version
    elif report.run is not None:
        moment, tool_version = report.run.finished_at or report.run.started_at, report.run.tool_version
    else:
        raise ValueError("a report has either a run or an as-of time")
    events = []
    for f, entry in zip(report.findings, head["findings"], strict=True):
        controls: list[dict[str, Any]] = list(entry.get("controls") or [])
        severity_id, severity = SEVERITY_IDS.get(f.severity, (0, "Unknown"))
        status_id, status = _STATUS.get(f.state, (99, "Other"))
        unmapped: dict[str, Any] = {
            "state": f.state,
            "observed": f.observed,
            "expected": f.expected,
            "first_seen_run": f.first_seen_run,
            "run_id": entry.get("run_id", run["id"] if run else None),
            "controls": controls,
        }
        if run is not None and run.get("seal") is not None:
            unmapped["seal"] = run["seal"]
        if view is not None:
            unmapped["as_of"] = view["time"]
        if f.waiver is not None:
            unmapped["waiver"] = f.waiver
        event: dict[str, Any] = {
            **_head(ACTIVITY_CREATE, moment, (severity_id, severity), (status_id, status, f.state), f.message,
                    tool_version, report.lang),
            "finding_info": {
                "uid": finding_uid(f),
                "title": f.title,
                "desc": f.message,
                "types": [f.rule],
                "first_seen_time": _ms(f.first_seen_at),
                "last_seen_time": _ms(moment),
            },
            "compliance": _compliance(f, controls),
            "resources": [_resource(f)],
            # the evidence as the JSON report has it (JSON-safe: times as text)
            "evidences": [{"name": f.rule, "data": json.loads(json.dumps(entry["evidence"], default=str))}],
            "remediation": {"desc": f.remediation},
            "unmapped": unmapped,
        }
        if event["finding_info"]["first_seen_time"] is None:
            del event["finding_info"]["first_seen_time"]
        events.append(event)
    return (events + _not_evaluated_events(report, moment, tool_version, run)
            + _resolved_events(report, moment, tool_version, run))


def not_evaluated_uid(note: ServerNote) -> str:
    """Stable per gap: a rule not evaluated on a server (and protocol)."""
    key = json.dumps(["not-evaluated", note.rule, note.server, note.protocol], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _not_evaluated_events(report: RunReport, moment: datetime, tool_version: str,
                          run: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One Compliance Finding per rule a scan could not judge (XS-010, XS-013, XS-005): compliance
    status Warning, "did not yield a result due to missing information", with the reason."""
    labels = Labels(report.lang)
    rules = {r.id: r for r in report.rules}
    notes = [n for s in report.servers for n in server_notes(s, report.services_unread_on(s.name))
             if n.kind == "not-evaluated" and n.rule is not None]
    events = []
    for note in notes:
        rule = rules.get(note.rule or "")
        controls = [c.as_json() for c in (rule.controls if rule else ()) if c.applies_to(note.protocol)]
        message = note_message(labels, note)
        title = rule.title if rule else str(note.rule)
        unmapped: dict[str, Any] = {"state": "not-evaluated", "reason": note.reason or None, "controls": controls,
                                    "run_id": run["id"] if run else None}
        if run is not None and run.get("seal") is not None:
            unmapped["seal"] = run["seal"]
        data = {"server": note.server, "site": note.site, "protocol": note.protocol, "reason": note.reason or None}
        events.append({
            **_head(ACTIVITY_CREATE, moment, (1, "Informational"), (1, "New", "not-evaluated"), message,
                    tool_version, report.lang),
            "finding_info": {"uid": not_evaluated_uid(note), "title": title, "desc": message,
                             "types": [str(note.rule)], "last_seen_time": _ms(moment)},
            "compliance": _compliance_of(f"{note.rule} {title}", controls, (2, "Warning")),
            "resources": [_resource_of(note.server, note.site, note.protocol)],
            "evidences": [{"name": str(note.rule), "data": data}],
            "remediation": {"desc": not_evaluated_fix(labels, note)},
            "unmapped": unmapped,
        })
    return events


def _resolved_events(report: RunReport, moment: datetime, tool_version: str,
                     run: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One Close per finding the run resolved: status Resolved, compliance Pass, the same
    finding_info.uid as the lines that reported it, the change that resolved it if any."""
    labels = Labels(report.lang)
    rules = {r.id: r for r in report.rules}
    sites = {s.name.casefold(): s.site for s in report.servers}
    events = []
    for r in report.resolved:
        rule = rules.get(r.rule)
        title = rule.title if rule else r.rule
        controls = [c.as_json() for c in (rule.controls if rule else ()) if c.applies_to(r.protocol)]
        c = r.change
        if c is None:
            message, desc = labels("state.resolved"), labels("resolved.message")
        else:
            message = labels("state.resolved_by", ticket=c.ticket)
            key = "resolved.by_restart" if r.rule == "XS-005" else "resolved.by_change"
            desc = labels(key, ticket=c.ticket, time=iso(c.changed_at), operator=c.operator,
                          sha256=c.after_sha256 or "-")
        unmapped: dict[str, Any] = {"state": "resolved", "change": resolved_change(c), "controls": controls,
                                    "first_seen_known": r.first_seen_at is not None,
                                    "run_id": run["id"] if run else None}
        if run is not None and run.get("seal") is not None:
            unmapped["seal"] = run["seal"]
        info: dict[str, Any] = {"uid": resolved_uid(r), "title": title, "desc": desc, "types": [r.rule],
                                "last_seen_time": _ms(moment)}
        if r.first_seen_at is not None:
            info["first_seen_time"] = _ms(r.first_seen_at)
        if r.server is None:
            resource: dict[str, Any] = {"type": "Active Directory site", "name": r.site, "uid": r.site,
                                        "data": {"site": r.site, "protocol": r.protocol}}
        else:
            resource = _resource_of(r.server, sites.get(r.server.casefold()), r.protocol)
        events.append({
            **_head(ACTIVITY_CLOSE, moment, (1, "Informational"), (STATUS_RESOLVED, "Resolved", "resolved"),
                    message, tool_version, report.lang),
            "finding_info": info,
            "compliance": _compliance_of(f"{r.rule} {title}", controls, (1, "Pass")),
            "resources": [resource],
            "unmapped": unmapped,
        })
    return events


def write_ocsf(report: RunReport, stream: TextIO) -> None:
    """Write one JSON object per line (JSON Lines), UTF-8, no blank lines."""
    for event in ocsf_events(report):
        stream.write(json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str))
        stream.write("\n")

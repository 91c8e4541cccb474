"""What a scan of a server did not establish, for every report format: the collector's
stage errors, an Application log that could not be read (XS-010 not evaluated) and a
partly read one (its refused logons are a lower bound), a service whose start mode could
not be read where the policy requires it disabled (XS-013 not evaluated,
judge/not_evaluated.py), a running service whose pending restart is unknown (its start
time or its file's last write time was not read: XS-005 not evaluated), and a site the inventory planned that is not the one the server
reports.

The JSON report carries them per server (`collector_errors`, `application_log`, and
`refused_logons` null where not evaluated) and lists every rule not evaluated in
`not_evaluated`; the OCSF report has a line for each (compliance status Warning); the
workbook's Servers sheet has a column for each; the Findings sheet, the CSV and the HTML
list each as a row after the findings, with the state "not evaluated", "lower bound" or
"collector error" and no severity, so a reader of any format sees the gap and its reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from scanner.collect.collected import SERVICE_DISPLAY_NAMES
from scanner.facts import NoteKind
from scanner.judge.not_evaluated import restart_read_error, restarts_not_evaluated, service_read_error
from scanner.parse.observe import ProtocolObservation, ServerObservation
from scanner.report.labels import Labels

#: Characters of a server's own error text kept in a report.
MAX_REASON = 300


@dataclass(frozen=True)
class ServerNote:
    """One thing a scan of `server` did not establish."""

    server: str
    site: str | None
    kind: NoteKind
    rule: str | None  # XS-010 for the Application log, XS-013/XS-005 for a service; None for a collector error
    stage: str | None  # the collector's stage of a collector error; XS-005: the stage of the time not read
    reason: str  # the server's own text (not-evaluated, collector-error) or "max" | "window"
    limit: int | None = None  # lower-bound: the number of entries or events read
    protocol: str | None = None  # XS-013, XS-005: the service's protocol


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "\u2026"


def server_notes(server: ServerObservation, services_unread: Sequence[str] = ()) -> list[ServerNote]:
    """The notes of one server's scan, in a fixed order (log first, then the services whose
    start mode was not read where XS-013 needs it, `services_unread`, then the services
    whose pending restart is unknown (XS-005), then stage errors)."""
    if server.scan_status != "ok":
        return []  # XS-011 says it all
    notes = []
    if server.events_error is not None:
        notes.append(ServerNote(server.name, server.site, "not-evaluated", "XS-010", None, _clip(server.events_error)))
    elif server.events_truncated is not None:
        notes.append(ServerNote(server.name, server.site, "lower-bound", "XS-010", None, server.events_truncated,
                                server.events_limit))
    why = service_read_error(server)
    for protocol in services_unread:
        notes.append(ServerNote(server.name, server.site, "not-evaluated", "XS-013", None,
                                _clip(why) if why is not None else "", protocol=protocol))
    for protocol in restarts_not_evaluated(server):
        stage, why = restart_read_error(server, protocol)
        notes.append(ServerNote(server.name, server.site, "not-evaluated", "XS-005", stage,
                                _clip(why) if why is not None else "", protocol=protocol))
    for stage, message in server.collector_errors:
        notes.append(ServerNote(server.name, server.site, "collector-error", None, _clip(stage), _clip(message)))
    if server.site_differs and server.inventory_site is not None:
        # the server's own site wins over the inventory's plan (docs/contracts.md, "Sites")
        notes.append(ServerNote(server.name, server.site, "site-differs", None, None, _clip(server.inventory_site)))
    return notes


def note_message(labels: Labels, note: ServerNote) -> str:
    """The sentence a report shows for a note, in the report's language."""
    service = SERVICE_DISPLAY_NAMES.get(note.protocol or "", note.protocol or "?")
    if note.kind == "not-evaluated" and note.rule == "XS-013":
        key = "note.service_unread" if note.reason else "note.service_unread_none"
        return labels(key, server=note.server, service=service, reason=note.reason)
    if note.kind == "not-evaluated" and note.rule == "XS-005":
        key = "note.restart_service" if note.stage == "service" else "note.restart_config"
        return labels(key if note.reason else key + "_none", server=note.server, service=service, reason=note.reason)
    if note.kind == "not-evaluated":
        return labels("note.log_unread", server=note.server, reason=note.reason)
    if note.kind == "lower-bound":
        key = "note.window" if note.reason == "window" else "note.max"
        return labels(key, server=note.server, limit=note.limit if note.limit is not None else "?")
    if note.kind == "site-differs":
        if note.site is None:
            return labels("note.site_unread", server=note.server, planned=note.reason)
        return labels("note.site_differs_text", server=note.server, planned=note.reason, site=note.site)
    return labels("note.stage_error", server=note.server, stage=note.stage or "?", message=note.reason)


def application_log_text(labels: Labels, server: ServerObservation) -> str | None:
    """The Servers sheet's Application log cell: read, not read (why), or read in part."""
    if server.scan_status != "ok":
        return None
    if server.events_error is not None:
        return labels("log.not_read", reason=_clip(server.events_error))
    if server.events_truncated is not None:
        key = "log.window" if server.events_truncated == "window" else "log.max"
        return labels(key, limit=server.events_limit if server.events_limit is not None else "?")
    return labels("log.read")


def collector_errors_text(server: ServerObservation) -> str | None:
    """The Servers sheet's collector errors cell: "stage: message" per error, or empty."""
    if not server.collector_errors:
        return None
    return "; ".join(f"{_clip(stage)}: {_clip(message)}" for stage, message in server.collector_errors)


def refused_logons_cell(labels: Labels, server: ServerObservation, p: ProtocolObservation) -> int | str:
    """The count of refused logons, "200+" when it is a lower bound, or "not evaluated"."""
    if server.events_error is not None:
        return labels("note.not_evaluated")
    if server.events_truncated is not None:
        return f"{len(p.refused_logons)}+"
    return len(p.refused_logons)


def note_rows(notes: list[ServerNote], labels: Labels, rule_titles: dict[str, str]) -> Iterator[tuple[Any, ...]]:
    """The Findings sheet's and the CSV's rows for the notes (columns of findings_columns)."""
    for note in notes:
        state = {"not-evaluated": "note.not_evaluated", "lower-bound": "note.lower_bound",
                 "site-differs": "note.site_differs"}.get(note.kind, "note.collector_error")
        title = (rule_titles.get(note.rule or "", "") if note.rule
                 else labels("note.site_differs_title") if note.kind == "site-differs"
                 else labels("note.collector_error_title"))
        remedy = not_evaluated_fix(labels, note) if note.kind == "not-evaluated" else None
        yield (note.rule, title, None, labels(state), note.server, note.site,
               labels.word("protocol", note.protocol) if note.protocol else None, None, None,
               note_message(labels, note), remedy, None, None, None, None, None)


def not_evaluated_fix(labels: Labels, note: ServerNote) -> str:
    """What lets the next scan judge a rule not evaluated."""
    return labels({"XS-013": "note.service_unread_fix", "XS-005": "note.restart_unread_fix"}.get(
        note.rule or "", "note.log_unread_fix"))


def json_not_evaluated(notes: Sequence[ServerNote]) -> list[dict[str, Any]]:
    """The JSON report's `not_evaluated`: each rule a scan could not judge, where and why."""
    return [{"rule": n.rule, "server": n.server, "site": n.site, "protocol": n.protocol, "reason": n.reason or None}
            for n in notes if n.kind == "not-evaluated"]


def json_application_log(server: ServerObservation) -> dict[str, Any] | None:
    """The JSON report's `application_log` of a server (None for a server not scanned)."""
    if server.scan_status != "ok":
        return None
    return {
        "read": server.events_error is None,
        "error": server.events_error,
        "lower_bound": server.events_truncated is not None,
        "lower_bound_reason": server.events_truncated,
        "limit": server.events_limit,
    }

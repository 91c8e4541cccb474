"""Data for `cas-audit history`, `cas-audit diff` and the workbook's Changes sheet.

Reads the store, returns plain rows; the command line renders them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scanner.facts import PROTOCOLS, DiffStatus
from scanner.judge.checks import build_changed, finding_key
from scanner.parse.configfile import value_text
from scanner.parse.observe import ProtocolObservation, ServerObservation
from scanner.report.model import ChangeInfo
from scanner.store.repo import FindingRow, Store
from scanner.util.timefmt import iso

# Per-protocol fields compared between observations, in display order.
PROTOCOL_FIELDS: tuple[str, ...] = (
    "allow_cross_site",
    "value_source",
    "config_status",
    "config_sha256",
    "service",
    "start_mode",
    "pending_restart",
)
SERVER_FIELDS: tuple[str, ...] = ("scan_status", "site", "build", "service_pack", "rollup")
CHANGE_FIELDS: tuple[str, ...] = ("allow_cross_site", "config_sha256", "service", "start_mode")


@dataclass(frozen=True)
class TimelineRow:
    """One scan of one server and protocol; `changed` names the fields that differ from the
    previous successful scan of the same protocol (empty for the first, and for failed scans)."""

    run_id: int
    at: datetime
    protocol: str | None  # None for a failed scan when no protocol was asked for
    scan_status: str
    error: str | None
    allow_cross_site: bool | None
    value_source: str | None
    config_status: str | None
    raw_value: str | None
    config_sha256: str | None
    build: str | None
    service_pack: str | None
    rollup: str | None
    service: str | None
    start_mode: str | None
    service_started: datetime | None
    pending_restart: bool | None
    changed: frozenset[str]

    def as_dict(self) -> dict[str, Any]:
        """Display columns; keys match the names in `changed`. What a successful scan did not
        read is "unknown", never an empty cell (a failed scan read nothing: its row is empty)."""
        unknown = "unknown" if self.scan_status == "ok" else None
        return {
            "run": self.run_id,
            "at": iso(self.at),
            "protocol": self.protocol,
            "scan_status": self.error and f"error ({self.error})" or self.scan_status,
            "allow_cross_site": value_text(self.allow_cross_site),
            "value_source": self.value_source,
            "config_status": self.config_status,
            "config_sha256": self.config_sha256[:12] if self.config_sha256 else None,
            "build": self.build,
            "service_pack": self.service_pack,
            "rollup": self.rollup,
            "service": self.service or unknown,
            "start_mode": self.start_mode or (None if self.service == "absent" else unknown),
            "pending_restart": unknown if self.pending_restart is None else ("yes" if self.pending_restart else "no"),
        }


def _proto_value(p: ProtocolObservation, name: str) -> str | None:
    value = getattr(p, name)
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None else str(value)


def _server_value(obs: ServerObservation, name: str) -> str | None:
    value = getattr(obs, name)
    return None if value is None else str(value)


def timeline(store: Store, server: str, protocol: str | None = None) -> list[TimelineRow]:
    """Every scan of `server` (oldest first), per protocol, with each change marked."""
    protocols = (protocol,) if protocol else PROTOCOLS
    rows: list[TimelineRow] = []
    last: dict[str, tuple[ServerObservation, ProtocolObservation]] = {}
    for run_id, obs in store.history(server, protocol):
        if obs.scan_status != "ok":
            rows.append(
                TimelineRow(
                    run_id=run_id, at=obs.finished_at, protocol=protocol, scan_status=obs.scan_status,
                    error=f"{obs.error_kind}: {obs.error}" if obs.error_kind else obs.error,
                    allow_cross_site=None, value_source=None, config_status=None, raw_value=None,
                    config_sha256=None, build=None, service_pack=None, rollup=None, service=None,
                    start_mode=None, service_started=None, pending_restart=None, changed=frozenset(),
                )
            )
            continue
        for name in protocols:
            p = obs.protocols.get(name)
            if p is None:
                continue
            changed: set[str] = set()
            before = last.get(name)
            if before is not None:
                prev_obs, prev_p = before
                changed |= {f for f in ("build", "service_pack", "rollup") if _server_value(prev_obs, f) != _server_value(obs, f)}
                changed |= {f for f in PROTOCOL_FIELDS if _proto_value(prev_p, f) != _proto_value(p, f)}
            last[name] = (obs, p)
            rows.append(
                TimelineRow(
                    run_id=run_id, at=obs.finished_at, protocol=name, scan_status="ok", error=None,
                    allow_cross_site=p.allow_cross_site, value_source=p.value_source,
                    config_status=p.config_status, raw_value=p.raw_value, config_sha256=p.config_sha256,
                    build=obs.build, service_pack=obs.service_pack, rollup=obs.rollup, service=p.service,
                    start_mode=p.start_mode, service_started=p.service_started,
                    pending_restart=p.pending_restart, changed=frozenset(changed),
                )
            )
    return rows


@dataclass(frozen=True)
class FieldChange:
    protocol: str | None  # None for server-level fields
    field: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class ServerDiff:
    """What differs for one server between two runs."""

    server: str
    site: str | None
    status_a: DiffStatus
    status_b: DiffStatus
    changes: tuple[FieldChange, ...]
    findings_new: tuple[tuple[str, str | None], ...]  # (rule, protocol) in run B, not in run A
    findings_resolved: tuple[tuple[str, str | None], ...]  # in run A, not in run B

    def as_dict(self) -> dict[str, Any]:
        """Display columns."""
        return {
            "server": self.server,
            "site": self.site,
            "scan": self.status_a if self.status_a == self.status_b else f"{self.status_a} -> {self.status_b}",
            "changes": "; ".join(
                f"{c.protocol + '.' if c.protocol else ''}{c.field}: {c.before} -> {c.after}" for c in self.changes
            ),
            "new findings": ", ".join(f"{r}/{p}" if p else r for r, p in self.findings_new),
            "resolved findings": ", ".join(f"{r}/{p}" if p else r for r, p in self.findings_resolved),
        }


@dataclass(frozen=True)
class RunDiff:
    run_a: int
    run_b: int
    servers: tuple[ServerDiff, ...]  # only servers with something to show, in run B's order
    unchanged: tuple[str, ...]  # servers present in both runs with nothing to show
    site_findings_new: tuple[tuple[str, str | None, str | None], ...]  # (rule, site, protocol)
    site_findings_resolved: tuple[tuple[str, str | None, str | None], ...]

    # A RunDiff reads as the sequence of its servers with something to show.
    def __len__(self) -> int:
        return len(self.servers)

    def __iter__(self) -> Iterator[ServerDiff]:
        return iter(self.servers)

    def __getitem__(self, index: int) -> ServerDiff:
        return self.servers[index]


def _observation_fields(obs: ServerObservation | None) -> dict[tuple[str | None, str], str | None]:
    if obs is None:
        return {}
    values: dict[tuple[str | None, str], str | None] = {(None, f): _server_value(obs, f) for f in SERVER_FIELDS}
    if obs.scan_status == "ok":
        for name, p in obs.protocols.items():
            for f in PROTOCOL_FIELDS:
                values[(name, f)] = _proto_value(p, f)
    return values


def _finding_keys(rows: Sequence[FindingRow]) -> set[tuple[str, str, str, str]]:
    return {finding_key(r.rule, r.server_name, r.site, r.protocol) for r in rows}


def diff(store: Store, run_a: int, run_b: int) -> RunDiff:
    """Server by server, what changed from run A to run B (observations and findings)."""
    obs_a = {o.name.casefold(): o for o in store.server_observations(run_a)}
    obs_b = {o.name.casefold(): o for o in store.server_observations(run_b)}
    names: dict[str, str] = {}
    for planned in (*store.planned_servers(run_b), *store.planned_servers(run_a)):
        names.setdefault(planned.name.casefold(), planned.name)
    for o in (*obs_b.values(), *obs_a.values()):
        names.setdefault(o.name.casefold(), o.name)
    findings_a, findings_b = store.findings(run_a), store.findings(run_b)
    keys_a, keys_b = _finding_keys(findings_a), _finding_keys(findings_b)
    servers: list[ServerDiff] = []
    unchanged: list[str] = []
    for key, name in names.items():
        a, b = obs_a.get(key), obs_b.get(key)
        fields_a, fields_b = _observation_fields(a), _observation_fields(b)
        changes = []
        if a is not None and b is not None:
            for field_key in sorted(set(fields_a) | set(fields_b), key=lambda k: (k[0] or "", k[1])):
                # a failed scan says nothing about the protocols: compare only what both observed
                if field_key[0] is not None and (field_key not in fields_a or field_key not in fields_b):
                    continue
                if fields_a.get(field_key) != fields_b.get(field_key):
                    changes.append(FieldChange(field_key[0], field_key[1], fields_a.get(field_key), fields_b.get(field_key)))
        new = tuple(sorted((k[0], k[2] or None) for k in keys_b - keys_a if k[1] == key))
        gone = tuple(sorted((k[0], k[2] or None) for k in keys_a - keys_b if k[1] == key))
        status_a = a.scan_status if a is not None else "absent"
        status_b = b.scan_status if b is not None else "absent"
        site = (b.site if b is not None else None) or (a.site if a is not None else None)
        if changes or new or gone or status_a != status_b:
            servers.append(ServerDiff(name, site, status_a, status_b, tuple(changes), new, gone))
        else:
            unchanged.append(name)
    site_rows = {finding_key(r.rule, r.server_name, r.site, r.protocol): r for r in (*findings_a, *findings_b) if not r.server_name}
    site_new = tuple(sorted((r.rule, r.site, r.protocol) for k, r in site_rows.items() if k in keys_b - keys_a))
    site_gone = tuple(sorted((r.rule, r.site, r.protocol) for k, r in site_rows.items() if k in keys_a - keys_b))
    return RunDiff(run_a, run_b, tuple(servers), tuple(unchanged), site_new, site_gone)


def changes(store: Store, up_to_run: int, window_runs: int = 10) -> list[ChangeInfo]:
    """Changes between consecutive successful observations detected in the last `window_runs`
    runs up to `up_to_run` (the earlier observation may be older than the window)."""
    window = [r.id for r in store.runs() if r.id <= up_to_run][: max(window_runs, 1)]
    if not window:
        return []
    first = min(window)
    result: list[ChangeInfo] = []
    for successful in store.successful_scans_window(first, up_to_run).values():
        for (rid_a, a), (rid_b, b) in zip(successful, successful[1:], strict=False):
            if rid_b < first:
                continue
            if a.build != b.build:
                result.append(_change((rid_a, a), (rid_b, b), None, "build", a.build, b.build))
            for protocol in PROTOCOLS:
                pa, pb = a.protocols.get(protocol), b.protocols.get(protocol)
                if pa is None or pb is None:
                    continue
                for f in CHANGE_FIELDS:
                    before, after = _proto_value(pa, f), _proto_value(pb, f)
                    if before != after:
                        result.append(_change((rid_a, a), (rid_b, b), protocol, f, before, after))
    result.sort(key=lambda c: (c.after_run, c.server.casefold(), c.protocol or "", c.field))
    return result


def _change(
    first: tuple[int, ServerObservation],
    second: tuple[int, ServerObservation],
    protocol: str | None,
    name: str,
    before: str | None,
    after: str | None,
) -> ChangeInfo:
    (rid_a, a), (rid_b, b) = first, second
    return ChangeInfo(
        server=b.name, site=b.site, protocol=protocol, field=name, before=before, after=after,
        before_run=rid_a, after_run=rid_b, before_at=a.finished_at, after_at=b.finished_at,
        build_changed=build_changed(a, b),
    )

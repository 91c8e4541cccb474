"""Everything a report of one run shows, as plain data built from the history store.

Exporters (JSON, CSV, XLSX) read only this model: they never query the store, so a past
run's report regenerated later has the same content. `build_report()` fills it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scanner.parse.observe import ServerObservation
from scanner.store.models import RunRow


@dataclass(frozen=True)
class RuleInfo:
    """A catalog entry as applied in this run (severity after policy overrides)."""

    id: str
    title: str
    severity: str
    default_severity: str
    rationale: str
    remediation: str
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class FindingInfo:
    rule: str
    title: str
    severity: str  # critical | high | medium | low | info, after policy overrides
    state: str  # new | persisting | waived | waiver-expired
    server: str | None
    site: str | None
    protocol: str | None
    message: str  # the sentence that explains it, in the report's language
    remediation: str
    observed: str | None  # observed value, e.g. "true", "unknown", "8.1.240.6"
    expected: str | None  # baseline value, e.g. "false"
    first_seen_run: int | None
    first_seen_at: datetime | None
    evidence: dict[str, Any] = field(default_factory=dict)
    waiver: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return self.state != "waived"


@dataclass(frozen=True)
class ResolvedInfo:
    rule: str
    server: str | None
    protocol: str | None


@dataclass(frozen=True)
class ScopeEntry:
    """One server the run planned to scan, reached or not."""

    name: str
    address: str
    site: str | None
    scan_status: str  # ok | error | not-scanned
    error_kind: str | None
    error: str | None


@dataclass(frozen=True)
class ChangeInfo:
    """A change between two consecutive successful observations of one server/protocol."""

    server: str
    site: str | None
    protocol: str | None  # None for server-level changes (build)
    field: str  # allow_cross_site | build | service | start_mode | config_sha256
    before: str | None
    after: str | None
    before_run: int
    after_run: int
    before_at: datetime
    after_at: datetime
    build_changed: bool


@dataclass(frozen=True)
class WaiverInfo:
    rule: str
    scope: str  # human text: "server CAS07", "site Hamburg / pop3"
    justification: str
    approver: str
    created: str | None
    expires: str | None
    state: str  # active | expired | unused


@dataclass(frozen=True)
class TrendPoint:
    run_id: int
    started_at: datetime
    active_by_severity: dict[str, int]


@dataclass(frozen=True)
class RunReport:
    run: RunRow
    lang: str
    servers: tuple[ServerObservation, ...]  # results of this run, in inventory order
    scope: tuple[ScopeEntry, ...]
    findings: tuple[FindingInfo, ...]
    resolved: tuple[ResolvedInfo, ...]
    changes: tuple[ChangeInfo, ...] = ()
    waivers: tuple[WaiverInfo, ...] = ()
    rules: tuple[RuleInfo, ...] = ()
    trend: tuple[TrendPoint, ...] = ()

"""Everything a report of one run shows, as plain data built from the history store.

Exporters (JSON, CSV, XLSX) read only this model: they never query the store, so a past
run's report regenerated later has the same content. `build_report()` fills it. The run is
the store's own record of it (`RunRow`); findings, rules and waivers are the judge's types.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from scanner.facts import ErrorKind, ScopeStatus
from scanner.judge.results import FindingInfo, RuleInfo, WaiverInfo
from scanner.parse.observe import ServerObservation
from scanner.store.changes import ChangeRecord
from scanner.store.models import RunRow

__all__ = [
    "AsOf",
    "ChangeInfo",
    "ChangeRecord",
    "FindingInfo",
    "ResolvedInfo",
    "RuleInfo",
    "RunReport",
    "RunRow",
    "ScopeEntry",
    "ServerSource",
    "TrendPoint",
    "WaiverInfo",
]


@dataclass(frozen=True)
class ServerSource:
    """Where the organisation view took a server's observation from."""

    run_id: int
    observed_at: datetime  # when that scan finished
    stale: bool  # older than the view's stale_days


@dataclass(frozen=True)
class AsOf:
    """The organisation view: every server's latest observation at or before `time`."""

    time: datetime
    stale_days: int
    sources: tuple[ServerSource, ...]  # one per server, in the order of `RunReport.servers`
    tool_version: str
    organisation: str | None = None
    finding_runs: tuple[int, ...] = ()  # the run each finding was saved by, in the order of findings

    @property
    def stale_servers(self) -> int:
        return sum(1 for s in self.sources if s.stale)

    @property
    def runs(self) -> tuple[int, ...]:
        """The runs the view draws on, ascending."""
        return tuple(sorted({s.run_id for s in self.sources}))


@dataclass(frozen=True)
class ResolvedInfo:
    rule: str
    server: str | None
    protocol: str | None
    # the recorded change (`fix apply`) that resolved it, as report/applied.py matches them
    change: ChangeRecord | None = None
    # when the finding was first seen, and its site for a site finding (report/resolved_seen.py):
    # the OCSF Close line's uid; None when the history no longer holds it
    first_seen_at: datetime | None = None
    site: str | None = None


@dataclass(frozen=True)
class ScopeEntry:
    """One server the run planned to scan, reached or not."""

    name: str
    address: str
    site: str | None
    scan_status: ScopeStatus
    error_kind: ErrorKind | None
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
class TrendPoint:
    run_id: int
    started_at: datetime
    active_by_severity: dict[str, int]


@dataclass(frozen=True)
class RunReport:
    run: RunRow | None  # None for the organisation view (`as_of` is set instead)
    lang: str
    servers: tuple[ServerObservation, ...]  # results of this run, in inventory order
    scope: tuple[ScopeEntry, ...]
    findings: tuple[FindingInfo, ...]
    resolved: tuple[ResolvedInfo, ...]
    changes: tuple[ChangeInfo, ...] = ()
    waivers: tuple[WaiverInfo, ...] = ()
    rules: tuple[RuleInfo, ...] = ()
    trend: tuple[TrendPoint, ...] = ()
    as_of: AsOf | None = None  # set for the organisation view (`report --as-of`)
    # the history's seal chain (scanner/store/seal.py): the run's seal, or for the organisation
    # view the seal of the newest run it draws on (None: not sealed); the signing key's id
    # when the report is signed (`report --sign-key`)
    seal: str | None = None
    key_id: str | None = None
    # (server, protocol) of each service whose start mode was not read where the policy
    # requires it disabled: XS-013 not evaluated there (judge/not_evaluated.py)
    services_unread: tuple[tuple[str, str], ...] = ()
    # the changes `fix apply`/`fix rollback` recorded in the run's window (report/applied.py),
    # oldest first, and the window (after, through; None: open)
    applied_changes: tuple[ChangeRecord, ...] = ()
    applied_window: tuple[datetime | None, datetime | None] = (None, None)

    def services_unread_on(self, server: str) -> tuple[str, ...]:
        """The protocols of `server` for which XS-013 was not evaluated."""
        return tuple(p for name, p in self.services_unread if name.casefold() == server.casefold())

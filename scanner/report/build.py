"""Build the report model of one run from the history store."""

from __future__ import annotations

from dataclasses import replace

from scanner.judge.catalog import Catalog, load_catalog
from scanner.judge.not_evaluated import services_not_evaluated
from scanner.judge.policy import Policy
from scanner.parse.observe import ServerObservation, failed
from scanner.report.applied import applied_bounds, applied_context
from scanner.report.context import CHANGE_WINDOW_RUNS, TREND_RUNS, kept_bounds, kept_first_seen, run_context
from scanner.report.findings import finding_info, waiver_infos
from scanner.report.model import (
    RunReport,
    ScopeEntry,
)
from scanner.report.resolved_seen import resolved_first_seen
from scanner.store.repo import Store
from scanner.util.timefmt import utc_day

__all__ = ["CHANGE_WINDOW_RUNS", "TREND_RUNS", "build_report"]


def _policy_of_run(policy_text: str | None) -> Policy:
    """The policy as it was used by the run (stored with it), so a past report regenerates exactly."""
    if policy_text is None:
        return Policy.default()
    return Policy.from_text(policy_text, source="<policy stored with the run>")


def build_report(store: Store, run_id: int, *, lang: str = "en", catalog: Catalog | None = None) -> RunReport:
    """Everything the reports of run `run_id` show, in `lang` (en | de)."""
    catalog = catalog or load_catalog()
    row = store.run(run_id)
    policy = _policy_of_run(row.policy_text)
    planned = store.planned_servers(run_id)
    observed = {obs.name.casefold(): obs for obs in store.server_observations(run_id)}
    servers: list[ServerObservation] = []
    scope: list[ScopeEntry] = []
    for entry in planned:
        obs = observed.get(entry.name.casefold())
        if obs is None:  # planned but never reached: the run was aborted before it
            obs = failed(entry.name, entry.address, entry.inventory_site, "not-scanned",
                         "the run ended before this server was scanned", row.started_at,
                         row.finished_at or row.started_at)
        servers.append(obs)
        scope.append(ScopeEntry(name=entry.name, address=entry.address, site=obs.site,
                                scan_status=obs.scan_status if entry.name.casefold() in observed else "not-scanned",
                                error_kind=obs.error_kind, error=obs.error))
    finding_rows = store.findings(run_id)
    findings = tuple(finding_info(f, catalog, lang) for f in finding_rows)
    changes, trend = run_context(store, run_id)  # as kept if prune removed runs it reads
    resolved_keys = store.resolved(run_id)
    bounds = kept_bounds(store, run_id) or applied_bounds(store, row, servers, resolved_keys)
    window, applied, resolved = applied_context(store, row, servers, resolved_keys, bounds)
    seen = kept_first_seen(store, run_id)
    if seen is None or len(seen) != len(resolved):
        seen = resolved_first_seen(store, run_id, planned, servers, resolved_keys)
    resolved = tuple(r if s is None else replace(r, site=s[0], first_seen_at=s[1])
                     for r, s in zip(resolved, seen, strict=True))
    return RunReport(
        run=row,
        lang=lang,
        servers=tuple(servers),
        scope=tuple(scope),
        findings=findings,
        resolved=resolved,
        changes=changes,
        waivers=tuple(waiver_infos(policy, finding_rows, utc_day(row.started_at))),
        rules=tuple(catalog.rule_infos(lang, policy.severity)),
        trend=trend,
        seal=store.run_seal(run_id),
        services_unread=tuple((s.name, p) for s in servers for p in services_not_evaluated(policy, s)),
        applied_changes=applied,
        applied_window=window,
    )

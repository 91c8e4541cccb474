"""Retention (`cas-audit prune --before DATE [--apply]`): which runs go, which stay and why.

Runs that started before the date are removed, except those something still needs:
- a run still running (its scanner is at work);
- a run that holds a server's latest successful observation, or the last evaluation of a
  server or site (the organisation view as of now shows them, and the next scan of that
  server compares with that observation and continues those findings' lifecycle).
What a kept run refers to stays with it: `Store.delete_runs` removes only documents and
config files that no remaining scan or finding refers to.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from scanner.store.models import RunRow
from scanner.store.repo import Store


@dataclass(frozen=True)
class PruneResult:
    before: datetime
    applied: bool
    removed: list[RunRow]
    kept: list[tuple[RunRow, str]]  # runs before the date that stay, with the reason
    counts: dict[str, int] = field(default_factory=dict)  # rows removed (or that would be), by kind


def _names(names: list[str]) -> str:
    shown = ", ".join(sorted(names, key=str.casefold)[:5])
    return shown + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


def needed_runs(store: Store, now: datetime) -> dict[int, str]:
    """Runs the organisation view as of `now` draws on, with why (for the message)."""
    latest = store.latest_observations(now)
    observed: dict[int, list[str]] = defaultdict(list)
    sites: dict[str, list[str]] = {}
    for run_id, obs in latest:
        observed[run_id].append(obs.name)
        if obs.site:
            sites.setdefault(obs.site.casefold(), []).append(obs.name)
    evaluated: dict[int, set[str]] = defaultdict(set)
    for row in store.last_evaluations(None, [obs.name for _r, obs in latest], sites, finished_by=now):
        if row.run_id is not None:
            evaluated[row.run_id].add(row.server_name or f"site {row.site}")
    reasons: dict[int, str] = {}
    for run_id in sorted(set(observed) | set(evaluated)):
        parts = []
        if observed.get(run_id):
            parts.append(f"latest observation of {_names(observed[run_id])}")
        if evaluated.get(run_id):
            parts.append(f"current findings of {_names(sorted(evaluated[run_id]))}")
        reasons[run_id] = "; ".join(parts)
    return reasons


def prune(store: Store, before: datetime, *, apply: bool, now: datetime) -> PruneResult:
    """Remove (with `apply`) or list the runs that started before `before`."""
    needed = needed_runs(store, now)
    removed: list[RunRow] = []
    kept: list[tuple[RunRow, str]] = []
    for run in sorted(store.runs(), key=lambda r: r.id):
        if run.started_at >= before:
            continue
        if run.status == "running":
            kept.append((run, "still running"))
        elif run.id in needed:
            kept.append((run, needed[run.id]))
        else:
            removed.append(run)
    counts = store.delete_runs([r.id for r in removed], apply=apply)
    return PruneResult(before=before, applied=apply, removed=removed, kept=kept, counts=counts)

"""What a run's report reads from other runs (its context): the Changes sheet (changes
detected in the last CHANGE_WINDOW_RUNS runs, each server's first one compared with its
previous successful scan), the trend (active findings of the last TREND_RUNS runs) and the
bounds of the recorded changes its reports show (report/applied.py).

`prune` removes old runs; a kept run whose context read one of them keeps its context as
it was (`evidence_to_keep`, stored by the store in `run_contexts`), and `run_context`
reads that instead, so the run's reports regenerate byte for byte after any prune.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from scanner.facts import is_active
from scanner.report.applied import AppliedBounds, applied_bounds
from scanner.report.history import changes
from scanner.report.model import ChangeInfo, TrendPoint
from scanner.report.resolved_seen import Seen, resolved_first_seen
from scanner.store.models import RunRow
from scanner.store.repo import Store
from scanner.util.timefmt import exact_utc

TREND_RUNS = 10
CHANGE_WINDOW_RUNS = 10


def trend(store: Store, up_to_run: int, runs: Sequence[RunRow] | None = None) -> tuple[TrendPoint, ...]:
    """Active findings by severity of the last TREND_RUNS runs up to `up_to_run` that were not aborted."""
    points = []
    for run in _trend_runs(runs if runs is not None else store.runs(), up_to_run):
        counts = Counter(f.severity for f in store.findings(run.id) if is_active(f.state))
        points.append(TrendPoint(run_id=run.id, started_at=run.started_at, active_by_severity=dict(counts)))
    return tuple(sorted(points, key=lambda p: p.run_id))


def _trend_runs(runs: Sequence[RunRow], up_to_run: int) -> list[RunRow]:
    """`runs` newest first."""
    return [r for r in runs if r.id <= up_to_run and r.status != "aborted"][:TREND_RUNS]


def _window(runs: Sequence[RunRow], up_to_run: int) -> list[int]:
    """The runs whose changes the Changes sheet shows (as `history.changes` chooses them)."""
    return [r.id for r in runs if r.id <= up_to_run][:CHANGE_WINDOW_RUNS]


def live_context(store: Store, run_id: int) -> tuple[tuple[ChangeInfo, ...], tuple[TrendPoint, ...]]:
    """The context as the history holds it now."""
    return tuple(changes(store, run_id, CHANGE_WINDOW_RUNS)), trend(store, run_id)


def run_context(store: Store, run_id: int) -> tuple[tuple[ChangeInfo, ...], tuple[TrendPoint, ...]]:
    """The Changes and trend of run `run_id`'s report: as kept when prune removed runs they
    read, else as the history holds them."""
    kept = store.run_context(run_id)
    return decode(kept) if kept is not None else live_context(store, run_id)


def _when(value: datetime) -> str:
    return exact_utc(value)


def encode(context: tuple[tuple[ChangeInfo, ...], tuple[TrendPoint, ...]], bounds: AppliedBounds | None = None,
           seen: Sequence[Seen] | None = None) -> str:
    """The JSON text of a context (`decode` gives it back equal, datetimes included), with
    the bounds of the run's recorded changes (`kept_bounds` gives them back) and when the
    findings it resolved were first seen (`kept_first_seen`)."""
    found, points = context
    data: dict[str, Any] = {
        "changes": [{**asdict(c), "before_at": _when(c.before_at), "after_at": _when(c.after_at)} for c in found],
        "trend": [{"run_id": p.run_id, "started_at": _when(p.started_at),
                   "active_by_severity": p.active_by_severity} for p in points],
    }
    if bounds is not None:
        data["applied"] = {"after": bounds.after and _when(bounds.after),
                           "since": [[server, protocol, moment and _when(moment)]
                                     for (server, protocol), moment in sorted(bounds.since.items())]}
    if seen is not None:
        data["first_seen"] = [None if s is None else [s[0], _when(s[1])] for s in seen]
    return json.dumps(data, ensure_ascii=False)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def kept_bounds(store: Store, run_id: int) -> AppliedBounds | None:
    """The bounds of run `run_id`'s recorded changes as kept when prune removed runs they
    read (None: not kept; read them live with report.applied.applied_bounds)."""
    kept = store.run_context(run_id)
    applied = json.loads(kept).get("applied") if kept is not None else None
    if applied is None:
        return None
    return AppliedBounds(_moment(applied["after"]),
                         {(server, protocol): _moment(moment) for server, protocol, moment in applied["since"]})


def kept_first_seen(store: Store, run_id: int) -> list[Seen] | None:
    """When the findings run `run_id` resolved were first seen, as kept when prune removed
    runs (None: not kept, read them live with report.resolved_seen)."""
    kept = store.run_context(run_id)
    seen = json.loads(kept).get("first_seen") if kept is not None else None
    if seen is None:
        return None
    return [None if s is None else (s[0], datetime.fromisoformat(s[1])) for s in seen]


def live_first_seen(store: Store, run_id: int) -> list[Seen]:
    return resolved_first_seen(store, run_id, store.planned_servers(run_id), store.server_observations(run_id),
                               store.resolved(run_id))


def live_bounds(store: Store, run_id: int) -> AppliedBounds:
    return applied_bounds(store, store.run(run_id), store.server_observations(run_id), store.resolved(run_id))


def decode(text: str) -> tuple[tuple[ChangeInfo, ...], tuple[TrendPoint, ...]]:
    data: dict[str, Any] = json.loads(text)
    found = tuple(ChangeInfo(**{**c, "before_at": datetime.fromisoformat(c["before_at"]),
                                "after_at": datetime.fromisoformat(c["after_at"])}) for c in data["changes"])
    points = tuple(TrendPoint(run_id=p["run_id"], started_at=datetime.fromisoformat(p["started_at"]),
                              active_by_severity=dict(p["active_by_severity"])) for p in data["trend"])
    return found, points


def evidence_to_keep(store: Store, removed_ids: Sequence[int]) -> dict[int, str]:
    """For every run that stays and whose context reads a run in `removed_ids`: its context
    now (JSON), to keep. A run's context reads the runs of its Changes window and its trend,
    and each server's previous successful scan before that window (for a server scanned
    successfully in it); runs that already keep their context are left as they are."""
    removed = set(removed_ids)
    if not removed:
        return {}
    runs = store.runs()  # newest first
    kept_already = store.runs_with_context()
    # runs holding a successful scan whose previous successful scan of that server goes:
    # a window that holds such a scan compares it with the removed one
    after_removed: set[int] = set()
    for run_ids in store.successful_scan_runs().values():
        for previous, current in zip(run_ids, run_ids[1:], strict=False):
            if previous in removed and current not in removed:
                after_removed.add(current)
    marks = sorted(after_removed)
    keep: dict[int, str] = {}
    for run in runs:
        if run.id in removed or run.id in kept_already or run.id < min(removed):
            continue
        window = _window(runs, run.id)
        reads = set(window) | {r.id for r in _trend_runs(runs, run.id)}
        index = bisect_left(marks, min(window))
        if reads & removed or (index < len(marks) and marks[index] <= run.id):
            keep[run.id] = encode(live_context(store, run.id), live_bounds(store, run.id),
                                 live_first_seen(store, run.id))
    return keep

"""Evaluate a stored run: read its inputs from the store, judge them, rank for `--fail-on`.

`evaluate_run` gathers what `scanner.judge.lifecycle.evaluate` needs (planned scope, this
run's results, each server's last successful observation, each server's and site's
findings from its last evaluation) through `Store` queries and returns the `Evaluation`
the caller saves.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from scanner.facts import SEVERITIES, is_active, severity_rank
from scanner.judge.catalog import Catalog
from scanner.judge.checks import CheckInput, Previous, server_site
from scanner.judge.explained import between_scans, writing_change
from scanner.judge.lifecycle import Evaluation, evaluate
from scanner.judge.policy import Policy
from scanner.parse.observe import ServerObservation
from scanner.store.changes import ChangeRecord, changes_between
from scanner.store.repo import Store

__all__ = ["Evaluation", "active_at_or_above", "evaluate_run", "gather_inputs", "planned_sites"]


class _Rated(Protocol):
    @property
    def severity(self) -> str: ...

    @property
    def state(self) -> str: ...


def active_at_or_above(findings: Iterable[_Rated], severity: str) -> list[Any]:
    """Findings that are not waived and at least as severe as `severity` (for `--fail-on`)."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}")
    floor = severity_rank(severity)
    return [f for f in findings if is_active(f.state) and severity_rank(f.severity) >= floor]


def gather_inputs(store: Store, run_id: int, policy: Policy) -> tuple[CheckInput, datetime]:
    """The check inputs of a run, and the run's start time."""
    run = store.run(run_id)
    planned = store.planned_servers(run_id)
    current = {obs.name.casefold(): obs for obs in store.server_observations(run_id)}
    scanned = [p.name for p in planned if (obs := current.get(p.name.casefold())) is not None and obs.scan_status == "ok"]
    protocols = sorted({protocol for obs in current.values() if obs.scan_status == "ok" for protocol in obs.protocols})
    # one query per protocol for every server, never the whole history
    found = store.previous_successful_many(run_id, scanned, protocols)
    previous: dict[tuple[str, str], Previous] = {}
    for name in scanned:
        for protocol in current[name.casefold()].protocols:
            if (hit := found.get((name.casefold(), protocol))) is not None:
                before_run, before = hit
                previous[(name.casefold(), protocol)] = Previous(before_run, before, before.protocols[protocol])
    inp = CheckInput(
        run_id=run_id, run_at=run.started_at, planned=planned, current=current, previous=previous, policy=policy,
        explained=_explained(store, current, previous),
    )
    return inp, run.started_at


def _explained(store: Store, current: dict[str, ServerObservation], previous: dict[tuple[str, str], Previous]
               ) -> dict[tuple[str, str], ChangeRecord]:
    """Per (server, protocol) whose value changed since its previous successful scan: the
    recorded change that wrote the file this scan found, if one did."""
    changed = {key: prev for key, prev in previous.items()
               if prev.protocol.allow_cross_site != current[key[0]].protocols[key[1]].allow_cross_site}
    if not changed:
        return {}
    recorded = changes_between(store, min(prev.server.started_at for prev in changed.values()), None)
    found = {}
    for (name, protocol), prev in changed.items():
        obs = current[name]
        candidates = between_scans(recorded, obs.name, protocol, prev.server.started_at, obs.finished_at)
        change = writing_change(obs.protocols[protocol].config_sha256, candidates)
        if change is not None:
            found[(name, protocol)] = change
    return found


def planned_sites(inp: CheckInput) -> dict[str, list[str]]:
    """The sites of this run's planned servers (as the lifecycle judges them), with their servers."""
    sites: dict[str, list[str]] = {}
    for p in inp.planned:
        site = server_site(p, inp.observation(p.name))
        if site:
            sites.setdefault(site.casefold(), []).append(p.name)
    return sites


def evaluate_run(
    store: Store,
    run_id: int,
    policy: Policy,
    catalog: Catalog,
    *,
    lang: str = "en",
    now: datetime | None = None,
) -> Evaluation:
    """Evaluate a stored run against its history; the caller saves the result.

    Each planned server's lifecycle continues from its own last evaluation (and each
    site's from the last run that judged it), whichever run that was: see
    `Store.last_evaluations`.
    """
    inp, started_at = gather_inputs(store, run_id, policy)
    prev_id = store.previous_finished_run(run_id)
    previous = store.last_evaluations(run_id, [p.name for p in inp.planned], planned_sites(inp))
    return evaluate(
        inp, policy, catalog, run_started_at=started_at, previous_run_id=prev_id,
        previous_findings=previous, lang=lang, now=now,
    )

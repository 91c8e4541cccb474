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

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from scanner.parse.observe import ServerObservation
from scanner.store.base import StoreBase, chunks
from scanner.store.db import store_errors
from scanner.store.documents import reference_sha256
from scanner.store.findings import FindingRow
from scanner.store.models import (
    ConfigBlob,
    Document,
    Finding,
    Observation,
    RefusedLogon,
    ResolvedFinding,
    RunRow,
    RunServer,
    ScanRun,
    Server,
    ServerScan,
)


class History(Protocol):
    """What retention reads and deletes (the `Store`)."""

    def runs(self, limit: int | None = None) -> list[RunRow]: ...

    def latest_observations(self, at_or_before: datetime) -> list[tuple[int, ServerObservation]]: ...

    def last_evaluations(self, before_run_id: int | None, server_names: Sequence[str],
                         sites: Mapping[str, Sequence[str]], *,
                         finished_by: datetime | None = None) -> list[FindingRow]: ...

    def delete_runs(self, run_ids: Sequence[int], *, apply: bool) -> dict[str, int]: ...


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


def needed_runs(store: History, now: datetime) -> dict[int, str]:
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


def prune(store: History, before: datetime, *, apply: bool, now: datetime) -> PruneResult:
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


class Retention(StoreBase):
    """Deleting old runs."""

    def delete_runs(self, run_ids: Sequence[int], *, apply: bool) -> dict[str, int]:
        """Delete runs with everything only they refer to; returns what went, by table.

        Cascades to the runs' server scans, observations, refused logons, findings and
        resolved findings; then removes the documents and config files no remaining row
        refers to. Without `apply` the same deletion runs in a transaction that is rolled
        back, so the counts are exact and nothing changes.
        """
        counts: dict[str, int] = {}
        with store_errors(self._engine.url, "remove old scan runs"):
            with Session(self._engine) as session:
                session.begin()
                try:
                    counts = _delete_runs(session, sorted(set(run_ids)))
                    if apply:
                        session.commit()
                finally:
                    if session.in_transaction():
                        session.rollback()
        return counts


def _count_where(session: Session, model: Any, condition: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(condition)) or 0)


def _delete_runs(session: Session, run_ids: Sequence[int]) -> dict[str, int]:
    """The deletion of `delete_runs`, inside the caller's transaction."""
    counts = dict.fromkeys(
        ("runs", "server_scans", "observations", "findings", "documents", "config_files"), 0
    )
    if session.get_bind().dialect.name == "postgresql":
        # scanners keep writing meanwhile: no new reference to a document while orphans are found
        session.execute(text("LOCK TABLE documents IN SHARE ROW EXCLUSIVE MODE"))
    for chunk in chunks(run_ids):
        scans = select(ServerScan.id).where(ServerScan.run_id.in_(chunk))
        counts["runs"] += _count_where(session, ScanRun, ScanRun.id.in_(chunk))
        counts["server_scans"] += _count_where(session, ServerScan, ServerScan.run_id.in_(chunk))
        counts["observations"] += _count_where(session, Observation, Observation.server_scan_id.in_(scans))
        counts["findings"] += _count_where(session, Finding, Finding.run_id.in_(chunk))
        session.execute(update(Server).where(Server.first_seen_run_id.in_(chunk)).values(first_seen_run_id=None))
        observations = select(Observation.id).where(Observation.server_scan_id.in_(scans))
        session.execute(delete(RefusedLogon).where(RefusedLogon.observation_id.in_(observations)))
        session.execute(delete(Observation).where(Observation.server_scan_id.in_(scans)))
        session.execute(delete(ServerScan).where(ServerScan.run_id.in_(chunk)))
        session.execute(delete(Finding).where(Finding.run_id.in_(chunk)))
        session.execute(delete(ResolvedFinding).where(ResolvedFinding.run_id.in_(chunk)))
        session.execute(delete(RunServer).where(RunServer.run_id.in_(chunk)))
        session.execute(delete(ScanRun).where(ScanRun.id.in_(chunk)))
    if not run_ids:
        return counts
    referenced: set[int] = set()
    for column in (ServerScan.state_id, Observation.state_id, Finding.body_id):
        referenced.update(session.scalars(select(column).distinct()))
    orphans = [doc_id for doc_id in session.scalars(select(Document.id)) if doc_id not in referenced]
    for doc_chunk in chunks(orphans):
        session.execute(delete(Document).where(Document.id.in_(doc_chunk)))
    counts["documents"] = len(orphans)
    files = {
        sha for body in session.scalars(select(Document.body).where(Document.kind == "protocol"))
        for state in (json.loads(body),)
        for sha in (state.get("config_sha256"), reference_sha256(state)) if sha
    }
    unused = [sha for sha in session.scalars(select(ConfigBlob.sha256)) if sha not in files]
    for sha_chunk in chunks(unused):
        session.execute(delete(ConfigBlob).where(ConfigBlob.sha256.in_(sha_chunk)))
    counts["config_files"] = len(unused)
    return counts

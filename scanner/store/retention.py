"""Retention (`cas-audit prune --before DATE [--apply]`): which runs go, which stay and why.

Runs that started before the date are removed, except those something still needs:
- a run still running (its scanner is at work);
- a run that holds a server's latest successful observation, or the last evaluation of a
  server or site (the organisation view as of now shows them, and the next scan of that
  server compares with that observation and continues those findings' lifecycle).
What a kept run refers to stays with it: `Store.delete_runs` removes only documents and
config files that no remaining scan or finding refers to. What a kept run's report reads
from removed runs (its Changes sheet and trend) is kept as that run's context
(`run_contexts`, written by the caller's `keep_evidence`), so its reports regenerate
byte for byte. The removed runs' links of the seal chain stay, and a checkpoint link
names them with their digests (seal.py), so `cas-audit verify` still checks the rest.

Prune and scans exclude each other. `prune --apply` removes nothing while a run is
`running`: it waits up to `wait_s` for the scans to finish (saying so), then refuses
(HistoryBusyError, exit 4). Its deletion runs in one transaction that holds the retention
lock exclusively (SQLite: the write lock, BEGIN IMMEDIATE; PostgreSQL: an advisory lock
every write transaction of the store takes shared, base.py), and checks again under it
that no run is running and none began since the plan.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from scanner.errors import StoreError
from scanner.parse.observe import ServerObservation
from scanner.store.base import StoreBase, chunks
from scanner.store.db import PG_RETENTION_LOCK_KEY, store_errors
from scanner.store.documents import reference_sha256
from scanner.store.findings import FindingRow
from scanner.store.models import (
    ConfigBlob,
    Document,
    Finding,
    Observation,
    RefusedLogon,
    ResolvedFinding,
    RunContext,
    RunRow,
    RunServer,
    ScanRun,
    Server,
    ServerScan,
)
from scanner.store.seal import checkpoint
from scanner.util.timefmt import iso_utc

POLL_S = 2.0  # how often a waiting prune looks whether the scans have finished


class HistoryBusyError(StoreError):
    """`prune --apply` found a scan still running after its wait (exit 4: nothing removed)."""


class _HistoryMoved(Exception):
    """A run began between the plan and the deletion: plan again."""


class History(Protocol):
    """What retention reads and deletes (the `Store`)."""

    def runs(self, limit: int | None = None) -> list[RunRow]: ...

    def latest_observations(self, at_or_before: datetime) -> list[tuple[int, ServerObservation]]: ...

    def last_evaluations(self, before_run_id: int | None, server_names: Sequence[str],
                         sites: Mapping[str, Sequence[str]], *,
                         finished_by: datetime | None = None) -> list[FindingRow]: ...

    def delete_runs(self, run_ids: Sequence[int], *, apply: bool, contexts: Mapping[int, str] | None = None,
                    newest_run: int | None = None, before: datetime | None = None) -> dict[str, int]: ...

    def abort_dead_runs(self, now: datetime | None = None) -> list[int]: ...


@dataclass(frozen=True)
class PruneResult:
    before: datetime
    applied: bool
    removed: list[RunRow]
    kept: list[tuple[RunRow, str]]  # runs before the date that stay, with the reason
    counts: dict[str, int] = field(default_factory=dict)  # rows removed (or that would be), by kind
    newest_run: int | None = None  # the newest run when the plan was made


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


def plan(store: History, before: datetime, *, now: datetime) -> PruneResult:
    """Which runs that started before `before` would go, and which stay and why."""
    needed = needed_runs(store, now)
    removed: list[RunRow] = []
    kept: list[tuple[RunRow, str]] = []
    runs = store.runs()
    for run in sorted(runs, key=lambda r: r.id):
        if run.started_at >= before:
            continue
        if run.status == "running":
            kept.append((run, "still running"))
        elif run.id in needed:
            kept.append((run, needed[run.id]))
        else:
            removed.append(run)
    return PruneResult(before=before, applied=False, removed=removed, kept=kept,
                       newest_run=max((r.id for r in runs), default=None))


def wait_for_scans(store: History, wait_s: float, on_wait: Callable[[str], None] | None = None) -> None:
    """Return once no run is `running` (runs whose scanner died are recorded aborted on the
    way); after `wait_s` seconds raise HistoryBusyError. `on_wait` hears once what it waits for."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        store.abort_dead_runs()
        running = [r for r in store.runs() if r.status == "running"]
        if not running:
            return
        shown = ", ".join(f"run {r.id} on {r.scanning_host} since {iso_utc(r.started_at)}"
                          for r in sorted(running, key=lambda r: r.id))
        left = deadline - time.monotonic()
        if left <= 0:
            minutes = f"{wait_s / 60:g} minute(s)"
            raise HistoryBusyError(
                f"a scan is still running on this history ({shown}) after waiting {minutes}: nothing was removed",
                hint="run prune again when the scan has finished, or give it longer with --wait MINUTES")
        if not told and on_wait is not None:
            on_wait(f"waiting for the scan(s) running on this history to finish before removing anything: {shown}")
            told = True
        time.sleep(min(POLL_S, left))


def prune(store: History, before: datetime, *, apply: bool, now: datetime, wait_s: float = 0.0,
          on_wait: Callable[[str], None] | None = None,
          keep_evidence: Callable[[Sequence[int]], Mapping[int, str]] | None = None) -> PruneResult:
    """Remove (with `apply`) or list the runs that started before `before`.

    `keep_evidence(removed run ids)` gives the context to keep for every kept run whose
    report reads a removed run (scanner/report/context.py). With `apply` nothing is removed
    while a scan runs (`wait_for_scans`)."""
    while True:
        if apply:
            wait_for_scans(store, wait_s, on_wait)
        result = plan(store, before, now=now)
        removed = [r.id for r in result.removed]
        contexts = dict(keep_evidence(removed)) if keep_evidence is not None and removed else {}
        try:
            counts = store.delete_runs(removed, apply=apply, contexts=contexts, newest_run=result.newest_run,
                                       before=before)
        except _HistoryMoved:
            continue  # a scan began after the plan: wait for it and plan again
        return replace(result, applied=apply, counts=counts)


class Retention(StoreBase):
    """Deleting old runs."""

    def delete_runs(self, run_ids: Sequence[int], *, apply: bool, contexts: Mapping[int, str] | None = None,
                    newest_run: int | None = None, before: datetime | None = None) -> dict[str, int]:
        """Delete runs with everything only they refer to; returns what went, by table.

        Cascades to the runs' server scans, observations, refused logons, findings,
        resolved findings and contexts; then removes the documents and config files no
        remaining row refers to, and stores `contexts` (run id -> what its report read
        from the removed runs). Without `apply` the same deletion runs in a transaction
        that is rolled back, so the counts are exact and nothing changes.

        The transaction holds the retention lock exclusively: no scan writes meanwhile.
        With `apply`, a run `running`, or a run newer than `newest_run` (begun after the
        plan), makes it change nothing and raise _HistoryMoved.
        """
        counts: dict[str, int] = {}
        with store_errors(self._engine.url, "remove old scan runs"), self._engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # The orphans are found under the write lock this transaction holds, so SQLite's
                # check of each removed document against every scan, observation and finding
                # (columns without an index) is not needed: it took 11 of 12 s for 553 documents
                # of 36,000 scans. foreign_key_check below checks the result instead. (The
                # pragma only takes effect outside a transaction.)
                conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
            try:
                self._delete_in(conn, run_ids, apply=apply, contexts=contexts, newest_run=newest_run, counts=counts,
                                before=before or self._now(), now=self._now())
            finally:
                if sqlite:
                    conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]
        return counts

    @staticmethod
    def _delete_in(conn: Any, run_ids: Sequence[int], *, apply: bool, contexts: Mapping[int, str] | None,
                   newest_run: int | None, counts: dict[str, int], before: datetime, now: datetime) -> None:
        with Session(bind=conn) as session:
            session.begin()  # SQLite: BEGIN IMMEDIATE, the write lock
            try:
                if conn.dialect.name == "postgresql":
                    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_RETENTION_LOCK_KEY})
                if apply:
                    running = session.scalar(select(func.count()).where(ScanRun.status == "running"))
                    newest = session.scalar(select(func.max(ScanRun.id)))
                    if running or (newest_run is not None and newest != newest_run):
                        raise _HistoryMoved
                if apply and run_ids:  # the removed runs' links stay, named by a checkpoint (seal.py)
                    checkpoint(session, sorted(set(run_ids)), before, now)
                counts.update(_delete_runs(session, sorted(set(run_ids))))
                if contexts:
                    session.execute(delete(RunContext).where(RunContext.run_id.in_(list(contexts))))
                    session.execute(insert(RunContext), [{"run_id": run_id, "body": body}
                                                         for run_id, body in sorted(contexts.items())])
                counts["contexts"] = len(contexts or {})
                if conn.dialect.name == "sqlite" and session.execute(text("PRAGMA foreign_key_check")).first():
                    raise StoreError("removing the runs would leave rows that break a foreign key; "
                                     "nothing was removed")
                if apply:
                    session.commit()
            finally:
                if session.in_transaction():
                    session.rollback()

    def run_context(self, run_id: int) -> str | None:
        """What run `run_id`'s report read from runs prune removed (None: they all exist)."""
        with self._read(f"read the kept context of run {run_id}") as session:
            return session.scalar(select(RunContext.body).where(RunContext.run_id == run_id))

    def runs_with_context(self) -> set[int]:
        """The runs that have a kept context."""
        with self._read("list the runs with a kept context") as session:
            return set(session.scalars(select(RunContext.run_id)))

    def successful_scan_runs(self) -> dict[int, list[int]]:
        """Per server id, the runs that scanned it successfully, oldest first."""
        found: dict[int, list[int]] = defaultdict(list)
        with self._read("read which runs scanned each server") as session:
            for server_id, run_id in session.execute(
                select(ServerScan.server_id, ServerScan.run_id).where(ServerScan.scan_status == "ok")
                .order_by(ServerScan.server_id, ServerScan.run_id)
            ):
                found[server_id].append(run_id)
        return dict(found)


def _count_where(session: Session, model: Any, condition: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(condition)) or 0)


def _delete_runs(session: Session, run_ids: Sequence[int]) -> dict[str, int]:
    """The deletion of `delete_runs`, inside the caller's transaction."""
    counts = dict.fromkeys(
        ("runs", "server_scans", "observations", "findings", "documents", "config_files"), 0
    )
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
        session.execute(delete(RunContext).where(RunContext.run_id.in_(chunk)))
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

"""Scan runs: their start, heartbeat and end, runs whose scanner died (liveness.py), and
reading runs and their planned scope."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import func, insert, select, update

from scanner.errors import ConfigError
from scanner.facts import FINISHED_STATUSES, RUN_STATUSES, RunStatus
from scanner.store.base import StoreBase, chunks, database_now, heartbeat_clock
from scanner.store.liveness import death_reason
from scanner.store.models import (
    RunRow,
    RunServer,
    ScanRun,
    Server,
    ServerScan,
    run_row,
)
from scanner.store.seal import is_sealed, seal_run


@dataclass(frozen=True)
class PlannedServer:
    """A server in the planned scope of a run, in inventory order."""

    name: str
    address: str
    inventory_site: str | None


class Runs(StoreBase):
    """Writing and reading scan runs."""

    def begin_run(
        self,
        *,
        planned: Sequence[tuple[str, str, str | None]],
        tool_version: str,
        operator: str,
        scanning_host: str,
        inventory_sha256: str,
        policy_text: str | None = None,
        site_filter: str | None = None,
        started_at: datetime | None = None,
        catalog_version: str | None = None,
        policy_sha256: str | None = None,
        organisation: str | None = None,
        owner_pid: int | None = None,
        owner_started: datetime | None = None,
    ) -> int:
        """Record the start of a scan and its planned scope; returns the new run id.

        `planned` holds (name, address, inventory_site) in inventory order. Without
        `policy_sha256`, the hash of `policy_text` (UTF-8) is stored. `owner_pid` and
        `owner_started` name the scanner's process on `scanning_host` (liveness.py); the
        heartbeat starts now, by the database's clock.
        """
        seen: set[str] = set()
        for name, _address, _site in planned:
            if name.casefold() in seen:
                raise ConfigError(f"the inventory names the server {name!r} more than once")
            seen.add(name.casefold())
        if policy_sha256 is None and policy_text is not None:
            policy_sha256 = hashlib.sha256(policy_text.encode("utf-8")).hexdigest()
        with self._write("record the start of a scan run") as session:
            run = ScanRun(
                started_at=started_at or self._now(),
                finished_at=None,
                status="running",
                servers_planned=len(planned),
                servers_scanned=0,
                servers_failed=0,
                tool_version=tool_version,
                catalog_version=catalog_version,
                operator=operator,
                scanning_host=scanning_host,
                inventory_sha256=inventory_sha256,
                policy_sha256=policy_sha256,
                policy_text=policy_text,
                site_filter=site_filter,
                organisation=organisation,
                owner_pid=owner_pid,
                owner_started=owner_started,
                heartbeat_at=heartbeat_clock(session, self._clock),
            )
            session.add(run)
            session.flush()
            ids = self._server_ids(session, (name for name, _a, _s in planned), run.id)
            rows = [
                {
                    "run_id": run.id,
                    "server_id": ids[name.casefold()],
                    "position": position,
                    "address": address,
                    "inventory_site": site,
                }
                for position, (name, address, site) in enumerate(planned)
            ]
            for chunk in chunks(rows):
                session.execute(insert(RunServer), list(chunk))
            run_id = run.id
        self._server_id_cache.update(ids)  # committed
        return run_id

    def heartbeat(self, run_id: int) -> None:
        """Renew the run's sign of life (its scanner is alive)."""
        with self._write(f"renew the heartbeat of run {run_id}") as session:
            session.execute(update(ScanRun).where(ScanRun.id == run_id, ScanRun.status == "running")
                            .values(heartbeat_at=heartbeat_clock(session, self._clock)))

    def finish_run(self, run_id: int, status: RunStatus, finished_at: datetime | None = None, *,
                   reason: str | None = None) -> RunStatus:
        """Close a run with `status` (`reason` says why an aborted run ended); counts scanned
        and failed servers from the stored results. A run another command already recorded
        as aborted (its scanner was presumed dead) stays aborted. Returns the status kept."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self._write(f"finish scan run {run_id}") as session:
            current = self._require_run(session, run_id)
            if current.status == "aborted" and status != "aborted":
                status, reason = "aborted", current.end_reason
            if is_sealed(session, run_id):  # recorded aborted and sealed by another command
                return cast(RunStatus, current.status)
            counts = dict(
                session.execute(
                    select(ServerScan.scan_status, func.count()).where(ServerScan.run_id == run_id).group_by(ServerScan.scan_status)
                ).all()
            )
            session.execute(
                update(ScanRun)
                .where(ScanRun.id == run_id)
                .values(
                    status=status,
                    finished_at=finished_at or self._now(),
                    servers_scanned=counts.get("ok", 0),
                    servers_failed=counts.get("error", 0),
                    end_reason=reason,
                )
            )
            seal_run(session, run_id, self._now())
        return status

    def abort_dead_runs(self, now: datetime | None = None) -> list[int]:
        """Record every `running` run whose scanner is gone as `aborted` (liveness.py);
        return their ids. Its results stored so far are kept and counted. Heartbeats are
        judged by the clock they were written with (`now`, default: the database's)."""
        here = socket.gethostname()
        with self._read("look for scan runs whose scanner died") as session:
            now = now or database_now(session, self._clock)
            running = session.execute(
                select(ScanRun.id, ScanRun.scanning_host, ScanRun.owner_pid, ScanRun.owner_started,
                       ScanRun.heartbeat_at, ScanRun.started_at).where(ScanRun.status == "running")
            ).all()
        dead: list[int] = []
        for run_id, host, pid, started, beat, run_started in running:
            last = beat or run_started
            reason = death_reason(host=host, pid=pid, started=started, heartbeat=last, now=now, here=here)
            if reason is None:
                continue
            with self._write(f"record scan run {run_id} as aborted") as session:
                counts = dict(session.execute(
                    select(ServerScan.scan_status, func.count()).where(ServerScan.run_id == run_id)
                    .group_by(ServerScan.scan_status)).all())
                result = session.execute(
                    update(ScanRun).where(ScanRun.id == run_id, ScanRun.status == "running")
                    .values(status="aborted", finished_at=max(last, run_started), end_reason=reason,
                            servers_scanned=counts.get("ok", 0), servers_failed=counts.get("error", 0))
                )
                if getattr(result, "rowcount", 0):  # another command may have recorded it first
                    seal_run(session, run_id, self._now())
            if getattr(result, "rowcount", 0):
                dead.append(run_id)
        return dead

    def latest_run_id(self, *, complete_only: bool = False, finished_only: bool = False) -> int | None:
        """The newest run (only runs with status complete when `complete_only`; only
        complete or partial runs, never running or aborted ones, when `finished_only`)."""
        query = select(func.max(ScanRun.id))
        if complete_only:
            query = query.where(ScanRun.status == "complete")
        elif finished_only:
            query = query.where(ScanRun.status.in_(FINISHED_STATUSES))
        with self._read("find the latest scan run") as session:
            return session.scalar(query)

    def run(self, run_id: int) -> RunRow:
        """One run; UnknownRunError when there is none with that id."""
        with self._read(f"read scan run {run_id}") as session:
            return run_row(self._require_run(session, run_id))

    def previous_finished_run(self, run_id: int) -> int | None:
        """The newest run before `run_id` that finished (complete or partial) and so saved findings."""
        query = select(func.max(ScanRun.id)).where(ScanRun.id < run_id, ScanRun.status.in_(FINISHED_STATUSES))
        with self._read(f"find the run before run {run_id}") as session:
            return session.scalar(query)

    def runs(self, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first."""
        query = select(ScanRun).order_by(ScanRun.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._read("list the scan runs") as session:
            return [run_row(run) for run in session.scalars(query)]

    def planned_servers(self, run_id: int) -> list[PlannedServer]:
        """The planned scope of a run, in inventory order."""
        with self._read(f"read the servers planned for run {run_id}") as session:
            self._require_run(session, run_id)
            rows = session.execute(
                select(Server.name, RunServer.address, RunServer.inventory_site)
                .join(Server, Server.id == RunServer.server_id)
                .where(RunServer.run_id == run_id)
                .order_by(RunServer.position)
            )
            return [PlannedServer(name, address, site) for name, address, site in rows]

"""Reading and writing the scan history: runs, server results, findings.

Every method runs in its own short transaction and returns plain dataclasses or
`scanner.parse.observe` types, so a `Store` can be shared by the worker threads of a scan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scanner.errors import ConfigError, ExitCode, StoreError
from scanner.parse.observe import (
    RefusedLogonObservation,
    ServerObservation,
)
from scanner.store.db import (
    READ_ONLY_OPTION,
    default_url,
    mask_url,
    open_engine,
    store_errors,
    upgrade_database,
)
from scanner.store.documents import (
    digest as document_key,
)
from scanner.store.documents import (
    dumps,
    finding_document,
    finding_fields,
    protocol_from_state,
    protocol_state,
    server_from_state,
    server_state,
)
from scanner.store.liveness import death_reason
from scanner.store.models import (
    FINISHED_STATUSES,
    RUN_STATUSES,
    ConfigBlob,
    Document,
    Finding,
    LaunchMethod,
    Observation,
    RefusedLogon,
    ResolvedFinding,
    RunRow,
    RunServer,
    ScanRun,
    Server,
    ServerScan,
    run_row,
)

__all__ = [
    "FindingRow",
    "PlannedServer",
    "RunRow",
    "Store",
    "UnknownRunError",
    "default_url",
    "open_store",
    "upgrade_database",
]

log = logging.getLogger(__name__)
_CHUNK = 500
# "The newest scan of this server": ordered like the (server_id, run_id) index, so that the
# planner walks that index for the one server instead of the run_id index backwards
# (PostgreSQL chose the latter before its statistics were collected: 10 s instead of 0.4 s).
_NEWEST_SCAN = (ServerScan.server_id.desc(), ServerScan.run_id.desc())
# What `_rebuild` reads of a server scan (select these, joined to Server for its name).
_SCAN_COLUMNS = (
    ServerScan.id, ServerScan.run_id, ServerScan.server_id, ServerScan.state_id, ServerScan.scan_status,
    ServerScan.started_at, ServerScan.finished_at, ServerScan.error_kind, ServerScan.error_message,
    ServerScan.events_since, Server.name,
)
T = TypeVar("T")


class UnknownRunError(StoreError):
    """The history has no scan run with the id asked for (a usage error)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class PlannedServer:
    """A server in the planned scope of a run, in inventory order."""

    name: str
    address: str
    inventory_site: str | None


@dataclass(frozen=True)
class FindingRow:
    """One finding of a run, as stored in the findings table.

    `server_name` and `protocol` are None for findings about a site or the
    organisation; `evidence` and `waiver` are JSON (datetimes are stored as ISO strings).
    """

    rule: str
    severity: str
    state: str  # new | persisting | waived | waiver-expired
    server_name: str | None
    site: str | None
    protocol: str | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    first_seen_run_id: int | None = None
    first_seen_at: datetime | None = None
    waiver: dict[str, Any] | None = None
    id: int | None = None  # set when read back
    run_id: int | None = None  # set when read back: the run the finding belongs to


def _now() -> datetime:
    return datetime.now(UTC)


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_ignoring_duplicates(session: Session, model: type, rows: list[dict[str, Any]], key: str) -> None:
    """INSERT rows, skipping any that collide with an existing row (safe with concurrent writers)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        dialect_insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        for chunk in _chunks(rows):
            session.execute(dialect_insert(model).values(list(chunk)).on_conflict_do_nothing())
        return
    column = getattr(model, key)
    for row in rows:  # other backends: one savepoint per new row
        if session.scalar(select(column).where(column == row[key])) is not None:
            continue
        try:
            with session.begin_nested():
                session.execute(insert(model).values(**row))
        except IntegrityError:
            pass


class Store:
    """The history database of one installation (one Engine, a session per call)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY_OPTION: True})
        self.url_display: str = mask_url(engine.url)
        # casefolded name -> servers.id of servers known committed (rows are never deleted):
        # record_server then needs no lookup per server (bench/README.md, "CPU per server")
        self._server_id_cache: dict[str, int] = {}

    # -- plumbing -----------------------------------------------------------------

    @contextmanager
    def _write(self, doing: str) -> Iterator[Session]:
        with store_errors(self._engine.url, doing):
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                yield session

    @contextmanager
    def _read(self, doing: str) -> Iterator[Session]:
        with store_errors(self._engine.url, doing):
            with Session(self._reader) as session, session.begin():
                yield session

    def close(self) -> None:
        """Close the database connections."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _server_ids(self, session: Session, names: Iterable[str], run_id: int | None) -> dict[str, int]:
        """Ids of the servers `names` (by casefolded name), creating the missing ones."""
        by_key: dict[str, str] = {}
        for name in names:
            by_key.setdefault(name.casefold(), name)
        # sorted: concurrent transactions then take row locks in one order (no deadlock)
        rows = [{"name": name, "name_key": key, "first_seen_run_id": run_id} for key, name in sorted(by_key.items())]
        _insert_ignoring_duplicates(session, Server, rows, "name_key")
        return self._known_server_ids(session, list(by_key))

    @staticmethod
    def _known_server_ids(session: Session, keys: Sequence[str]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for chunk in _chunks(keys):
            for key, server_id in session.execute(select(Server.name_key, Server.id).where(Server.name_key.in_(chunk))):
                ids[key] = server_id
        return ids

    def _require_run(self, session: Session, run_id: int) -> ScanRun:
        run = session.get(ScanRun, run_id)
        if run is None:
            raise UnknownRunError(f"the history has no scan run {run_id}", hint="`cas-audit history` without --server lists the runs")
        return run

    # -- writing ------------------------------------------------------------------

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
        heartbeat starts now.
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
                started_at=started_at or _now(),
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
                heartbeat_at=_now(),
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
            for chunk in _chunks(rows):
                session.execute(insert(RunServer), list(chunk))
            run_id = run.id
        self._server_id_cache.update(ids)  # committed
        return run_id

    def record_server(self, run_id: int, obs: ServerObservation) -> None:
        """Store one server's result (scan row, observations, config blobs, refused logons) at once."""
        blobs: dict[str, bytes] = {}
        hashes: dict[str, str | None] = {}
        for key, proto in obs.protocols.items():
            digest = None
            if proto.config_bytes is not None:
                digest = hashlib.sha256(proto.config_bytes).hexdigest()
                blobs[digest] = proto.config_bytes
            if proto.config_sha256 is not None and proto.config_sha256.lower() != digest:
                raise ValueError(f"{obs.name} {key}: config_sha256 does not match config_bytes")
            hashes[key] = digest
        docs = [("server", dumps(server_state(obs)))]
        docs += [("protocol", dumps(protocol_state(proto, hashes[key]))) for key, proto in obs.protocols.items()]
        with self._write(f"record the scan of {obs.name}") as session:
            server_id = self._server_id_cache.get(obs.name.casefold())
            if server_id is None:
                server_id = self._server_ids(session, [obs.name], run_id)[obs.name.casefold()]
            now = _now()
            session.execute(update(ScanRun).where(ScanRun.id == run_id, ScanRun.status == "running")
                            .values(heartbeat_at=now))
            _insert_ignoring_duplicates(
                session,
                ConfigBlob,
                [{"sha256": h, "content": b, "size": len(b), "first_seen_at": now} for h, b in sorted(blobs.items())],
                "sha256",
            )
            ids = _document_ids(session, docs)
            scan_id = session.execute(
                insert(ServerScan).returning(ServerScan.id),
                [
                    {
                        "run_id": run_id,
                        "server_id": server_id,
                        "scan_status": obs.scan_status,
                        "error_kind": obs.error_kind,
                        "error_message": obs.error,
                        "started_at": obs.started_at,
                        "finished_at": obs.finished_at,
                        "events_since": obs.events_since,
                        "site": obs.site,
                        "state_id": ids[0],
                    }
                ],
            ).scalar_one()
            for index, proto in enumerate(obs.protocols.values(), start=1):
                observation_id = session.execute(
                    insert(Observation).returning(Observation.id),
                    [{"server_scan_id": scan_id, "protocol": proto.protocol, "state_id": ids[index]}],
                ).scalar_one()
                if proto.refused_logons:
                    session.execute(
                        insert(RefusedLogon),
                        [
                            {"observation_id": observation_id, "at": r.at, "user_name": r.user,
                             "mailbox_site": r.mailbox_site}
                            for r in proto.refused_logons
                        ],
                    )
        self._server_id_cache[obs.name.casefold()] = server_id  # committed

    def heartbeat(self, run_id: int) -> None:
        """Renew the run's sign of life (its scanner is alive)."""
        with self._write(f"renew the heartbeat of run {run_id}") as session:
            session.execute(update(ScanRun).where(ScanRun.id == run_id, ScanRun.status == "running")
                            .values(heartbeat_at=_now()))

    def finish_run(self, run_id: int, status: str, finished_at: datetime | None = None, *,
                   reason: str | None = None) -> str:
        """Close a run with `status` (`reason` says why an aborted run ended); counts scanned
        and failed servers from the stored results. A run another command already recorded
        as aborted (its scanner was presumed dead) stays aborted. Returns the status kept."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self._write(f"finish scan run {run_id}") as session:
            current = self._require_run(session, run_id)
            if current.status == "aborted" and status != "aborted":
                status, reason = "aborted", current.end_reason
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
                    finished_at=finished_at or _now(),
                    servers_scanned=counts.get("ok", 0),
                    servers_failed=counts.get("error", 0),
                    end_reason=reason,
                )
            )
        return status

    def abort_dead_runs(self, now: datetime | None = None) -> list[int]:
        """Record every `running` run whose scanner is gone as `aborted` (liveness.py);
        return their ids. Its results stored so far are kept and counted."""
        now = now or _now()
        here = socket.gethostname()
        with self._read("look for scan runs whose scanner died") as session:
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
                dead.append(run_id)
        return dead

    def save_findings(
        self,
        run_id: int,
        findings: Sequence[FindingRow],
        resolved: Sequence[tuple[str, str | None, str | None]],
    ) -> None:
        """Store the findings and resolved findings of a run, replacing any saved before."""
        with self._write(f"save the findings of run {run_id}") as session:
            self._require_run(session, run_id)
            session.execute(delete(Finding).where(Finding.run_id == run_id))
            session.execute(delete(ResolvedFinding).where(ResolvedFinding.run_id == run_id))
            keys = sorted({f.server_name.casefold() for f in findings if f.server_name})
            ids = self._known_server_ids(session, keys)
            docs = [
                finding_document(
                    rule=f.rule, severity=f.severity, state=f.state, server_name=f.server_name, site=f.site,
                    protocol=f.protocol, message=f.message, evidence=f.evidence,
                    first_seen_run_id=f.first_seen_run_id, first_seen_at=f.first_seen_at, waiver=f.waiver,
                )
                for f in findings
            ]
            body_ids = _document_ids(session, [("finding", body) for body, _extra in docs])
            rows = [
                {
                    "run_id": run_id,
                    "server_id": ids.get(f.server_name.casefold()) if f.server_name else None,
                    "body_id": body_id,
                    "extra": extra,
                }
                for f, body_id, (_body, extra) in zip(findings, body_ids, docs, strict=True)
            ]
            for chunk in _chunks(rows):
                session.execute(insert(Finding), list(chunk))
            resolved_rows = [
                {"run_id": run_id, "rule": rule, "server_name": server, "protocol": protocol}
                for rule, server, protocol in resolved
            ]
            for resolved_chunk in _chunks(resolved_rows):
                session.execute(insert(ResolvedFinding), list(resolved_chunk))

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

    # -- reading ------------------------------------------------------------------

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

    def server_observations(self, run_id: int) -> list[ServerObservation]:
        """Every server result of a run as recorded, in inventory order."""
        with self._read(f"read the results of run {run_id}") as session:
            self._require_run(session, run_id)
            query = (
                select(*_SCAN_COLUMNS)
                .join(Server, Server.id == ServerScan.server_id)
                .outerjoin(RunServer, (RunServer.run_id == ServerScan.run_id) & (RunServer.server_id == ServerScan.server_id))
                .where(ServerScan.run_id == run_id)
                .order_by(RunServer.position.is_(None), RunServer.position, Server.name_key)
            )
            return [obs for _run, obs in _rebuild(session, session.execute(query).all())]

    def previous_successful(
        self, server_name: str, protocol: str, before_run_id: int
    ) -> tuple[int, ServerObservation] | None:
        """The newest successful scan of the server in a run before `before_run_id` that observed
        `protocol`, with that run's id (None when there is none)."""
        return self.previous_successful_many(before_run_id, [server_name], [protocol]).get(
            (server_name.casefold(), protocol)
        )

    def previous_successful_many(
        self, run_id: int, server_names: Sequence[str], protocols: Sequence[str]
    ) -> dict[tuple[str, str], tuple[int, ServerObservation]]:
        """For each server and protocol: its newest successful scan in a run before `run_id`
        that observed the protocol, with that run's id; keyed by (casefolded name, protocol).

        One indexed lookup per server inside one query (index server_id, run_id), so the
        cost follows the number of servers, not the length of the history.
        """
        found: dict[tuple[str, str], tuple[int, ServerObservation]] = {}
        with self._read(f"read the previous scans for run {run_id}") as session:
            ids = self._known_server_ids(session, sorted({n.casefold() for n in server_names}))
            key_of = {server_id: key for key, server_id in ids.items()}
            scan_for: dict[int, list[tuple[str, str]]] = defaultdict(list)

            def newest(protocol: str | None) -> Any:
                query = select(ServerScan.id).where(
                    ServerScan.server_id == Server.id, ServerScan.scan_status == "ok", ServerScan.run_id < run_id
                )
                if protocol is not None:
                    query = query.join(Observation, Observation.server_scan_id == ServerScan.id).where(
                        Observation.protocol == protocol
                    )
                return query.order_by(*_NEWEST_SCAN).limit(1).correlate(Server).scalar_subquery()

            # Nearly always the newest successful scan observed every protocol: one step down
            # the (server, run) index per server; the join per protocol only for the rest.
            newest_scan: dict[int, int] = {}
            for chunk in _chunks(sorted(ids.values())):
                for server_id, scan_id in session.execute(select(Server.id, newest(None)).where(Server.id.in_(chunk))):
                    if scan_id is not None:
                        newest_scan[server_id] = scan_id
            observed: set[tuple[int, str]] = set()
            for chunk in _chunks(sorted(newest_scan.values())):
                observed.update(
                    (scan_id, protocol)
                    for scan_id, protocol in session.execute(
                        select(Observation.server_scan_id, Observation.protocol).where(
                            Observation.server_scan_id.in_(chunk)
                        )
                    )
                )
            missing: dict[str, list[int]] = defaultdict(list)
            for server_id, scan_id in newest_scan.items():
                for protocol in protocols:
                    if (scan_id, protocol) in observed:
                        scan_for[scan_id].append((key_of[server_id], protocol))
                    else:
                        missing[protocol].append(server_id)
            for protocol, server_ids in missing.items():
                for chunk in _chunks(sorted(server_ids)):
                    for server_id, scan_id in session.execute(
                        select(Server.id, newest(protocol)).where(Server.id.in_(chunk))
                    ):
                        if scan_id is not None:
                            scan_for[scan_id].append((key_of[server_id], protocol))
            for chunk in _chunks(sorted(scan_for)):
                query = (
                    select(*_SCAN_COLUMNS)
                    .join(Server, Server.id == ServerScan.server_id)
                    .where(ServerScan.id.in_(chunk))
                )
                scans = session.execute(query).all()
                for scan, rebuilt in zip(scans, _rebuild(session, scans), strict=True):
                    for key in scan_for[scan.id]:
                        found[key] = rebuilt
        return found

    def last_evaluations(
        self,
        before_run_id: int | None,
        server_names: Sequence[str],
        sites: Mapping[str, Sequence[str]],
        *,
        finished_by: datetime | None = None,
    ) -> list[FindingRow]:
        """The findings each server had when it was last evaluated before `before_run_id`
        (None: any run) by a run that finished at or before `finished_by` (None: any time).

        For every server: the findings saved for it by the newest finished run (complete or
        partial) before `before_run_id` that had it in its planned scope, whatever else that
        run scanned. For every site (casefolded name -> the names of its servers now): the
        site-level findings of the newest such run of any of those servers. A run of
        another site therefore never hides a server's or a site's last findings. Each row
        carries the `run_id` it was saved with.
        """
        conditions = [RunServer.server_id == Server.id, ScanRun.status.in_(FINISHED_STATUSES)]
        if before_run_id is not None:
            conditions.append(RunServer.run_id < before_run_id)
        if finished_by is not None:
            conditions.append(ScanRun.finished_at <= finished_by)
        with self._read("read the findings of the servers' last evaluations") as session:
            ids = self._known_server_ids(session, sorted({n.casefold() for n in server_names}))
            last_run: dict[int, int] = {}
            for chunk in _chunks(sorted(ids.values())):
                latest = (
                    select(RunServer.run_id)
                    .join(ScanRun, ScanRun.id == RunServer.run_id)
                    .where(*conditions)
                    .order_by(RunServer.server_id.desc(), RunServer.run_id.desc())  # index order, see _NEWEST_SCAN
                    .limit(1)
                    .correlate(Server)
                    .scalar_subquery()
                )
                for server_id, run in session.execute(select(Server.id, latest).where(Server.id.in_(chunk))):
                    if run is not None:
                        last_run[server_id] = run
            by_run: dict[int, list[int]] = defaultdict(list)
            for server_id, run in last_run.items():
                by_run[run].append(server_id)
            site_run: dict[str, int] = {}
            for site, names in sites.items():
                runs = [last_run[ids[n.casefold()]] for n in names if ids.get(n.casefold()) in last_run]
                if runs:
                    site_run[site.casefold()] = max(runs)
            rows: list[FindingRow] = []
            columns = (Finding.run_id, Finding.id, Document.body, Finding.extra)
            for run, server_ids in sorted(by_run.items()):
                for chunk in _chunks(sorted(server_ids)):
                    query = (
                        select(*columns)
                        .join(Document, Document.id == Finding.body_id)
                        .where(Finding.run_id == run, Finding.server_id.in_(chunk))
                        .order_by(Finding.id)
                    )
                    rows += [
                        FindingRow(**finding_fields(body, extra), id=fid, run_id=rid) for rid, fid, body, extra in session.execute(query)
                    ]
            for run in sorted(set(site_run.values())):
                query = (
                    select(*columns)
                    .join(Document, Document.id == Finding.body_id)
                    .where(Finding.run_id == run, Finding.server_id.is_(None))
                    .order_by(Finding.id)
                )
                for rid, fid, body, extra in session.execute(query):
                    row = FindingRow(**finding_fields(body, extra), id=fid, run_id=rid)
                    if site_run.get((row.site or "").casefold()) == rid:
                        rows.append(row)
            return rows

    def successful_scans_window(
        self, first_run_id: int, up_to_run_id: int
    ) -> dict[str, list[tuple[int, ServerObservation]]]:
        """Successful scans in runs `first_run_id`..`up_to_run_id`, per casefolded server name
        and oldest first, each server's list preceded by its newest successful scan before the
        window (the one its first scan in the window compares with). Reads the window and one
        indexed lookup per server, not the servers' whole history."""
        result: dict[str, list[tuple[int, ServerObservation]]] = defaultdict(list)
        with self._read(f"read the scans of runs {first_run_id} to {up_to_run_id}") as session:
            in_window = session.execute(
                select(*_SCAN_COLUMNS)
                .join(Server, Server.id == ServerScan.server_id)
                .where(ServerScan.run_id >= first_run_id, ServerScan.run_id <= up_to_run_id,
                       ServerScan.scan_status == "ok")
                .order_by(ServerScan.run_id)
            ).all()
            server_ids = sorted({scan.server_id for scan in in_window})
            before: list[int] = []
            for chunk in _chunks(server_ids):
                latest = (
                    select(ServerScan.id)
                    .where(ServerScan.server_id == Server.id, ServerScan.scan_status == "ok",
                           ServerScan.run_id < first_run_id)
                    .order_by(*_NEWEST_SCAN)
                    .limit(1)
                    .correlate(Server)
                    .scalar_subquery()
                )
                before += [scan_id for (scan_id,) in session.execute(select(latest).where(Server.id.in_(chunk)))
                           if scan_id is not None]
            earlier: list[Any] = []
            for chunk in _chunks(sorted(before)):
                earlier += session.execute(
                    select(*_SCAN_COLUMNS).join(Server, Server.id == ServerScan.server_id)
                    .where(ServerScan.id.in_(chunk))
                ).all()
            for run_id, obs in _rebuild(session, [*earlier, *in_window]):
                result[obs.name.casefold()].append((run_id, obs))
        return dict(result)

    def latest_observations(self, at_or_before: datetime) -> list[tuple[int, ServerObservation]]:
        """Every server's newest successful scan that finished at or before `at_or_before`, from
        whichever run, with that run's id; a server never scanned successfully by then is
        given with its newest failed scan; a server not scanned by then is left out.
        Ordered by site, then name."""
        with self._read("read the latest observation of every server") as session:

            def newest(ok_only: bool) -> Any:
                query = select(ServerScan.id).where(
                    ServerScan.server_id == Server.id, ServerScan.finished_at <= at_or_before
                )
                if ok_only:
                    query = query.where(ServerScan.scan_status == "ok")
                return (
                    query.order_by(ServerScan.server_id.desc(), ServerScan.finished_at.desc(), ServerScan.run_id.desc())
                    .limit(1)
                    .correlate(Server)
                    .scalar_subquery()
                )

            chosen = [
                ok if ok is not None else any_scan
                for ok, any_scan in session.execute(select(newest(True), newest(False)).select_from(Server))
                if any_scan is not None
            ]
            result: list[tuple[int, ServerObservation]] = []
            for chunk in _chunks(sorted(chosen)):
                scans = session.execute(
                    select(*_SCAN_COLUMNS)
                    .join(Server, Server.id == ServerScan.server_id)
                    .where(ServerScan.id.in_(chunk))
                ).all()
                result += _rebuild(session, scans)
        result.sort(key=lambda item: ((item[1].site or "").casefold(), item[1].name.casefold()))
        return result

    def history(self, server_name: str, protocol: str | None = None) -> list[tuple[int, ServerObservation]]:
        """(run_id, result) for every scan of the server, oldest first.

        With `protocol`, results carry only that protocol; successful scans that did not
        observe it are left out, failed scans are kept.
        """
        with self._read(f"read the history of {server_name}") as session:
            query = (
                select(*_SCAN_COLUMNS)
                .join(Server, Server.id == ServerScan.server_id)
                .where(Server.name_key == server_name.casefold())
                .order_by(ServerScan.run_id)
            )
            found = _rebuild(session, session.execute(query).all(), protocol)
        if protocol is None:
            return found
        return [(run_id, obs) for run_id, obs in found if obs.scan_status != "ok" or protocol in obs.protocols]

    def findings(self, run_id: int) -> list[FindingRow]:
        """The findings saved for a run, in the order they were saved."""
        with self._read(f"read the findings of run {run_id}") as session:
            self._require_run(session, run_id)
            rows = session.execute(
                select(Finding.id, Document.body, Finding.extra)
                .join(Document, Document.id == Finding.body_id)
                .where(Finding.run_id == run_id)
                .order_by(Finding.id)
            )
            return [
                FindingRow(**finding_fields(body, extra), id=finding_id, run_id=run_id) for finding_id, body, extra in rows
            ]

    def resolved(self, run_id: int) -> list[tuple[str, str | None, str | None]]:
        """(rule, server_name, protocol) of the findings resolved in a run."""
        with self._read(f"read the resolved findings of run {run_id}") as session:
            self._require_run(session, run_id)
            rows = session.execute(
                select(ResolvedFinding.rule, ResolvedFinding.server_name, ResolvedFinding.protocol)
                .where(ResolvedFinding.run_id == run_id)
                .order_by(ResolvedFinding.id)
            )
            return [(rule, server, protocol) for rule, server, protocol in rows]

    def config_blob(self, sha256: str) -> bytes | None:
        """A config file exactly as collected, by its SHA-256 (hex)."""
        with self._read("read a stored config file") as session:
            return session.scalar(select(ConfigBlob.content).where(ConfigBlob.sha256 == sha256.lower()))

    def last_successful_scan_times(self, server_names: Sequence[str]) -> dict[str, datetime]:
        """`last_successful_scan_time` of many servers in one query, by casefolded name
        (servers never scanned successfully are left out)."""
        found: dict[str, datetime] = {}
        with self._read("read when the servers were last scanned") as session:
            ids = self._known_server_ids(session, sorted({n.casefold() for n in server_names}))
            for chunk in _chunks(sorted(ids.values())):
                latest = (  # the newest successful scan by run: one step down the (server, run) index
                    select(ServerScan.started_at)
                    .where(ServerScan.server_id == Server.id, ServerScan.scan_status == "ok")
                    .order_by(*_NEWEST_SCAN)
                    .limit(1)
                    .correlate(Server)
                    .scalar_subquery()
                )
                for key, at in session.execute(select(Server.name_key, latest).where(Server.id.in_(chunk))):
                    if at is not None:
                        found[key] = at
        return found

    def launch_methods(self) -> dict[str, str]:
        """The remembered launch method of every server that has one, by casefolded name."""
        with self._read("read the remembered launch methods") as session:
            rows = session.execute(select(Server.name_key, LaunchMethod.method)
                                   .join(LaunchMethod, LaunchMethod.server_id == Server.id))
            return {key: method for key, method in rows}

    def remember_launch(self, server_name: str, method: str, at: datetime | None = None) -> None:
        """Remember that `method` ("env" | "stdin") delivered the collector to the server."""
        at = at or _now()
        with self._write(f"remember the launch method of {server_name}") as session:
            server_id = self._server_ids(session, [server_name], None)[server_name.casefold()]
            # insert-or-nothing, then update: safe when two scans write at once
            _insert_ignoring_duplicates(session, LaunchMethod,
                                        [{"server_id": server_id, "method": method, "learned_at": at}], "server_id")
            session.execute(update(LaunchMethod).where(LaunchMethod.server_id == server_id)
                            .values(method=method, learned_at=at))

    def last_successful_scan_time(self, server_name: str) -> datetime | None:
        """When the server's newest successful scan started (its event query ran after that).

        Used as the cut-off for refused-logon events: it may overlap the previous scan by
        the length of one scan, but never leaves a gap.
        """
        return self.last_successful_scan_times([server_name]).get(server_name.casefold())


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
    for chunk in _chunks(run_ids):
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
    for doc_chunk in _chunks(orphans):
        session.execute(delete(Document).where(Document.id.in_(doc_chunk)))
    counts["documents"] = len(orphans)
    files = {
        sha for body in session.scalars(select(Document.body).where(Document.kind == "protocol"))
        if (sha := json.loads(body).get("config_sha256"))
    }
    unused = [sha for sha in session.scalars(select(ConfigBlob.sha256)) if sha not in files]
    for sha_chunk in _chunks(unused):
        session.execute(delete(ConfigBlob).where(ConfigBlob.sha256.in_(sha_chunk)))
    counts["config_files"] = len(unused)
    return counts


def _document_ids(session: Session, docs: Sequence[tuple[str, str]]) -> list[int]:
    """Ids of the documents (kind, text), in order, storing those the history lacks."""
    if not docs:
        return []
    keys = [document_key(kind, text) for kind, text in docs]
    unique = {key: (kind, text) for key, (kind, text) in zip(keys, docs, strict=True)}
    ids: dict[str, int] = {}
    wanted = sorted(unique)
    for chunk in _chunks(wanted):
        ids.update((sha, doc_id) for sha, doc_id in session.execute(select(Document.sha256, Document.id).where(Document.sha256.in_(chunk))))
    missing = [key for key in wanted if key not in ids]
    if missing:
        _insert_ignoring_duplicates(
            session, Document, [{"sha256": key, "kind": unique[key][0], "body": unique[key][1]} for key in missing], "sha256"
        )
        for chunk in _chunks(missing):
            ids.update((sha, doc_id) for sha, doc_id in session.execute(select(Document.sha256, Document.id).where(Document.sha256.in_(chunk))))
    return [ids[key] for key in keys]


def _documents(session: Session, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The documents with these ids, parsed."""
    found: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids))):
        for doc_id, body in session.execute(select(Document.id, Document.body).where(Document.id.in_(chunk))):
            found[doc_id] = json.loads(body)
    return found


def _rebuild(
    session: Session, scans: Sequence[Any], protocol: str | None = None
) -> list[tuple[int, ServerObservation]]:
    """ServerObservations for stored scans, rows of `_SCAN_COLUMNS` (with their protocols,
    blobs and refused logons). Plain rows, not ORM objects: a report reads thousands."""
    scan_ids = [scan.id for scan in scans]
    observations: dict[int, list[Any]] = defaultdict(list)
    for chunk in _chunks(scan_ids):
        query = (
            select(Observation.id, Observation.server_scan_id, Observation.protocol, Observation.state_id)
            .where(Observation.server_scan_id.in_(chunk))
            .order_by(Observation.id)
        )
        if protocol is not None:
            query = query.where(Observation.protocol == protocol)
        for row in session.execute(query):
            observations[row.server_scan_id].append(row)
    states = _documents(
        session,
        [scan.state_id for scan in scans] + [o.state_id for rows in observations.values() for o in rows],
    )
    observation_ids = [o.id for rows in observations.values() for o in rows]
    refused: dict[int, list[RefusedLogonObservation]] = defaultdict(list)
    for chunk in _chunks(observation_ids):
        for logon in session.scalars(
            select(RefusedLogon).where(RefusedLogon.observation_id.in_(chunk)).order_by(RefusedLogon.id)
        ):
            refused[logon.observation_id].append(RefusedLogonObservation(logon.at, logon.user_name, logon.mailbox_site))
    hashes = sorted(
        {sha for rows in observations.values() for o in rows if (sha := states[o.state_id]["config_sha256"])}
    )
    blobs: dict[str, bytes] = {}
    for hash_chunk in _chunks(hashes):
        query_blobs = select(ConfigBlob.sha256, ConfigBlob.content).where(ConfigBlob.sha256.in_(hash_chunk))
        blobs.update((sha, content) for sha, content in session.execute(query_blobs))
    result = []
    for scan in scans:
        protocols = {}
        for o in observations.get(scan.id, ()):
            state = states[o.state_id]
            sha = state["config_sha256"]
            protocols[o.protocol] = protocol_from_state(
                o.protocol, state, blobs.get(sha) if sha else None, tuple(refused.get(o.id, ()))
            )
        result.append(
            (
                scan.run_id,
                server_from_state(
                    scan.name,
                    states[scan.state_id],
                    scan_status=scan.scan_status,
                    started_at=scan.started_at,
                    finished_at=scan.finished_at,
                    error_kind=scan.error_kind,
                    error=scan.error_message,
                    events_since=scan.events_since,
                    protocols=protocols,
                ),
            )
        )
    return result


def open_store(url: str | None = None, *, read_only: bool = False) -> Store:
    """Open the history database (default_url() when None), creating or upgrading its schema;
    with `read_only` only an existing history at the current schema is opened.

    Runs whose scanner died are recorded as aborted first (design: whatever command next
    opens the history); if that write fails (e.g. a read-only file) a warning says so."""
    store = Store(open_engine(url, read_only=read_only))
    try:
        for run_id in store.abort_dead_runs():
            log.warning("scan run %d was still marked running but its scanner is gone: recorded as aborted", run_id)
    except StoreError as exc:
        log.warning("could not record dead scan runs as aborted: %s", exc.message)
    return store

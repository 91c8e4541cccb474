"""What judge and report read: results of runs, previous and latest observations, the last
evaluations of servers and sites, histories of servers, config files."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scanner.facts import FINISHED_STATUSES
from scanner.parse.observe import ServerObservation
from scanner.store.base import StoreBase, chunks
from scanner.store.documents import finding_fields
from scanner.store.findings import FindingRow
from scanner.store.models import (
    ConfigBlob,
    Document,
    Finding,
    Observation,
    RunServer,
    ScanRun,
    Server,
    ServerScan,
)
from scanner.store.observations import SCAN_COLUMNS, rebuild


def newest_per_server(
    session: Session,
    server_ids: Iterable[int] | None,
    column: Any,
    *conditions: Any,
    newest_by: Sequence[Any] | None = None,
    join: tuple[Any, Any] | None = None,
) -> dict[int, Any]:
    """For each server (every server in the history when `server_ids` is None): `column` of
    its newest row that meets `conditions`, in the table of `column` (`ServerScan` or
    `RunServer`, optionally joined to `join` = (table, on)); servers without one are left out.

    Newest is by run (`newest_by`: other columns, newest first). One correlated subquery,
    ordered like the (server_id, run_id) index, so that the planner walks that index for the
    one server instead of the run_id index backwards (PostgreSQL chose the latter before its
    statistics were collected: 10 s instead of 0.4 s).
    """
    table = column.class_
    query = select(column)
    if join is not None:
        query = query.join(*join)
    order = newest_by if newest_by is not None else (table.run_id,)
    latest = (
        query.where(table.server_id == Server.id, *conditions)
        .order_by(table.server_id.desc(), *(c.desc() for c in order))
        .limit(1)
        .correlate(Server)
        .scalar_subquery()
    )
    batches: list[Sequence[int] | None] = [None] if server_ids is None else list(chunks(sorted(server_ids)))
    found: dict[int, Any] = {}
    for batch in batches:
        select_latest = select(Server.id, latest)
        if batch is not None:
            select_latest = select_latest.where(Server.id.in_(batch))
        for server_id, value in session.execute(select_latest):
            if value is not None:
                found[server_id] = value
    return found


class Queries(StoreBase):
    """Reading the stored results for judge and report."""

    def server_observations(self, run_id: int) -> list[ServerObservation]:
        """Every server result of a run as recorded, in inventory order."""
        with self._read(f"read the results of run {run_id}") as session:
            self._require_run(session, run_id)
            query = (
                select(*SCAN_COLUMNS)
                .join(Server, Server.id == ServerScan.server_id)
                .outerjoin(RunServer, (RunServer.run_id == ServerScan.run_id) & (RunServer.server_id == ServerScan.server_id))
                .where(ServerScan.run_id == run_id)
                .order_by(RunServer.position.is_(None), RunServer.position, Server.name_key)
            )
            return [obs for _run, obs in rebuild(session, session.execute(query).all())]

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

            ok_before = (ServerScan.scan_status == "ok", ServerScan.run_id < run_id)
            # Nearly always the newest successful scan observed every protocol: one step down
            # the (server, run) index per server; the join per protocol only for the rest.
            newest_scan: dict[int, int] = newest_per_server(session, ids.values(), ServerScan.id, *ok_before)
            observed: set[tuple[int, str]] = set()
            for chunk in chunks(sorted(newest_scan.values())):
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
                observing = newest_per_server(
                    session, server_ids, ServerScan.id, *ok_before, Observation.protocol == protocol,
                    join=(Observation, Observation.server_scan_id == ServerScan.id),
                )
                for server_id, scan_id in observing.items():
                    scan_for[scan_id].append((key_of[server_id], protocol))
            for chunk in chunks(sorted(scan_for)):
                query = (
                    select(*SCAN_COLUMNS)
                    .join(Server, Server.id == ServerScan.server_id)
                    .where(ServerScan.id.in_(chunk))
                )
                scans = session.execute(query).all()
                for scan, rebuilt in zip(scans, rebuild(session, scans), strict=True):
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
        conditions: list[Any] = [ScanRun.status.in_(FINISHED_STATUSES)]
        if before_run_id is not None:
            conditions.append(RunServer.run_id < before_run_id)
        if finished_by is not None:
            conditions.append(ScanRun.finished_at <= finished_by)
        with self._read("read the findings of the servers' last evaluations") as session:
            ids = self._known_server_ids(session, sorted({n.casefold() for n in server_names}))
            last_run: dict[int, int] = newest_per_server(
                session, ids.values(), RunServer.run_id, *conditions, join=(ScanRun, ScanRun.id == RunServer.run_id)
            )
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
                for chunk in chunks(sorted(server_ids)):
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
                select(*SCAN_COLUMNS)
                .join(Server, Server.id == ServerScan.server_id)
                .where(ServerScan.run_id >= first_run_id, ServerScan.run_id <= up_to_run_id,
                       ServerScan.scan_status == "ok")
                .order_by(ServerScan.run_id)
            ).all()
            server_ids = sorted({scan.server_id for scan in in_window})
            before = list(newest_per_server(session, server_ids, ServerScan.id, ServerScan.scan_status == "ok",
                                            ServerScan.run_id < first_run_id).values())
            earlier: list[Any] = []
            for chunk in chunks(sorted(before)):
                earlier += session.execute(
                    select(*SCAN_COLUMNS).join(Server, Server.id == ServerScan.server_id)
                    .where(ServerScan.id.in_(chunk))
                ).all()
            for run_id, obs in rebuild(session, [*earlier, *in_window]):
                result[obs.name.casefold()].append((run_id, obs))
        return dict(result)

    def latest_observations(self, at_or_before: datetime) -> list[tuple[int, ServerObservation]]:
        """Every server's newest successful scan that finished at or before `at_or_before`, from
        whichever run, with that run's id; a server never scanned successfully by then is
        given with its newest failed scan; a server not scanned by then is left out.
        Ordered by site, then name."""
        with self._read("read the latest observation of every server") as session:
            by_end = (ServerScan.finished_at, ServerScan.run_id)
            finished = ServerScan.finished_at <= at_or_before
            newest_any = newest_per_server(session, None, ServerScan.id, finished, newest_by=by_end)
            newest_ok = newest_per_server(session, None, ServerScan.id, finished, ServerScan.scan_status == "ok",
                                          newest_by=by_end)
            chosen = [newest_ok.get(server_id, scan_id) for server_id, scan_id in newest_any.items()]
            result: list[tuple[int, ServerObservation]] = []
            for chunk in chunks(sorted(chosen)):
                scans = session.execute(
                    select(*SCAN_COLUMNS)
                    .join(Server, Server.id == ServerScan.server_id)
                    .where(ServerScan.id.in_(chunk))
                ).all()
                result += rebuild(session, scans)
        result.sort(key=lambda item: ((item[1].site or "").casefold(), item[1].name.casefold()))
        return result

    def history(self, server_name: str, protocol: str | None = None) -> list[tuple[int, ServerObservation]]:
        """(run_id, result) for every scan of the server, oldest first.

        With `protocol`, results carry only that protocol; successful scans that did not
        observe it are left out, failed scans are kept.
        """
        with self._read(f"read the history of {server_name}") as session:
            query = (
                select(*SCAN_COLUMNS)
                .join(Server, Server.id == ServerScan.server_id)
                .where(Server.name_key == server_name.casefold())
                .order_by(ServerScan.run_id)
            )
            found = rebuild(session, session.execute(query).all(), protocol)
        if protocol is None:
            return found
        return [(run_id, obs) for run_id, obs in found if obs.scan_status != "ok" or protocol in obs.protocols]

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
            key_of = {server_id: key for key, server_id in ids.items()}
            # the newest successful scan by run: one step down the (server, run) index
            latest = newest_per_server(session, ids.values(), ServerScan.started_at, ServerScan.scan_status == "ok")
            found.update((key_of[server_id], at) for server_id, at in latest.items())
        return found

    def last_successful_scan_time(self, server_name: str) -> datetime | None:
        """When the server's newest successful scan started (its event query ran after that).

        Used as the cut-off for refused-logon events: it may overlap the previous scan by
        the length of one scan, but never leaves a gap.
        """
        return self.last_successful_scan_times([server_name]).get(server_name.casefold())

"""Recording a scan's results: one server's result at a time, its documents stored once
(de-duplicated by digest) and its config files once; the remembered launch methods."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from scanner import facts
from scanner.parse.observe import ServerObservation
from scanner.store.base import StoreBase, chunks, heartbeat_clock, insert_ignoring_duplicates
from scanner.store.documents import digest as document_key
from scanner.store.documents import dumps, protocol_state, server_state
from scanner.store.models import (
    ConfigBlob,
    Document,
    LaunchMethod,
    Observation,
    RefusedLogon,
    ScanRun,
    Server,
    ServerScan,
)
from scanner.store.seal import is_sealed

log = logging.getLogger(__name__)


class Recording(StoreBase):
    """Writing what a scan found."""

    def record_server(self, run_id: int, obs: ServerObservation) -> None:
        """Store one server's result (scan row, observations, config blobs, refused logons) at once."""
        self.record_servers(run_id, [obs])

    def record_servers(self, run_id: int, observations: Sequence[ServerObservation]) -> None:
        """Store the results of several servers of a run in one transaction: all or none.

        A scan commits its results in small batches (scan.py): each statement here serves
        the whole batch (bench/README.md, "CPU per server")."""
        if not observations:
            return
        blobs: dict[str, bytes] = {}
        docs: list[tuple[str, str]] = []
        for obs in observations:
            hashes: dict[str, str | None] = {}
            for key, proto in obs.protocols.items():
                digest = None
                if proto.config_bytes is not None:
                    digest = hashlib.sha256(proto.config_bytes).hexdigest()
                    blobs[digest] = proto.config_bytes
                if proto.config_sha256 is not None and proto.config_sha256.lower() != digest:
                    raise ValueError(f"{obs.name} {key}: config_sha256 does not match config_bytes")
                ref = proto.config_reference
                if ref is not None and ref.content is not None:  # a file=/configSource= target, kept like the file
                    if ref.sha256 != hashlib.sha256(ref.content).hexdigest():
                        raise ValueError(f"{obs.name} {key}: the referenced file's sha256 does not match its bytes")
                    blobs[ref.sha256] = ref.content
                hashes[key] = digest
            docs.append(("server", dumps(server_state(obs))))
            docs += [("protocol", dumps(protocol_state(proto, hashes[key]))) for key, proto in obs.protocols.items()]
        names = [obs.name for obs in observations]
        doing = (f"record the scan of {names[0]}" if len(names) == 1
                 else f"record the scans of {len(names)} servers ({', '.join(names[:3])}, ...)")
        with self._write(doing) as session:
            if is_sealed(session, run_id):  # recorded aborted (and sealed) by another command meanwhile
                log.warning("run %d was sealed (recorded aborted) before %s were recorded: not added to it",
                            run_id, ", ".join(names[:3]) + (", ..." if len(names) > 3 else ""))
                return
            server_ids = {key: self._server_id_cache[key] for name in names
                          if (key := name.casefold()) in self._server_id_cache}
            unknown = [name for name in names if name.casefold() not in server_ids]
            if unknown:
                server_ids.update(self._server_ids(session, unknown, run_id))
            now = self._now()
            session.execute(update(ScanRun).where(ScanRun.id == run_id, ScanRun.status == "running")
                            .values(heartbeat_at=heartbeat_clock(session, self._clock)))
            _store_blobs(session, blobs, now)
            ids = iter(document_ids(session, docs))
            scan_rows = []
            observations_of_scan: list[list[dict[str, Any]]] = []
            for obs in observations:
                scan_rows.append({
                    "run_id": run_id,
                    "server_id": server_ids[obs.name.casefold()],
                    "scan_status": obs.scan_status,
                    "error_kind": obs.error_kind,
                    "error_message": obs.error,
                    "started_at": obs.started_at,
                    "finished_at": obs.finished_at,
                    "events_since": obs.events_since,
                    "site": obs.site,
                    "state_id": next(ids),
                })
                observations_of_scan.append(
                    [{"protocol": proto.protocol, "state_id": next(ids)} for proto in obs.protocols.values()]
                )
            # Core tables, not the ORM entities: the ORM's bulk insert with RETURNING sends one
            # INSERT per row on SQLite; Core sends a few multi-row INSERTs (insertmanyvalues)
            scans, observed, refused = (cast(Table, model.__table__) for model in (ServerScan, Observation, RefusedLogon))
            scan_ids = session.scalars(
                insert(scans).returning(scans.c.id, sort_by_parameter_order=True), scan_rows
            ).all()
            observation_rows = [
                {"server_scan_id": scan_id, **row}
                for scan_id, rows in zip(scan_ids, observations_of_scan, strict=True)
                for row in rows
            ]
            observation_ids = session.scalars(
                insert(observed).returning(observed.c.id, sort_by_parameter_order=True), observation_rows
            ).all() if observation_rows else []
            protocols = [proto for obs in observations for proto in obs.protocols.values()]
            refused_rows = [
                {"observation_id": observation_id, "at": r.at, "user_name": r.user, "mailbox_site": r.mailbox_site,
                 "cas": r.cas or None}
                for observation_id, proto in zip(observation_ids, protocols, strict=True)
                for r in proto.refused_logons
            ]
            if refused_rows:
                session.execute(insert(refused), refused_rows)
        self._server_id_cache.update(server_ids)  # committed

    def launch_methods(self) -> dict[str, facts.LaunchMethod]:
        """The remembered launch method of every server that has one, by casefolded name."""
        with self._read("read the remembered launch methods") as session:
            rows = session.execute(select(Server.name_key, LaunchMethod.method)
                                   .join(LaunchMethod, LaunchMethod.server_id == Server.id))
            return {key: facts.word(facts.LAUNCH_METHODS, method) for key, method in rows}

    def remember_launch(self, server_name: str, method: facts.LaunchMethod, at: datetime | None = None) -> None:
        """Remember that `method` ("env" | "stdin") delivered the collector to the server."""
        self.remember_launches({server_name: method}, at)

    def remember_launches(self, methods: Mapping[str, facts.LaunchMethod], at: datetime | None = None) -> None:
        """Remember the launch method of several servers, by name, in one transaction (a
        scan writes those it learned with each batch of results: scan.py)."""
        if not methods:
            return
        at = at or self._now()
        names = list(methods)
        with self._write(f"remember the launch method of {', '.join(names[:3])}"
                         + (f" and {len(names) - 3} more" if len(names) > 3 else "")) as session:
            unknown = [name for name in names if name.casefold() not in self._server_id_cache]
            ids = self._server_ids(session, unknown, None) if unknown else {}  # begin_run committed the planned
            rows: dict[int, dict[str, Any]] = {}  # by server id: one row per server, the last name's
            for name, method in methods.items():
                server_id = self._server_id_cache.get(name.casefold()) or ids[name.casefold()]
                rows[server_id] = {"server_id": server_id, "method": method, "learned_at": at}
            dialect = session.get_bind().dialect.name
            if dialect in ("sqlite", "postgresql"):
                # one upsert SQLAlchemy compiles once, for every server (a scan's first run
                # remembers every server: bench/README.md, "CPU per server")
                table = cast(Table, LaunchMethod.__table__)
                upsert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
                session.execute(upsert.on_conflict_do_update(
                    index_elements=[table.c.server_id],
                    set_={"method": upsert.excluded.method, "learned_at": upsert.excluded.learned_at},
                ), list(rows.values()))
                return
            # other backends: insert-or-nothing, then update: safe when two scans write at once
            insert_ignoring_duplicates(session, LaunchMethod, list(rows.values()), "server_id")
            for server_id, row in rows.items():
                session.execute(update(LaunchMethod).where(LaunchMethod.server_id == server_id)
                                .values(method=row["method"], learned_at=at))


def _store_blobs(session: Session, blobs: dict[str, bytes], now: datetime) -> None:
    """Store the config files the history lacks (looked up by hash first: a file seen before
    is not sent to the database again)."""
    wanted = sorted(blobs)
    stored: set[str] = set()
    for chunk in chunks(wanted):
        stored.update(session.scalars(select(ConfigBlob.sha256).where(ConfigBlob.sha256.in_(chunk))))
    insert_ignoring_duplicates(
        session,
        ConfigBlob,
        [{"sha256": h, "content": blobs[h], "size": len(blobs[h]), "first_seen_at": now} for h in wanted if h not in stored],
        "sha256",
    )


def document_ids(session: Session, docs: Sequence[tuple[str, str]]) -> list[int]:
    """Ids of the documents (kind, text), in order, storing those the history lacks."""
    if not docs:
        return []
    keys = [document_key(kind, text) for kind, text in docs]
    unique = {key: (kind, text) for key, (kind, text) in zip(keys, docs, strict=True)}
    ids: dict[str, int] = {}
    wanted = sorted(unique)
    for chunk in chunks(wanted):
        ids.update((sha, doc_id) for sha, doc_id in session.execute(select(Document.sha256, Document.id).where(Document.sha256.in_(chunk))))
    missing = [key for key in wanted if key not in ids]
    if missing:
        insert_ignoring_duplicates(
            session, Document, [{"sha256": key, "kind": unique[key][0], "body": unique[key][1]} for key in missing], "sha256"
        )
        for chunk in chunks(missing):
            ids.update((sha, doc_id) for sha, doc_id in session.execute(select(Document.sha256, Document.id).where(Document.sha256.in_(chunk))))
    return [ids[key] for key in keys]

"""Recording a scan's results: one server's result at a time, its documents stored once
(de-duplicated by digest) and its config files once; the remembered launch methods."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from scanner.parse.observe import ServerObservation
from scanner.store.base import StoreBase, chunks, heartbeat_clock, insert_ignoring_duplicates, utcnow
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


class Recording(StoreBase):
    """Writing what a scan found."""

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
            ref = proto.config_reference
            if ref is not None and ref.content is not None:  # a file=/configSource= target, kept like the file
                if ref.sha256 != hashlib.sha256(ref.content).hexdigest():
                    raise ValueError(f"{obs.name} {key}: the referenced file's sha256 does not match its bytes")
                blobs[ref.sha256] = ref.content
            hashes[key] = digest
        docs = [("server", dumps(server_state(obs)))]
        docs += [("protocol", dumps(protocol_state(proto, hashes[key]))) for key, proto in obs.protocols.items()]
        with self._write(f"record the scan of {obs.name}") as session:
            server_id = self._server_id_cache.get(obs.name.casefold())
            if server_id is None:
                server_id = self._server_ids(session, [obs.name], run_id)[obs.name.casefold()]
            now = utcnow()
            session.execute(update(ScanRun).where(ScanRun.id == run_id, ScanRun.status == "running")
                            .values(heartbeat_at=heartbeat_clock(session)))
            insert_ignoring_duplicates(
                session,
                ConfigBlob,
                [{"sha256": h, "content": b, "size": len(b), "first_seen_at": now} for h, b in sorted(blobs.items())],
                "sha256",
            )
            ids = document_ids(session, docs)
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

    def launch_methods(self) -> dict[str, str]:
        """The remembered launch method of every server that has one, by casefolded name."""
        with self._read("read the remembered launch methods") as session:
            rows = session.execute(select(Server.name_key, LaunchMethod.method)
                                   .join(LaunchMethod, LaunchMethod.server_id == Server.id))
            return {key: method for key, method in rows}

    def remember_launch(self, server_name: str, method: str, at: datetime | None = None) -> None:
        """Remember that `method` ("env" | "stdin") delivered the collector to the server."""
        at = at or utcnow()
        with self._write(f"remember the launch method of {server_name}") as session:
            server_id = self._server_ids(session, [server_name], None)[server_name.casefold()]
            # insert-or-nothing, then update: safe when two scans write at once
            insert_ignoring_duplicates(session, LaunchMethod,
                                        [{"server_id": server_id, "method": method, "learned_at": at}], "server_id")
            session.execute(update(LaunchMethod).where(LaunchMethod.server_id == server_id)
                            .values(method=method, learned_at=at))


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

"""Rebuilding `ServerObservation`s from stored scans: their documents, protocols, config
files and refused logons."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scanner.parse.observe import RefusedLogonObservation, ServerObservation
from scanner.store.base import chunks
from scanner.store.documents import protocol_from_state, reference_sha256, server_from_state
from scanner.store.models import ConfigBlob, Document, Observation, RefusedLogon, Server, ServerScan

# What `rebuild` reads of a server scan (select these, joined to Server for its name).
SCAN_COLUMNS = (
    ServerScan.id, ServerScan.run_id, ServerScan.server_id, ServerScan.state_id, ServerScan.scan_status,
    ServerScan.started_at, ServerScan.finished_at, ServerScan.error_kind, ServerScan.error_message,
    ServerScan.events_since, Server.name,
)


def documents(session: Session, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The documents with these ids, parsed."""
    found: dict[int, dict[str, Any]] = {}
    for chunk in chunks(sorted(set(ids))):
        for doc_id, body in session.execute(select(Document.id, Document.body).where(Document.id.in_(chunk))):
            found[doc_id] = json.loads(body)
    return found


def rebuild(
    session: Session, scans: Sequence[Any], protocol: str | None = None
) -> list[tuple[int, ServerObservation]]:
    """ServerObservations for stored scans, rows of `SCAN_COLUMNS` (with their protocols,
    blobs and refused logons). Plain rows, not ORM objects: a report reads thousands."""
    scan_ids = [scan.id for scan in scans]
    observations: dict[int, list[Any]] = defaultdict(list)
    for chunk in chunks(scan_ids):
        query = (
            select(Observation.id, Observation.server_scan_id, Observation.protocol, Observation.state_id)
            .where(Observation.server_scan_id.in_(chunk))
            .order_by(Observation.id)
        )
        if protocol is not None:
            query = query.where(Observation.protocol == protocol)
        for row in session.execute(query):
            observations[row.server_scan_id].append(row)
    states = documents(
        session,
        [scan.state_id for scan in scans] + [o.state_id for rows in observations.values() for o in rows],
    )
    observation_ids = [o.id for rows in observations.values() for o in rows]
    refused: dict[int, list[RefusedLogonObservation]] = defaultdict(list)
    for chunk in chunks(observation_ids):
        for logon in session.scalars(
            select(RefusedLogon).where(RefusedLogon.observation_id.in_(chunk)).order_by(RefusedLogon.id)
        ):
            refused[logon.observation_id].append(
                RefusedLogonObservation(logon.at, logon.user_name, logon.mailbox_site, logon.cas or ""))
    hashes = sorted(
        {sha for rows in observations.values() for o in rows
         for sha in (states[o.state_id]["config_sha256"], reference_sha256(states[o.state_id])) if sha}
    )
    blobs: dict[str, bytes] = {}
    for hash_chunk in chunks(hashes):
        query_blobs = select(ConfigBlob.sha256, ConfigBlob.content).where(ConfigBlob.sha256.in_(hash_chunk))
        blobs.update((sha, content) for sha, content in session.execute(query_blobs))
    result = []
    for scan in scans:
        protocols = {}
        for o in observations.get(scan.id, ()):
            state = states[o.state_id]
            sha = state["config_sha256"]
            ref_sha = reference_sha256(state)
            protocols[o.protocol] = protocol_from_state(
                o.protocol, state, blobs.get(sha) if sha else None, tuple(refused.get(o.id, ())),
                blobs.get(ref_sha) if ref_sha else None,
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

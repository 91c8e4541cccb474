"""The JSON documents of the history: what a scan or a finding says, stored once.

A server scan refers to a *server* document (address, site, build, paths, ...), each of its
protocols to a *protocol* document (the config value and file, the service), each finding
of a run to a *finding* document (rule, severity, state, message, evidence, first seen,
waiver). Documents are keyed by the SHA-256 of their kind and exact JSON text, so a
server that did not change between two scans adds no document, only the small rows that
point at the existing ones (see `scanner.store.models.Document`).

The text is canonical for a given value: keys in the order written here (evidence keeps
the order the rules gave it), compact separators, non-ASCII as is. Datetimes are ISO 8601
in UTC with their microseconds, so a value read back equals the value written and a past
run's report regenerates byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import Any

from scanner.facts import ERROR_KINDS, PROTOCOLS, SCAN_STATUSES, word
from scanner.parse.observe import (
    ProtocolObservation,
    ReferenceObservation,
    RefusedLogonObservation,
    ServerObservation,
)
from scanner.parse.protocol_state import REFERENCE_STORED, STORED, reference_state
from scanner.parse.protocol_state import protocol_state as shared_state
from scanner.util.timefmt import day_iso, iso_exact, parse_iso_exact

KINDS: tuple[str, ...] = ("server", "protocol", "finding")
#: Evidence keys whose values differ on every scan although the finding did not change
#: (the times of a failed attempt, XS-011). The document keeps the key (so the order of
#: the evidence is kept) with null; the finding row carries the values.
VOLATILE_EVIDENCE: tuple[str, ...] = ("started_at", "finished_at")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_exact(value)
    if isinstance(value, date):
        return day_iso(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: dict[str, Any]) -> str:
    """The canonical JSON text of a document."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_default)


def digest(kind: str, text: str) -> str:
    """The key of a document: SHA-256 (hex) of its kind and its text."""
    return hashlib.sha256(f"{kind}\n{text}".encode("utf-8", "surrogatepass")).hexdigest()


def server_state(obs: ServerObservation) -> dict[str, Any]:
    """What a scan found out about the server, beyond its time and status."""
    return {
        "address": obs.address,
        "site": obs.site,
        "reported_site": obs.reported_site,
        "computer": obs.computer,
        "build": obs.build,
        "service_pack": obs.service_pack,
        "rollup": obs.rollup,
        "build_recognised": obs.build_recognised,
        "rollup_listed": obs.rollup_listed,
        "install_path": obs.install_path,
        "setup_key": obs.setup_key,
        "ps_version": obs.ps_version,
        "collector_errors": [list(pair) for pair in obs.collector_errors],
        # written only when set, so a server whose log was read whole keeps its document
        **({"events_error": obs.events_error} if obs.events_error is not None else {}),
        **({"events_truncated": obs.events_truncated, "events_limit": obs.events_limit}
           if obs.events_truncated is not None else {}),
        **({"site_source": obs.site_source} if obs.site_source is not None else {}),
        **({"inventory_site": obs.inventory_site} if obs.inventory_site is not None else {}),
    }


def protocol_state(p: ProtocolObservation, config_sha256: str | None) -> dict[str, Any]:
    """What one protocol looked like (refused logons are rows of their own: they change):
    the stored view of parse/protocol_state.py, with the digest of the bytes kept."""
    state = shared_state(p, STORED, iso_exact)
    state["config_sha256"] = config_sha256  # the key keeps its place
    if p.config_reference is not None:  # only then: unchanged states keep their stored text
        # the file=/configSource= reference without its bytes (those are a config blob)
        state["config_reference"] = reference_state(p.config_reference, REFERENCE_STORED, iso_exact)
    return state


def reference_sha256(state: dict[str, Any]) -> str | None:
    """The blob key of a protocol state's referenced file, if one was stored."""
    ref = state.get("config_reference")
    return ref.get("sha256") if isinstance(ref, dict) else None


def _reference_from_state(state: dict[str, Any], content: bytes | None) -> ReferenceObservation | None:
    ref = state.get("config_reference")  # absent in states stored before it existed
    if not isinstance(ref, dict):
        return None
    return ReferenceObservation(
        attribute=ref["attribute"], value=ref["value"], line=ref["line"], outcome=ref["outcome"], path=ref["path"],
        sha256=ref["sha256"], length=ref["length"], modified=parse_iso_exact(ref["modified"]), error=ref["error"],
        content=content,
    )


def protocol_from_state(
    protocol: str,
    state: dict[str, Any],
    config_bytes: bytes | None,
    refused: tuple[RefusedLogonObservation, ...],
    reference_bytes: bytes | None = None,
) -> ProtocolObservation:
    return ProtocolObservation(
        protocol=word(PROTOCOLS, protocol),
        allow_cross_site=state["allow_cross_site"],
        value_source=state["value_source"],
        config_status=state["config_status"],
        raw_value=state["raw_value"],
        config_path=state["config_path"],
        config_sha256=state["config_sha256"],
        config_bytes=config_bytes,
        config_length=state["config_length"],
        config_modified=parse_iso_exact(state["config_modified"]),
        config_encoding=state["config_encoding"],
        key_notes=tuple(state["key_notes"]),
        service=state["service"],
        start_mode=state["start_mode"],
        service_started=parse_iso_exact(state["service_started"]),
        pending_restart=state["pending_restart"],
        refused_logons=refused,
        detail=state["detail"],
        config_reference=_reference_from_state(state, reference_bytes),
    )


def server_from_state(
    name: str,
    state: dict[str, Any],
    *,
    scan_status: str,
    started_at: datetime,
    finished_at: datetime,
    error_kind: str | None,
    error: str | None,
    events_since: datetime | None,
    protocols: dict[str, ProtocolObservation],
) -> ServerObservation:
    return ServerObservation(
        name=name,
        address=state["address"],
        site=state["site"],
        scan_status=word(SCAN_STATUSES, scan_status),
        started_at=started_at,
        finished_at=finished_at,
        error_kind=None if error_kind is None else word(ERROR_KINDS, error_kind),
        error=error,
        computer=state["computer"],
        reported_site=state["reported_site"],
        build=state["build"],
        service_pack=state["service_pack"],
        rollup=state["rollup"],
        build_recognised=state["build_recognised"],
        rollup_listed=state.get("rollup_listed"),
        install_path=state["install_path"],
        setup_key=state["setup_key"],
        ps_version=state["ps_version"],
        events_since=events_since,
        collector_errors=tuple((str(a), str(b)) for a, b in state["collector_errors"]),
        protocols=protocols,
        events_error=state.get("events_error"),
        events_truncated=state.get("events_truncated"),
        events_limit=state.get("events_limit"),
        site_source=state.get("site_source"),  # absent from documents stored before 2026-12
        inventory_site=state.get("inventory_site"),
    )


def finding_document(
    *,
    rule: str,
    severity: str,
    state: str,
    server_name: str | None,
    site: str | None,
    protocol: str | None,
    message: str,
    evidence: dict[str, Any],
    first_seen_run_id: int | None,
    first_seen_at: datetime | None,
    waiver: dict[str, Any] | None,
) -> tuple[str, str | None]:
    """A finding as stored: the shared document's text (everything but the run and the
    volatile evidence values) and the row's own JSON of those values (None when none)."""
    volatile = {k: evidence[k] for k in VOLATILE_EVIDENCE if evidence.get(k) is not None}
    shared = {**evidence, **dict.fromkeys(volatile)}
    body = {
        "rule": rule,
        "severity": severity,
        "state": state,
        "server_name": server_name,
        "site": site,
        "protocol": protocol,
        "message": message,
        "evidence": shared,
        "first_seen_run_id": first_seen_run_id,
        "first_seen_at": iso_exact(first_seen_at),
        "waiver": waiver,
    }
    return dumps(body), (dumps(volatile) if volatile else None)


def finding_fields(body: str, extra: str | None) -> dict[str, Any]:
    """The keyword arguments of `finding_document` back from a stored document and row."""
    fields = json.loads(body)
    if extra:
        fields["evidence"].update(json.loads(extra))  # keys exist: their order is kept
    fields["first_seen_at"] = parse_iso_exact(fields["first_seen_at"])
    return dict(fields)

"""Observations built by hand for the rule, evaluation and history tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from scanner.collect.collected import CONFIG_FILE_NAMES
from scanner.judge.checks import CheckInput, Previous
from scanner.judge.policy import Policy
from scanner.parse.observe import (
    ProtocolObservation,
    RefusedLogonObservation,
    ServerObservation,
)
from scanner.store.repo import PlannedServer

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
INSTALL = "C:\\Programme\\Microsoft\\Exchange Server"
SP1 = "8.1.240.6"
SP3 = "8.3.83.6"


def config_bytes(value: str | None) -> bytes:
    entry = "" if value is None else f'<add key="AllowCrossSiteSessions" value="{value}" />'
    return f'<?xml version="1.0" encoding="utf-8"?><configuration><appSettings>{entry}</appSettings></configuration>'.encode()


def proto(
    protocol: str = "pop3",
    value: bool | None = False,
    *,
    source: str = "file",
    status: str = "ok",
    raw: str | None = None,
    notes: Iterable[str] = (),
    service: str = "Running",
    started: datetime | None = None,
    modified: datetime | None = None,
    pending: bool | None = None,
    logons: Iterable[RefusedLogonObservation] = (),
    content: bytes | None = None,
    detail: str = "",
) -> ProtocolObservation:
    """One protocol's observation; the file bytes follow the value unless `content` is given."""
    if raw is None and source == "file" and value is not None:
        raw = "true" if value else "false"
    if content is None and status != "missing":
        content = config_bytes(raw if source == "file" else None)
    started = started or T0 - timedelta(days=10)
    modified = modified or T0 - timedelta(days=20)
    if pending is None:
        pending = service == "Running" and modified > started
    return ProtocolObservation(
        protocol=protocol,
        allow_cross_site=value,
        value_source=source,
        config_status=status,
        raw_value=raw,
        config_path=f"{INSTALL}\\ClientAccess\\PopImap\\{CONFIG_FILE_NAMES[protocol]}",
        config_sha256=hashlib.sha256(content).hexdigest() if content is not None else None,
        config_bytes=content,
        config_length=len(content) if content is not None else None,
        config_modified=modified,
        config_encoding="utf-8" if content is not None else None,
        key_notes=tuple(notes),
        service=service,
        start_mode="Auto",
        service_started=started,
        pending_restart=pending,
        refused_logons=tuple(logons),
        detail=detail,
    )


def server(
    name: str = "CAS01",
    *,
    site: str | None = "Berlin",
    build: str | None = SP3,
    sp: str | None = "SP3",
    recognised: bool = True,
    pop3: ProtocolObservation | None = None,
    imap4: ProtocolObservation | None = None,
    value: bool | None = False,
    at: datetime = T0,
    events_since: datetime | None = None,
) -> ServerObservation:
    """A successful scan; both protocols give `value` unless given explicitly."""
    pop3 = pop3 or proto("pop3", value)
    imap4 = imap4 or proto("imap4", value)
    return ServerObservation(
        name=name,
        address=f"{name.lower()}.contoso.local",
        site=site,
        scan_status="ok",
        started_at=at - timedelta(seconds=5),
        finished_at=at,
        computer=name,
        reported_site=site,
        build=build,
        service_pack=sp,
        build_recognised=recognised,
        install_path=INSTALL,
        setup_key="Setup",
        ps_version="1.0",
        events_since=events_since,
        protocols={"pop3": pop3, "imap4": imap4},
    )


def failed(name: str = "CAS01", *, site: str | None = "Berlin", kind: str = "timeout", at: datetime = T0) -> ServerObservation:
    return ServerObservation(
        name=name,
        address=f"{name.lower()}.contoso.local",
        site=site,
        scan_status="error",
        started_at=at - timedelta(seconds=120),
        finished_at=at,
        error_kind=kind,
        error="no answer within 120 s",
    )


def planned_for(observations: Iterable[ServerObservation]) -> list[PlannedServer]:
    return [PlannedServer(o.name, o.address, o.site) for o in observations]


def inputs(
    current: Iterable[ServerObservation],
    *,
    run_id: int = 2,
    previous: Mapping[str, tuple[int, ServerObservation]] | None = None,
    policy: Policy | None = None,
    planned: list[PlannedServer] | None = None,
) -> CheckInput:
    """Check inputs for one run; `previous` maps a server name to its last successful scan."""
    current = list(current)
    prev: dict[tuple[str, str], Previous] = {}
    for name, (rid, obs) in (previous or {}).items():
        for protocol, p in obs.protocols.items():
            prev[(name.casefold(), protocol)] = Previous(rid, obs, p)
    return CheckInput(
        run_id=run_id,
        run_at=T0,
        planned=planned if planned is not None else planned_for(current),
        current={o.name.casefold(): o for o in current},
        previous=prev,
        policy=policy or Policy.from_text("[baseline]\nallow_cross_site = false\n"),
    )

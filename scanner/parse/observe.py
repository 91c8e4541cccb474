"""What the scanner concluded about one server in one scan: the rows of the history.

`ServerObservation` is built from a `CollectedHost` (or from a failure) by
`interpret()`; the store persists it as it is, and the rules read it back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from scanner.collect.collected import CollectedConfig, CollectedHost
from scanner.facts import (
    PROTOCOLS,
    ConfigStatus,
    ErrorKind,
    Protocol,
    ReferenceOutcome,
    ScanStatus,
    TruncationReason,
    ValueSource,
)
from scanner.parse.builds import build_from_registry, parse_build, rollup_from_names
from scanner.parse.configfile import ConfigReading, read_config
from scanner.parse.events import read_refused_logon

#: Characters kept of the server's reason for not reading its Application log.
MAX_EVENTS_ERROR = 1000


@dataclass(frozen=True)
class RefusedLogonObservation:
    at: datetime | None
    user: str
    mailbox_site: str
    cas: str = ""  # the Client Access Server the event names ("" when it does not)


@dataclass(frozen=True)
class ReferenceObservation:
    """The appSettings file= or configSource= of the section in force, and its file as
    collected (issue 16 edits the file that decides the value)."""

    attribute: str  # "file" | "configSource"
    value: str  # as written in the config file
    line: int | None  # line of the <appSettings> element that names it
    outcome: ReferenceOutcome  # absent: a file= target missing (ignored); unknown: not read
    path: str  # full path the collector resolved; "" when it did not
    sha256: str | None  # of content
    length: int | None
    modified: datetime | None  # LastWriteTimeUtc
    error: str = ""  # the collector's: "" | refused-path | too-large | its exception text (Windows' language)
    content: bytes | None = None  # exactly as collected (stored once per sha256, like the config file)


@dataclass(frozen=True)
class ProtocolObservation:
    protocol: Protocol
    allow_cross_site: bool | None  # the value the file gives the service; None when unknown
    value_source: ValueSource  # file: the key in force is in the file; default: no key (false)
    config_status: ConfigStatus
    raw_value: str | None  # the value attribute as written, for the entry in force
    config_path: str
    config_sha256: str | None  # of config_bytes
    config_bytes: bytes | None  # exactly as collected (stored once per sha256)
    config_length: int | None
    config_modified: datetime | None  # LastWriteTimeUtc
    config_encoding: str | None
    key_notes: tuple[str, ...]  # XS-007 evidence: duplicate, removed, cleared, file=..., configSource=...
    service: str  # Running | Stopped | StartPending | ... | absent | "" (unknown)
    start_mode: str | None
    service_started: datetime | None
    #: The running service started before the file was last written; None when unknown
    #: (running, but its start time or an existing file's last write time was not read).
    pending_restart: bool | None
    refused_logons: tuple[RefusedLogonObservation, ...] = field(default=())
    detail: str = ""  # human sentence for a non-ok config_status
    config_reference: ReferenceObservation | None = None  # file=/configSource= of the section in force


@dataclass(frozen=True)
class ServerObservation:
    name: str  # as in the inventory
    address: str
    #: The server's AD site as its Netlogon reports it (the fact, which wins over the
    #: inventory's plan); None when the server was read but its site could not be (the
    #: collector's 'site' stage error says why). A server that could not be scanned keeps
    #: the inventory's site (docs/contracts.md, "Sites").
    site: str | None
    scan_status: ScanStatus
    started_at: datetime
    finished_at: datetime
    error_kind: ErrorKind | None = None
    error: str | None = None  # one sentence, no secrets
    computer: str | None = None
    reported_site: str | None = None  # what the server itself said
    build: str | None = None
    service_pack: str | None = None  # RTM | SP1 | SP2 | SP3 | None (unrecognised)
    rollup: str | None = None  # named by the build (Microsoft's table); None for a release build
    build_recognised: bool = False
    rollup_listed: str | None = None  # the registry's Patches list: the highest rollup of this service pack
    install_path: str | None = None
    setup_key: str | None = None
    ps_version: str | None = None
    events_since: datetime | None = None
    collector_errors: tuple[tuple[str, str], ...] = field(default=())
    protocols: dict[str, ProtocolObservation] = field(default_factory=dict)
    # The Application log (event 1008, XS-010): None when it was read; else why not, and
    # then refused logons are unknown (never "none").
    events_error: str | None = None
    # Refused logons are a lower bound: "max" (more matched than the `events_limit` listed)
    # or "window" (the newest `events_limit` entries of the log were all newer than the
    # cut-off, so older ones were not read); None when every match was read.
    events_truncated: TruncationReason | None = None
    events_limit: int | None = None
    site_source: str | None = None  # the Netlogon value that gave the site: SiteName | DynamicSiteName
    inventory_site: str | None = None  # the site the inventory planned, when it names one

    @property
    def events_read(self) -> bool:
        """Whether the Application log was read (refused logons are known)."""
        return self.events_error is None

    @property
    def site_differs(self) -> bool:
        """The inventory plans a site and the server reports another (or none at all)."""
        return (self.scan_status == "ok" and self.inventory_site is not None
                and (self.site or "").casefold() != self.inventory_site.casefold())


def _pending_restart(service_status: str, started: datetime | None,
                     modified: list[datetime | None]) -> bool | None:
    """The running process read its configuration at start: a later write is not in force.

    `modified`: the last write time of each file in force that exists (None where it was not
    read). Unknown (None) for a running service whose start time, or one of those times,
    was not read and no known write is later than its start."""
    if service_status != "Running":
        return False
    if started is not None and any(m is not None and m > started for m in modified):
        return True
    if started is None or any(m is None for m in modified):
        return None
    return False


def _reference(reading: ConfigReading, config: CollectedConfig) -> ReferenceObservation | None:
    ref = reading.reference
    if ref is None:
        return None
    found = next((r for r in config.references or () if r.attribute == ref.attribute and r.value == ref.value), None)
    content = found.content if found is not None else None
    return ReferenceObservation(
        attribute=ref.attribute, value=ref.value, line=ref.line, outcome=ref.outcome,
        path=found.path if found is not None else ref.path,
        sha256=hashlib.sha256(content).hexdigest() if content is not None else None,
        length=found.length if found is not None else None,
        modified=found.modified if found is not None else None,
        error=found.error if found is not None else "",
        content=content,
    )


def _protocol_observation(host: CollectedHost, protocol: Protocol) -> ProtocolObservation:
    config = host.configs[protocol]
    service = host.services[protocol]
    reading = read_config(
        config.content, exists=config.exists, error=config.error,
        references=config.references, references_error=config.references_error, config_path=config.path,
    )
    content = config.content
    reference = _reference(reading, config)
    # a referenced file that was read counts like the config file for a pending restart
    modified = [config.modified] if config.exists else []
    if reference is not None and reference.outcome == "applied":
        modified.append(reference.modified)
    status = service.status if service.exists else "absent"
    logons = []
    for event in host.events:
        if event.protocol == protocol:
            said = read_refused_logon(event, host.computer)
            logons.append(RefusedLogonObservation(at=event.at, user=said.user, mailbox_site=said.mailbox_site,
                                                  cas=said.cas))
    return ProtocolObservation(
        protocol=protocol,
        allow_cross_site=reading.value,
        value_source=reading.value_source,
        config_status=reading.status,
        raw_value=reading.raw_value,
        config_path=config.path,
        config_sha256=hashlib.sha256(content).hexdigest() if content is not None else None,
        config_bytes=content,
        config_length=config.length,
        config_modified=config.modified,
        config_encoding=reading.encoding,
        key_notes=tuple(reading.notes),
        service=status,
        start_mode=service.start_mode or None if service.exists else None,
        service_started=service.started,
        pending_restart=_pending_restart(status, service.started, modified),
        refused_logons=tuple(logons),
        detail=reading.detail,
        config_reference=reference,
    )


def interpret(
    name: str,
    address: str,
    inventory_site: str | None,
    host: CollectedHost,
    started_at: datetime,
    finished_at: datetime,
) -> ServerObservation:
    """Conclude what one CAS does from the raw data its collector returned."""
    setup = host.setup
    build_text = setup.exsetup_version or build_from_registry(
        setup.product_major, setup.product_minor, setup.build_major, setup.build_minor
    )
    build = parse_build(build_text)
    service_pack = build.service_pack if build else None
    return ServerObservation(
        name=name,
        address=address,
        site=host.site or None,
        scan_status="ok",
        started_at=started_at,
        finished_at=finished_at,
        computer=host.computer or None,
        reported_site=host.site or None,
        build=build.build if build else None,
        service_pack=service_pack,
        rollup=build.rollup if build else None,
        build_recognised=bool(build and build.recognised),
        rollup_listed=rollup_from_names((r.name for r in host.rollups), service_pack),
        install_path=setup.install_path or None,
        setup_key=setup.key or None,
        ps_version=host.ps_version or None,
        events_since=host.events_since,
        collector_errors=host.errors,
        protocols={p: _protocol_observation(host, p) for p in PROTOCOLS if p in host.configs},
        events_error=host.events_error[:MAX_EVENTS_ERROR] or None,
        events_truncated=_truncated(host),
        events_limit=(host.events_window if host.events_window_full else host.events_max) if _truncated(host) else None,
        site_source=host.site_source or None,
        inventory_site=inventory_site or None,
    )


def _truncated(host: CollectedHost) -> TruncationReason | None:
    """Why the refused logons of a read log are a lower bound: "window", "max" or None."""
    if host.events_error or not host.events_truncated:
        return None
    return "window" if host.events_window_full else "max"


def failed(
    name: str,
    address: str,
    inventory_site: str | None,
    kind: ErrorKind,
    message: str,
    started_at: datetime,
    finished_at: datetime,
) -> ServerObservation:
    """The observation of a server that could not be scanned."""
    return ServerObservation(
        name=name,
        address=address,
        site=inventory_site,
        inventory_site=inventory_site or None,
        scan_status="error",
        started_at=started_at,
        finished_at=finished_at,
        error_kind=kind,
        error=message,
    )

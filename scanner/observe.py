"""What the scanner concluded about one server in one scan: the rows of the history.

`ServerObservation` is built from a `CollectedHost` (or from a failure) by
`interpret()`; the store persists it as it is, and the rules read it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class RefusedLogonObservation:
    at: datetime | None
    user: str
    mailbox_site: str


@dataclass(frozen=True)
class ProtocolObservation:
    protocol: str  # pop3 | imap4
    allow_cross_site: bool | None  # the value the file gives the service; None when unknown
    value_source: str  # "file" (the key is in force from the file) | "default" (no key: false)
    config_status: str  # ok | missing | malformed | invalid-value | unreadable
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
    pending_restart: bool  # running service started before the file was last written
    refused_logons: tuple[RefusedLogonObservation, ...] = field(default=())
    detail: str = ""  # human sentence for a non-ok config_status


@dataclass(frozen=True)
class ServerObservation:
    name: str  # as in the inventory
    address: str
    site: str | None  # inventory site, else the server's own
    scan_status: str  # ok | error
    started_at: datetime
    finished_at: datetime
    error_kind: str | None = None  # refused | timeout | reset | auth | soap-fault | protocol | output | internal
    error: str | None = None  # one sentence, no secrets
    computer: str | None = None
    reported_site: str | None = None  # what the server itself said
    build: str | None = None
    service_pack: str | None = None  # RTM | SP1 | SP2 | SP3 | None (unrecognised)
    rollup: str | None = None
    build_recognised: bool = False
    install_path: str | None = None
    setup_key: str | None = None
    ps_version: str | None = None
    events_since: datetime | None = None
    collector_errors: tuple[tuple[str, str], ...] = field(default=())
    protocols: dict[str, ProtocolObservation] = field(default_factory=dict)

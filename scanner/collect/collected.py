"""Typed, immutable snapshots of what the collector brought back from one CAS.

This is raw collected data: bytes and strings exactly as collected. Interpretation
(effective value, service pack, pending restart) lives in `configfile`, `builds`
and `observe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

SERVICE_NAMES: dict[str, str] = {"pop3": "MSExchangePOP3", "imap4": "MSExchangeIMAP4"}
SERVICE_DISPLAY_NAMES: dict[str, str] = {
    "pop3": "Microsoft Exchange POP3",
    "imap4": "Microsoft Exchange IMAP4",
}
CONFIG_FILE_NAMES: dict[str, str] = {
    "pop3": "Microsoft.Exchange.Pop3.exe.Config",
    "imap4": "Microsoft.Exchange.Imap4.exe.Config",
}


@dataclass(frozen=True)
class SetupInfo:
    """Values of HKLM\\SOFTWARE\\Microsoft\\Exchange\\Setup (or v8.0\\Setup)."""

    key: str  # "Setup", "v8.0\\Setup" or "" when neither key exists
    install_path: str
    product_major: str
    product_minor: str
    build_major: str
    build_minor: str
    exsetup_path: str
    exsetup_exists: bool
    exsetup_version: str  # FileVersion of ExSetup.exe, "" when unknown


@dataclass(frozen=True)
class Rollup:
    name: str
    installed: str  # yyyymmdd as the registry has it


@dataclass(frozen=True)
class CollectedReference:
    """A file named by an appSettings `file=` or `configSource=` attribute of a config
    file, as the collector fetched it (only inside the PopImap folder, size-capped)."""

    attribute: str  # "file" | "configSource"
    value: str  # the attribute value as the collector's XML reader gave it
    path: str  # the full path it names; "" when the collector refused the value
    exists: bool
    length: int | None
    modified: datetime | None  # LastWriteTimeUtc
    error: str  # "" | "refused-path" | "too-large" | what stopped the read (an exception text)
    content: bytes | None  # raw file bytes; None when not read


@dataclass(frozen=True)
class CollectedConfig:
    protocol: str
    path: str
    exists: bool
    length: int | None
    modified: datetime | None  # LastWriteTimeUtc
    error: str  # "" or what stopped the collector reading it ("too-large", an exception text)
    content: bytes | None  # raw file bytes; None when not read
    # Files its appSettings elements name (file=/configSource=). None: the collector did
    # not look (an older collector); () it looked and found none.
    references: tuple[CollectedReference, ...] | None = None
    references_error: str = ""  # why the collector could not look ("" when it could)


@dataclass(frozen=True)
class CollectedService:
    protocol: str
    name: str
    exists: bool
    status: str  # Get-Service Status: Running, Stopped, StartPending, ...; "" when absent
    start_mode: str  # Win32_Service StartMode: Auto, Manual, Disabled
    process_id: int | None
    started: datetime | None  # StartTime of the service process


@dataclass(frozen=True)
class RefusedLogon:
    source: str  # MSExchangePOP3 | MSExchangeIMAP4
    at: datetime | None
    insertions: tuple[str, ...]  # ReplacementStrings, in the order the event stores them
    message: str  # the rendered description; who, where and which CAS: scanner.parse.events

    @property
    def protocol(self) -> str:
        return "imap4" if self.source.upper().endswith("IMAP4") else "pop3"


@dataclass(frozen=True)
class CollectedHost:
    """Everything one collector run returned, validated against schema.xsd."""

    computer: str
    site: str
    ps_version: str
    collected_at: datetime | None
    setup: SetupInfo
    rollups: tuple[Rollup, ...]
    configs: dict[str, CollectedConfig]  # by protocol
    services: dict[str, CollectedService]  # by protocol
    events_since: datetime | None
    events_truncated: bool  # more events 1008 may exist than are listed
    events: tuple[RefusedLogon, ...]
    errors: tuple[tuple[str, str], ...] = field(default=())  # (stage, message)
    events_max: int | None = None  # at most this many events are listed
    events_window: int | None = None  # the newest entries of the Application log read
    events_window_full: bool = False  # that window was full: older events may exist
    events_error: str = ""  # why the Application log could not be read; "" when it was
    site_source: str = ""  # the Netlogon value that gave `site`: SiteName | DynamicSiteName | ""

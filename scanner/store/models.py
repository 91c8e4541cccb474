"""Tables of the history database (SQLAlchemy 2 typed declarative models).

The schema is created and changed only by the Alembic revisions in `migrations/`;
`tests/test_migrations.py` checks that these models and the revisions agree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from scanner.facts import LAUNCH_METHODS, RUN_STATUSES, SCAN_STATUSES, RunStatus
from scanner.util.timefmt import exact_utc

# Constraint names that are stable on every backend, so later revisions can alter them
# (SQLite batch mode needs named constraints).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}



def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time: aware datetimes in, aware UTC datetimes out, on every backend.

    SQLite keeps no time zone, so values are stored there as naive UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        exact_utc(value)  # refuses a naive datetime (ValueError), as every time the store writes
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class SafeText(TypeDecorator[str]):
    """Text as collected from a server; NUL characters (which PostgreSQL refuses) become U+FFFD."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), str: SafeText()}


class ScanRun(Base):
    """One `cas-audit scan` invocation."""

    __tablename__ = "scan_runs"
    __table_args__ = (CheckConstraint(_in("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    servers_planned: Mapped[int]
    servers_scanned: Mapped[int] = mapped_column(default=0)
    servers_failed: Mapped[int] = mapped_column(default=0)
    tool_version: Mapped[str]
    catalog_version: Mapped[str | None]
    operator: Mapped[str]
    scanning_host: Mapped[str]
    inventory_sha256: Mapped[str] = mapped_column(String(64))
    policy_sha256: Mapped[str | None] = mapped_column(String(64))
    policy_text: Mapped[str | None]
    site_filter: Mapped[str | None]
    organisation: Mapped[str | None]
    # liveness (scanner/store/liveness.py): the owning process on `scanning_host`, and
    # its last sign of life; why an aborted run ended
    owner_pid: Mapped[int | None]
    owner_started: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    end_reason: Mapped[str | None]


@dataclass(frozen=True)
class RunRow:
    """A scan run as the rest of the code sees it: one field per column of `ScanRun`.

    This pair is the one definition of a run's fields. A new field is a column above, a
    field here (same name) and an Alembic revision: `run_row` maps by name, and
    tests/test_store.py checks that the two lists agree.
    """

    id: int
    started_at: datetime
    finished_at: datetime | None
    status: RunStatus
    servers_planned: int
    servers_scanned: int  # scans that succeeded
    servers_failed: int  # scans that ended in an error
    tool_version: str
    catalog_version: str | None
    operator: str
    scanning_host: str
    inventory_sha256: str
    policy_sha256: str | None
    policy_text: str | None
    site_filter: str | None
    organisation: str | None = None
    owner_pid: int | None = None  # the scanner's process on scanning_host
    owner_started: datetime | None = None  # when that process started (tells a reused pid)
    heartbeat_at: datetime | None = None  # the scanner's last sign of life
    end_reason: str | None = None  # why an aborted run ended


def run_row(run: ScanRun) -> RunRow:
    """The stored run as a RunRow (field by field, by name)."""
    return RunRow(**{f.name: getattr(run, f.name) for f in fields(RunRow)})


class Server(Base):
    """A CAS as named in an inventory; `name_key` is the casefolded name used for lookups."""

    __tablename__ = "servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    name_key: Mapped[str] = mapped_column(unique=True)
    first_seen_run_id: Mapped[int | None] = mapped_column(ForeignKey("scan_runs.id"))




class LaunchMethod(Base):
    """How the collector last reached PowerShell on a server (scanner.collect: "env" or
    "stdin"), so the next scan starts with what worked (docs/launch.md)."""

    __tablename__ = "launch_methods"
    __table_args__ = (CheckConstraint(_in("method", LAUNCH_METHODS), name="method"),)

    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True)
    method: Mapped[str] = mapped_column(String(16))
    learned_at: Mapped[datetime]


class RunContext(Base):
    """What a run's report read from other runs, kept when `prune` removed them: the
    report's Changes and trend as they were (JSON written and read by scanner/report),
    so that the run's reports regenerate byte for byte."""

    __tablename__ = "run_contexts"

    run_id: Mapped[int] = mapped_column(ForeignKey("scan_runs.id"), primary_key=True)
    body: Mapped[str] = mapped_column(Text)


class RunServer(Base):
    """A server in the planned scope of a run, whether or not it was reached."""

    __tablename__ = "run_servers"
    __table_args__ = (Index("ix_run_servers_server_id_run_id", "server_id", "run_id"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("scan_runs.id", ondelete="CASCADE"), primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id"), primary_key=True)
    position: Mapped[int]  # order in the inventory
    address: Mapped[str]
    inventory_site: Mapped[str | None]


class Document(Base):
    """A JSON document stored once per SHA-256 of its text and referred to by id.

    What stays the same from scan to scan (a server's build and paths, a protocol's
    config state, a finding's message and evidence) is stored here once, so the history
    grows with change, not with the number of scans. `kind` says what it describes:
    server | protocol | finding. `body` is the exact JSON text that was hashed.
    """

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)


class ServerScan(Base):
    """The result of scanning one server in one run (ok or error).

    What the scan found out about the server (address, site, build, paths, ...) is the
    `state` document; only what differs on every scan is a column here.
    """

    __tablename__ = "server_scans"
    __table_args__ = (
        UniqueConstraint("server_id", "run_id"),
        CheckConstraint(_in("scan_status", SCAN_STATUSES), name="scan_status"),
        Index("ix_server_scans_server_id_finished_at", "server_id", "finished_at"),
        Index("ix_server_scans_run_id", "run_id"),
        # PostgreSQL checks each document prune deletes against its referencing rows through
        # these (without: a scan of the table per document, 20 s for 553 documents of 36,000
        # scans). SQLite's prune turns that check off instead (retention.py): no index there.
        Index("ix_server_scans_state_id", "state_id").ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("scan_runs.id", ondelete="CASCADE"))
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id"))
    scan_status: Mapped[str] = mapped_column(String(16))
    error_kind: Mapped[str | None]
    error_message: Mapped[str | None]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    events_since: Mapped[datetime | None]
    site: Mapped[str | None]  # also in the state document; a column for site-level lookups
    state_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))


class ConfigBlob(Base):
    """A config file exactly as collected, stored once per SHA-256."""

    __tablename__ = "config_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]
    first_seen_at: Mapped[datetime]


class Observation(Base):
    """One protocol observed in one server scan; what was seen is the `state` document
    (config value and file, service), shared by every scan that saw the same."""

    __tablename__ = "observations"
    __table_args__ = (
        UniqueConstraint("server_scan_id", "protocol"),
        Index("ix_observations_state_id", "state_id").ddl_if(dialect="postgresql"),  # see ServerScan
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_scan_id: Mapped[int] = mapped_column(ForeignKey("server_scans.id", ondelete="CASCADE"))
    protocol: Mapped[str] = mapped_column(String(16))
    state_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))


class RefusedLogon(Base):
    """A refused cross-site logon (event 1008) reported with an observation."""

    __tablename__ = "refused_logons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    observation_id: Mapped[int] = mapped_column(ForeignKey("observations.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime | None]
    user_name: Mapped[str]
    mailbox_site: Mapped[str]
    cas: Mapped[str | None]  # the CAS the event's text names; null before revision 0006


class Finding(Base):
    """A finding of one run: the run, the server, and the finding document (rule,
    severity, state, message, evidence, first seen, waiver), shared by every run in
    which the finding was exactly the same."""

    __tablename__ = "findings"
    __table_args__ = (
        Index("ix_findings_server_id_run_id", "server_id", "run_id"),
        Index("ix_findings_body_id", "body_id").ddl_if(dialect="postgresql"),  # see ServerScan
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("scan_runs.id", ondelete="CASCADE"), index=True)
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id"))
    body_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    extra: Mapped[str | None] = mapped_column(Text)  # volatile evidence values (documents.py)


class ResolvedFinding(Base):
    """A finding of the previous run that no longer fires in this run."""

    __tablename__ = "resolved_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("scan_runs.id", ondelete="CASCADE"), index=True)
    rule: Mapped[str] = mapped_column(String(32))
    server_name: Mapped[str | None]
    protocol: Mapped[str | None] = mapped_column(String(16))


class SealEntry(Base):
    """One link of the history's seal chain (scanner/store/seal.py): a finished run, or a
    prune checkpoint, in the order they were sealed. `digest` is the SHA-256 of the
    canonical encoding of what the entry covers, `seal` the chain hash over the previous
    entry's seal and that digest. No foreign key: a pruned run's link stays."""

    __tablename__ = "seal_chain"
    __table_args__ = (CheckConstraint("kind IN ('run', 'checkpoint')", name="kind"),)

    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[int | None] = mapped_column(unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    seal: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime]
    body: Mapped[str | None] = mapped_column(Text)  # a checkpoint: what prune removed


class Change(Base):
    """One change `cas-audit fix apply` or `fix rollback` made (or tried) on one server's
    config file: who, under which ticket, the file's hash before and after, the backup the
    fix script kept beside the file, and the outcome (the script's status: done, already,
    changed, refused, failed, error, ...). Rows are written only with --yes."""

    __tablename__ = "changes"
    __table_args__ = (CheckConstraint("kind IN ('apply', 'rollback')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    operator: Mapped[str] = mapped_column(String(256))
    server_name: Mapped[str] = mapped_column(String(256), index=True)
    protocol: Mapped[str] = mapped_column(String(16))
    config_path: Mapped[str | None] = mapped_column(Text)
    before_sha256: Mapped[str | None] = mapped_column(String(64))
    after_sha256: Mapped[str | None] = mapped_column(String(64))
    found_sha256: Mapped[str | None] = mapped_column(String(64))  # the file's hash when the script ran
    backup_path: Mapped[str | None] = mapped_column(Text)
    restart: Mapped[str] = mapped_column(String(16))  # none | restarted | failed
    result: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(index=True)

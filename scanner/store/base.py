"""What every part of the `Store` shares: its engine, short transactions, server ids.

Every method of the store runs in its own short transaction and returns plain dataclasses
or `scanner.parse.observe` types, so a `Store` can be shared by the worker threads of a scan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scanner.errors import ExitCode, StoreError
from scanner.store.db import PG_RETENTION_LOCK_KEY, READ_ONLY_OPTION, mask_url, store_errors
from scanner.store.models import ScanRun, Server

CHUNK = 500
log = logging.getLogger(__name__)
T = TypeVar("T")


class UnknownRunError(StoreError):
    """The history has no scan run with the id asked for (a usage error)."""

    exit_code = ExitCode.USAGE


def utcnow() -> datetime:
    return datetime.now(UTC)


def heartbeat_clock(session: Session, clock: Callable[[], datetime] = utcnow) -> Any:
    """What a heartbeat is written with: the database server's clock on PostgreSQL (one
    clock for every scanner host, liveness.py), this host's (the store's `clock`) on SQLite
    (whose file has one)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.now()  # the time the transaction started, by the server's clock
    return clock()


def database_now(session: Session, clock: Callable[[], datetime] = utcnow) -> datetime:
    """The time on the clock heartbeats are written with (`heartbeat_clock`)."""
    if session.get_bind().dialect.name == "postgresql":
        moment = session.scalar(select(func.now()))
        if isinstance(moment, datetime) and moment.tzinfo is not None:
            return moment.astimezone(UTC)
    return clock()


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_ignoring_duplicates(session: Session, model: type, rows: list[dict[str, Any]], key: str) -> None:
    """INSERT rows, skipping any that collide with an existing row (safe with concurrent writers)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        dialect_insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        for chunk in chunks(rows):
            session.execute(dialect_insert(model).values(list(chunk)).on_conflict_do_nothing())
        return
    column = getattr(model, key)
    for row in rows:  # other backends: one savepoint per new row
        if session.scalar(select(column).where(column == row[key])) is not None:
            continue
        try:
            with session.begin_nested():
                session.execute(insert(model).values(**row))
        except IntegrityError:
            pass


class StoreBase:
    """The history database of one installation (one Engine, a session per call)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._clock = clock  # what "now" is when the store stamps a time (tests pass a fixed one)
        self._reader = engine.execution_options(**{READ_ONLY_OPTION: True})
        self.url_display: str = mask_url(engine.url)
        # casefolded name -> servers.id of servers known committed (rows are never deleted):
        # record_server then needs no lookup per server (bench/README.md, "CPU per server")
        self._server_id_cache: dict[str, int] = {}

    def _now(self) -> datetime:
        return self._clock()

    @contextmanager
    def _write(self, doing: str) -> Iterator[Session]:
        """A write transaction. On PostgreSQL it first takes the retention lock shared, so
        that no write overlaps prune's deletion (retention.py); SQLite's BEGIN IMMEDIATE
        already excludes it."""
        with store_errors(self._engine.url, doing):
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                if self._engine.dialect.name == "postgresql":
                    key = {"key": PG_RETENTION_LOCK_KEY}
                    if not session.scalar(text("SELECT pg_try_advisory_xact_lock_shared(:key)"), key):
                        log.warning("waiting for `cas-audit prune` to finish removing old runs from the history")
                        session.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), key)
                yield session

    @contextmanager
    def _read(self, doing: str) -> Iterator[Session]:
        with store_errors(self._engine.url, doing):
            with Session(self._reader) as session, session.begin():
                yield session

    def close(self) -> None:
        """Close the database connections."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _server_ids(self, session: Session, names: Iterable[str], run_id: int | None) -> dict[str, int]:
        """Ids of the servers `names` (by casefolded name), creating the missing ones."""
        by_key: dict[str, str] = {}
        for name in names:
            by_key.setdefault(name.casefold(), name)
        # sorted: concurrent transactions then take row locks in one order (no deadlock)
        known = self._known_server_ids(session, sorted(by_key))  # nearly all, from the second scan on
        missing = [key for key in sorted(by_key) if key not in known]
        if not missing:
            return known
        rows = [{"name": by_key[key], "name_key": key, "first_seen_run_id": run_id} for key in missing]
        insert_ignoring_duplicates(session, Server, rows, "name_key")
        return known | self._known_server_ids(session, missing)

    @staticmethod
    def _known_server_ids(session: Session, keys: Sequence[str]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for chunk in chunks(keys):
            for key, server_id in session.execute(select(Server.name_key, Server.id).where(Server.name_key.in_(chunk))):
                ids[key] = server_id
        return ids

    def _require_run(self, session: Session, run_id: int) -> ScanRun:
        run = session.get(ScanRun, run_id)
        if run is None:
            raise UnknownRunError(f"the history has no scan run {run_id}", hint="`cas-audit history` without --server lists the runs")
        return run

"""Opening the history database: URL, engine settings, schema upgrade, error translation."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from scanner.errors import ExitCode, StoreError
from scanner.util.paths import data_dir, user_data_folder

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

VERSION_TABLE = "cas_audit_schema_version"
# The newest revision in migrations/versions. Opening a history at head compares its version
# with this and needs neither Alembic nor the migration scripts (importing Alembic and loading
# the scripts cost ~0.25 s of CPU); tests/test_migrations.py checks that it is Alembic's head.
HEAD_REVISION = "0010"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10
# Key of the PostgreSQL advisory lock held while the schema is upgraded (any fixed bigint).
PG_UPGRADE_LOCK_KEY = 0x6361_7361_7564_6974  # "casaudit"
# Key of the PostgreSQL advisory lock of retention: every write transaction of the store
# holds it shared, prune's deletion exclusively (scanner/store/retention.py).
PG_RETENTION_LOCK_KEY = 0x6361_7370_7275_6E65  # "casprune"

# Execution option that lets a SQLite transaction start with a plain (deferred) BEGIN.
READ_ONLY_OPTION = "cas_audit_read_only"
# Execution option holding the message of a wait for a schema upgrade: a SQLite transaction
# begun with it waits for the write lock as long as it takes (an upgrade of a large history
# holds it for minutes), saying so once after UPGRADE_NOTICE_AFTER_S.
UPGRADE_WAIT_OPTION = "cas_audit_wait_for_upgrade"
UPGRADE_NOTICE_AFTER_S = 1.0

log = logging.getLogger(__name__)


class NoHistoryError(StoreError):
    """The database named is not a cas-audit history a reading command can use (exit 2)."""

    exit_code = ExitCode.USAGE


def default_url() -> str:
    """$CAS_AUDIT_DB, else a SQLite file in the user's data directory."""
    env = os.environ.get("CAS_AUDIT_DB", "").strip()
    if env:
        return env
    return f"sqlite:///{user_data_folder() / 'history.db'}"


def mask_url(url: str | URL) -> str:
    """The URL for messages and logs, with any password replaced by ***."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        if "@" not in url:
            return url
        scheme, sep, _rest = url.partition("://")
        return f"{scheme}{sep}***@{url.rsplit('@', 1)[1]}" if sep else f"***@{url.rsplit('@', 1)[1]}"


def parse_url(url: str) -> URL:
    """Parse a database URL; `postgresql://` and `postgres://` mean psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"not a database URL: {mask_url(url)}",
            hint="use e.g. sqlite:////var/lib/cas-audit/history.db or postgresql+psycopg://user@host/db",
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def migrations_dir() -> Path:
    """The Alembic script directory shipped with this installation."""
    try:
        return data_dir("migrations")
    except FileNotFoundError as exc:
        raise StoreError(str(exc), hint="reinstall cas-audit") from exc


def make_engine(url: str | URL | None = None) -> Engine:
    """An Engine for `url` (default_url() when None) with cas-audit's connection settings.

    SQLite: WAL, synchronous=NORMAL, a 30 s busy timeout, foreign keys on, and write
    transactions that begin with BEGIN IMMEDIATE. PostgreSQL: psycopg 3, pre-ping.
    """
    parsed = url if isinstance(url, URL) else parse_url(url if url is not None else default_url())
    shown = mask_url(parsed)
    kwargs: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif backend == "postgresql":
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in parsed.query and parsed.get_driver_name() in ("psycopg", "psycopg2"):
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        raise StoreError(
            f"unsupported database URL {shown}: no SQLAlchemy dialect {parsed.drivername!r}",
            hint="cas-audit is tested with sqlite:/// and postgresql+psycopg:// URLs",
        ) from exc
    except ImportError as exc:
        hint = "pip install 'cas-audit[postgresql]'" if backend == "postgresql" else None
        raise StoreError(f"the database driver for {shown} is not installed ({exc})", hint=hint) from exc
    except (ArgumentError, TypeError) as exc:
        raise StoreError(f"cannot use database URL {shown}: {exc}") from exc
    if backend == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            _set_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred BEGIN that reads and then writes fails at once under WAL (BUSY_SNAPSHOT);
        # IMMEDIATE takes the write lock up front and honours the busy timeout.
        options = conn.get_execution_options()
        if options.get(READ_ONLY_OPTION):
            conn.exec_driver_sql("BEGIN")
        elif options.get(UPGRADE_WAIT_OPTION):
            _begin_immediate_patiently(conn.connection.driver_connection, str(options[UPGRADE_WAIT_OPTION]))
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_immediate_patiently(driver: Any, notice: str) -> None:
    """BEGIN IMMEDIATE on a SQLite connection, waiting for the write lock without the busy
    timeout's limit; `notice` is logged once if it is not free within UPGRADE_NOTICE_AFTER_S
    (PostgreSQL waits on its advisory lock the same way, `upgrade`)."""
    driver.execute(f"PRAGMA busy_timeout = {int(UPGRADE_NOTICE_AFTER_S * 1000)}")
    told = False
    try:
        while True:
            try:
                driver.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
            if not told:
                log.warning(notice)
                told = True
    finally:
        driver.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def _set_wal(cursor: Any) -> None:
    """Switch a file database to WAL; retried, as the switch may report "locked" at once."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] in ("wal", "memory"):
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _driver_message(exc: BaseException, url: URL | None) -> str:
    """The first line of the underlying error, without SQL, parameters or the password."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    message = lines[0] if lines else type(orig).__name__
    message = message.split("[SQL:")[0].split("[parameters:")[0].strip() or type(orig).__name__
    if url is not None and url.password:
        message = message.replace(str(url.password), "***")
    return message


@contextmanager
def store_errors(url: URL, doing: str) -> Iterator[None]:
    """Turn driver, SQLAlchemy and Alembic errors raised in the block into a StoreError.

    `doing` completes "cannot ...", e.g. "record the scan of CAS01".
    """
    shown = mask_url(url)
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        if not isinstance(exc, SQLAlchemyError) and not _is_alembic_error(exc):
            raise
        raise StoreError(f"cannot {doing}: {_driver_message(exc, url)} (database {shown})") from exc


def _is_alembic_error(exc: BaseException) -> bool:
    """An Alembic CommandError (Alembic is imported only when a schema is upgraded: without
    it in sys.modules no such error can have been raised)."""
    errors = sys.modules.get("alembic.util.exc")
    return errors is not None and isinstance(exc, errors.CommandError)


def head_revision() -> str:
    """The newest schema revision this installation knows."""
    return HEAD_REVISION


_scripts_lock = threading.Lock()


@functools.cache
def _load_scripts(location: str) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(location)
    scripts.revision_map.heads  # load every revision once, here, under the lock  # noqa: B018
    return scripts


def script_directory() -> ScriptDirectory:
    """This installation's Alembic script directory, its revisions loaded once per process."""
    location = str(migrations_dir())
    with _scripts_lock:
        return _load_scripts(location)


def current_revision(connection: Connection) -> str | None:
    """The schema revision the database is at (None for an empty database), read as Alembic's
    MigrationContext.get_current_revision reads it: no version table or no row is None,
    more than one row is an error."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revisions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(revisions) > 1:
        raise StoreError(f"the history database's {VERSION_TABLE} holds more than one schema revision "
                         f"({', '.join(sorted(revisions))}): it was not written by cas-audit's upgrade")
    return revisions[0] if revisions else None


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config that runs our migrations, on `connection` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["version_table"] = VERSION_TABLE
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to head; a no-op when it is there. Safe for concurrent callers."""
    head = HEAD_REVISION
    with engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn:
        with conn.begin():
            current = current_revision(conn)
    if current == head:
        return
    scripts = script_directory()
    if current is not None and not _known_revision(scripts, current):
        raise StoreError(
            f"the history database {mask_url(engine.url)} has schema revision {current}, "
            "which this cas-audit does not know: it was written by a newer version",
            hint="upgrade cas-audit on this machine",
        )
    notice = _upgrade_notice(engine, current, head)
    with engine.connect().execution_options(**{UPGRADE_WAIT_OPTION: notice}) as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # SQLite batch migrations copy and drop tables; with foreign keys on, dropping
            # a parent table would cascade-delete the history. The pragma only takes
            # effect outside a transaction, so it goes to the driver connection directly.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
        try:
            # SQLite: BEGIN IMMEDIATE serialises concurrent upgraders, waiting as long as it takes
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    _pg_upgrade_lock(conn, notice, shared=False)
                if current_revision(conn) == head:
                    return
                _run_migrations(conn, scripts)
                if current is not None and current < SEAL_CHAIN_REVISION:
                    _seal_existing_runs(conn)
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise StoreError("the schema upgrade left rows that break a foreign key; nothing was changed")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]


def migration_options(dialect: str) -> dict[str, Any]:
    """The options of Alembic's migration context for a database of `dialect`
    (the same for `_run_migrations` and migrations/env.py)."""
    from scanner.store.models import Base

    return {"target_metadata": Base.metadata, "version_table": VERSION_TABLE,
            "render_as_batch": dialect == "sqlite", "compare_type": True}


def _run_migrations(conn: Connection, scripts: ScriptDirectory) -> None:
    """`alembic upgrade head` on `conn`, in its transaction: what alembic.command.upgrade does
    with migrations/env.py, but with the process's script directory (the scripts are not
    loaded again) and without running env.py."""
    from alembic.runtime.environment import EnvironmentContext

    def steps(revision: Any, _context: Any) -> Any:
        return scripts._upgrade_revs("head", revision)

    with EnvironmentContext(alembic_config(conn), scripts, fn=steps, destination_rev="head") as environment:
        environment.configure(connection=conn, **migration_options(conn.dialect.name))
        with environment.begin_transaction():
            environment.run_migrations()


SEAL_CHAIN_REVISION = "0009"  # the revision that added the seal chain (seal.py)


def _seal_existing_runs(conn: Connection) -> None:
    """An upgrade from before the seal chain: seal the runs that finished before it, in run
    id order, in the upgrade's transaction (docs/seal.md)."""
    from sqlalchemy.orm import Session

    from scanner.store.seal import seal_backlog

    with Session(bind=conn, join_transaction_mode="create_savepoint") as session:
        sealed = seal_backlog(session, datetime.now(UTC))
        session.commit()
    if sealed:
        log.warning("sealed the %d run(s) recorded before the seal chain existed", len(sealed))


def _upgrade_notice(engine: Engine, current: str | None, head: str | None) -> str:
    return (f"waiting for the schema upgrade of the history at {mask_url(engine.url)} "
            f"(revision {current or 'none'} to {head}) that another cas-audit process is running; "
            "a large history takes minutes")


def _pg_upgrade_lock(conn: Connection, notice: str, *, shared: bool) -> None:
    """Take the upgrade's advisory lock for the transaction (shared: only wait for an upgrade),
    logging `notice` when another process holds it."""
    kind = "_shared" if shared else ""
    key = {"key": PG_UPGRADE_LOCK_KEY}
    if not conn.execute(text(f"SELECT pg_try_advisory_xact_lock{kind}(:key)"), key).scalar():
        log.warning(notice)
        conn.execute(text(f"SELECT pg_advisory_xact_lock{kind}(:key)"), key)


def _wait_for_upgrade(engine: Engine, current: str | None, head: str | None) -> None:
    """For a command that only reads a history at an older revision: wait until no upgrade
    of its schema runs (an upgrader holds SQLite's write lock, or PostgreSQL's advisory lock,
    to the end). Nothing is written. A SQLite file this process may not write is not waited for."""
    notice = _upgrade_notice(engine, current, head)
    try:
        with engine.connect().execution_options(**{UPGRADE_WAIT_OPTION: notice}) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                _pg_upgrade_lock(conn, notice, shared=True)
    except SQLAlchemyError as exc:
        if engine.dialect.name != "sqlite":
            raise
        log.debug("not waiting for an upgrade of %s: %s", mask_url(engine.url), _driver_message(exc, engine.url))


def _known_revision(scripts: ScriptDirectory, revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return scripts.get_revision(revision) is not None
    except CommandError:
        return False


def prepare_sqlite_path(url: URL) -> None:
    """Create the folder of a SQLite database file."""
    if url.get_backend_name() != "sqlite":
        return
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("mode") == "memory":
        return
    folder = Path(database).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder {folder} for the history database: {exc.strerror}") from exc


def _sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (None for memory databases and file: URIs)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def _check_existing(engine: Engine, *, any_revision: bool = False) -> None:
    """For a command that only reads: the database must hold a cas-audit history at head
    (at any revision this cas-audit knows with `any_revision`).

    Nothing is created or upgraded: a missing or foreign database, or one at another
    schema revision, is a NoHistoryError (exit 2)."""
    shown = mask_url(engine.url)
    with engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn, conn.begin():
        tables = set(inspect(conn).get_table_names())
        if VERSION_TABLE not in tables:
            if tables:
                raise NoHistoryError(f"{shown} is not a cas-audit history (it holds other tables: "
                                     f"{', '.join(sorted(tables)[:5])})", hint="check --db or CAS_AUDIT_DB")
            raise NoHistoryError(f"no cas-audit history at {shown}",
                                 hint="check --db or CAS_AUDIT_DB, or run `cas-audit scan` first")
        current = current_revision(conn)
    if any_revision:
        return
    head = HEAD_REVISION
    if current != head and current is not None and _known_revision(script_directory(), current):
        _wait_for_upgrade(engine, current, head)  # an upgrade may be running: read what it leaves
        with engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn, conn.begin():
            current = current_revision(conn)
    if current != head:
        raise NoHistoryError(
            f"the cas-audit history at {shown} is at schema revision {current}, this cas-audit reads {head}",
            hint="run `cas-audit db upgrade` (a newer history needs a newer cas-audit)")


def _refuse_foreign(engine: Engine) -> None:
    """Never add our tables to a database that holds someone else's."""
    with engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn, conn.begin():
        tables = set(inspect(conn).get_table_names())
    if tables and VERSION_TABLE not in tables:
        raise NoHistoryError(
            f"{mask_url(engine.url)} is not a cas-audit history (it holds other tables: "
            f"{', '.join(sorted(tables)[:5])}); refusing to add cas-audit's tables to it",
            hint="give cas-audit a database of its own in --db or CAS_AUDIT_DB")


def _peek_sqlite(path: Path, url: URL, *, read_only: bool) -> None:
    """Look into an existing SQLite file without changing a byte of it (not even its
    journal mode) and refuse it if it is not a cas-audit history."""
    shown = mask_url(url)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the history database {shown}: {exc}",
                         hint="check the path in --db or CAS_AUDIT_DB") from None
    if VERSION_TABLE in tables:
        return
    if tables:
        raise NoHistoryError(f"{shown} is not a cas-audit history (it holds other tables: "
                             f"{', '.join(sorted(tables)[:5])}); cas-audit leaves it alone",
                             hint="give cas-audit a database of its own in --db or CAS_AUDIT_DB")
    if read_only:
        raise NoHistoryError(f"no cas-audit history at {shown} (the file is empty)",
                             hint="run `cas-audit scan` first")


def open_engine(url: str | None = None, *, read_only: bool = False, create: bool = True) -> Engine:
    """An Engine on `url` whose schema is at head; errors become StoreError.

    With `read_only` (report, history, diff, evidence) nothing is created or upgraded:
    a missing database, a foreign one, or one at another schema revision is refused.
    Without `create` (prune --apply) an older schema is upgraded, but a database that
    holds no cas-audit history is refused as with `read_only`: nothing is created."""
    parsed = parse_url(url if url is not None else default_url())
    sqlite_file = _sqlite_file(parsed)
    must_exist = read_only or not create
    if must_exist and sqlite_file is not None and not sqlite_file.is_file():
        raise NoHistoryError(f"no cas-audit history at {mask_url(parsed)}",
                             hint="check --db or CAS_AUDIT_DB, or run `cas-audit scan` first")
    if sqlite_file is not None and sqlite_file.is_file():
        _peek_sqlite(sqlite_file, parsed, read_only=must_exist)
    if not must_exist:
        prepare_sqlite_path(parsed)
    engine = make_engine(parsed)
    try:
        try:
            engine.connect().close()
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open the history database {mask_url(parsed)}: {_driver_message(exc, parsed)}",
                hint="check the path in --db or CAS_AUDIT_DB and that you may write to it"
                if parsed.get_backend_name() == "sqlite"
                else "check --db or CAS_AUDIT_DB, that the database server is reachable and the database exists",
            ) from exc
        if read_only:
            with store_errors(parsed, "read the schema of the history database"):
                _check_existing(engine)
        else:
            if not create:
                with store_errors(parsed, "read the schema of the history database"):
                    _check_existing(engine, any_revision=True)
            with store_errors(parsed, "upgrade the schema of the history database"):
                _refuse_foreign(engine)
                upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def upgrade_database(url: str | None) -> str:
    """Upgrade the database at `url` (default_url() when None) to head; returns the masked URL."""
    engine = open_engine(url)
    try:
        return mask_url(engine.url)
    finally:
        engine.dispose()

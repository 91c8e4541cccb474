"""Issue 14: while one process upgrades the history's schema (minutes for a large
history), every other command waits for it and says so, on SQLite as on PostgreSQL,
instead of failing with "database is locked" after SQLite's busy timeout (writers) or
calling the history too old (readers).

The upgrade is the real one (Alembic running this installation's revisions) in a
transaction the test holds open, with the lock `scanner.store.db.upgrade` takes; the other
command is the real `cas-audit` command line on another connection of its own (in this
process, on a thread: the lock is the database's, whichever process holds it)."""

from __future__ import annotations

import logging
import queue
import subprocess
import threading

import pytest
from alembic import command
from labfleet import cas_audit_here
from sqlalchemy import text
from test_migration_documents import _old_history

from scanner.store.db import PG_UPGRADE_LOCK_KEY, alembic_config, head_revision, make_engine

pytestmark = pytest.mark.slow  # real schema upgrades and a command that waits for them


def first_line(stream: object, timeout: float) -> str | None:
    """The first line of `stream` within `timeout` seconds (None: nothing came)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()  # type: ignore[attr-defined]
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


class _Heard(logging.Handler):
    """Sets `said` when the "scanner" logger says it waits for the schema upgrade."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.said = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for the schema upgrade of the history" in record.getMessage():
            self.said.set()


def _run_into(ended: list[subprocess.CompletedProcess[str] | BaseException], args: tuple[str, ...], db: str) -> None:
    try:
        ended.append(cas_audit_here(*args, password=None, db=db))
    except BaseException as exc:
        ended.append(exc)


@pytest.mark.parametrize("args", [("history",), ("db", "upgrade")], ids=["reader", "writer"])
def test_a_command_waits_for_an_upgrade_another_connection_runs(store_url: str, args: tuple[str, ...]) -> None:
    """The other command runs in this process, on a thread, with its own engine: what it waits
    for is the database's lock (SQLite's write lock, PostgreSQL's advisory lock), which another
    process holds the same way."""
    _old_history(store_url)  # revision 0002, two runs
    engine = make_engine(store_url)
    heard = _Heard()
    logging.getLogger("scanner").addHandler(heard)
    ended: list[subprocess.CompletedProcess[str] | BaseException] = []
    other = threading.Thread(target=_run_into, args=(ended, args, store_url), daemon=True)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
            with conn.begin():  # SQLite: BEGIN IMMEDIATE, the write lock, held to the end
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_UPGRADE_LOCK_KEY})
                command.upgrade(alembic_config(conn), "head")
                other.start()
                assert heard.said.wait(timeout=20), ended
                assert other.is_alive()  # still waiting, not failed
            # the upgrade commits: the waiting command goes on
        other.join(60)
        assert ended, "the command did not go on within 60 s of the upgrade's commit"
        (done,) = ended
        if isinstance(done, BaseException):
            raise done
        assert done.returncode == 0, done.stderr
        assert "waiting for the schema upgrade of the history" in done.stderr.splitlines()[0], done.stderr
        if args == ("history",):
            assert [line.split()[1] for line in done.stdout.splitlines()
                    if line.strip("│ ")[:2] in ("1 ", "2 ")] == ["2", "1"]
        else:
            assert "is at the current schema" in done.stdout + done.stderr
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM cas_audit_schema_version")).scalar() == head_revision()
    finally:
        logging.getLogger("scanner").removeHandler(heard)
        engine.dispose()

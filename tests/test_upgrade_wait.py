"""Issue 14: while one process upgrades the history's schema (minutes for a large
history), every other command waits for it and says so, on SQLite as on PostgreSQL,
instead of failing with "database is locked" after SQLite's busy timeout (writers) or
calling the history too old (readers).

The upgrade is the real one (Alembic running this installation's revisions) in a
transaction the test holds open, with the lock `scanner.store.db.upgrade` takes; the other
command is a real `cas-audit` process."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading

import pytest
from alembic import command
from sqlalchemy import text
from test_migration_documents import _old_history

from scanner.store.db import PG_UPGRADE_LOCK_KEY, alembic_config, head_revision, make_engine

pytestmark = pytest.mark.slow  # cas-audit processes


def first_line(stream: object, timeout: float) -> str | None:
    """The first line of `stream` within `timeout` seconds (None: nothing came)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()  # type: ignore[attr-defined]
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


@pytest.mark.parametrize("args", [("history",), ("db", "upgrade")], ids=["reader", "writer"])
def test_a_command_waits_for_an_upgrade_another_process_runs(store_url: str, args: tuple[str, ...]) -> None:
    _old_history(store_url)  # revision 0002, two runs
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    env["CAS_AUDIT_DB"] = store_url
    engine = make_engine(store_url)
    other: subprocess.Popen[str] | None = None
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
            with conn.begin():  # SQLite: BEGIN IMMEDIATE, the write lock, held to the end
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_UPGRADE_LOCK_KEY})
                command.upgrade(alembic_config(conn), "head")
                other = subprocess.Popen([sys.executable, "-m", "scanner", *args], env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
                said = first_line(other.stderr, timeout=20)
                assert said is not None and "waiting for the schema upgrade of the history" in said, said
                assert other.poll() is None  # still waiting, not failed
            # the upgrade commits: the waiting command goes on
        out, err = other.communicate(timeout=60)
        assert other.returncode == 0, err
        if args == ("history",):
            assert [line.split()[1] for line in out.splitlines() if line.strip("│ ")[:2] in ("1 ", "2 ")] == ["2", "1"]
        else:
            assert "is at the current schema" in out + err
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM cas_audit_schema_version")).scalar() == head_revision()
    finally:
        if other is not None and other.poll() is None:
            other.kill()
            other.wait()
        engine.dispose()

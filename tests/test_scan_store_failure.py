"""A scan whose history fails after its run was recorded never leaves that run `running`:
the failure ends the run as aborted, with the reason, and stops the scan's threads."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scanner.errors import StoreError
from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy
from scanner.scan import run_scan
from scanner.store.repo import open_store

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
INVENTORY = """
[defaults]
username = 'CONTOSO\\\\auditor'
auth = "basic"
scheme = "http"
port = 5985
allow_insecure = true

[[server]]
name = "CAS01"
address = "127.0.0.1"
site = "Berlin"
"""


def test_a_store_error_after_the_run_began_records_it_aborted(tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "inventory.toml").write_text(INVENTORY, encoding="utf-8")
    inventory = load_inventory(tmp_path / "inventory.toml")
    open_store(sqlite_url).close()  # a current history ...
    with sqlite3.connect(tmp_path / "history.db") as db:  # ... then damaged: one table gone
        db.execute("DROP TABLE launch_methods")
    before = set(threading.enumerate())
    with open_store(sqlite_url) as store:
        with pytest.raises(StoreError, match="launch methods"):
            run_scan(inventory, store=store, password="x", policy=Policy.default(), catalog=load_catalog(),
                     timeout_s=5, clock=lambda: T0)
        [run] = store.runs()
    assert run.status == "aborted"
    assert run.end_reason == "the scan stopped on an error (StoreError)"
    assert (run.started_at, run.finished_at) == (T0, T0)  # the scan's clock
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []

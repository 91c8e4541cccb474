"""Issue 9, part 3: storage grows with change, not with time. 100 servers scanned 30 times
through the lab into SQLite take at most 1,000 bytes per server scan, measured as the
database's pages (page_count x page_size) after VACUUM; the issue measured 2,350 before
scans and findings were stored as shared documents. bench/README.md records the figure."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from labfleet import many_servers

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy
from scanner.lab.serve import Lab
from scanner.scan import run_scan
from scanner.store.repo import open_store

SERVERS, SCANS = 100, 30
SITES = ("Berlin", "Hamburg", "Munich", "Vienna")


def database_bytes(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        return int(conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
def test_thirty_scans_of_a_hundred_servers_stay_under_1000_bytes_each(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    store = open_store(f"sqlite:///{db}")
    catalog, policy = load_catalog(), Policy.default()
    first = datetime(2026, 12, 1, 2, tzinfo=UTC)
    with Lab(many_servers(SERVERS, SITES, "127.0.10.1")) as lab:
        lab.write_inventory(tmp_path / "inventory.toml")
        inventory = load_inventory(tmp_path / "inventory.toml")
        runs = []
        for day in range(SCANS):
            outcome = run_scan(inventory, store=store, password="lab-password", policy=policy, catalog=catalog,
                               concurrency=8, timeout_s=30, started_at=first + timedelta(days=day))
            assert (outcome.status, outcome.scanned) == ("complete", SERVERS)
            runs.append(outcome.run_id)
    first_findings = len(store.findings(runs[0]))
    store.close()
    assert first_findings >= SERVERS  # the first scan reports every server's refused logons (XS-010)
    per_scan = database_bytes(db) / (SERVERS * SCANS)
    assert per_scan <= 1000, f"{per_scan:.0f} bytes per server scan"

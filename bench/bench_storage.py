"""Bytes per server scan of real lab scans into SQLite (issue 9: at most 1,000).

The built-in demo organisation (nine servers, each with its story: hand edits, a missing
file, refused logons, an unreachable server, ...) copied to SERVERS servers on loopback,
scanned SCANS times (one a day, NTLM) with the default policy, then VACUUMed; prints the
database's pages (page_count x page_size) per server scan and the share of every table
and index (SQLite's dbstat).

    .venv/bin/python bench/bench_storage.py 100 30 /tmp/storage.db
"""

from __future__ import annotations

import sqlite3
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from labfleet import demo_fleet

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy
from scanner.lab.fleet_model import server_addresses
from scanner.lab.serve import Lab
from scanner.scan import run_scan
from scanner.store.repo import open_store


def main() -> None:
    servers, scans, db = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    base = demo_fleet("127.0.7.1")
    addresses = server_addresses("127.0.7.1", servers)
    fleet = replace(base, servers=tuple(
        replace(base.servers[i % len(base.servers)], name=f"{base.servers[i % len(base.servers)].name}-{i:03d}",
                address=addresses[i], computer="")
        for i in range(servers)))
    db.unlink(missing_ok=True)
    store = open_store(f"sqlite:///{db}")
    catalog, policy = load_catalog(), Policy.default()
    with Lab(fleet) as lab:
        lab.write_inventory(db.with_suffix(".inventory.toml"))
        inventory = load_inventory(db.with_suffix(".inventory.toml"))
        first = datetime(2027, 1, 1, tzinfo=UTC)
        for day in range(scans):
            started = time.perf_counter()
            outcome = run_scan(inventory, store=store, password="lab-password", policy=policy, catalog=catalog,
                               concurrency=8, timeout_s=30, started_at=first + timedelta(days=day))
            print(f"scan {day + 1}: {outcome.status}, {outcome.scanned} scanned, {outcome.failed} failed, "
                  f"{time.perf_counter() - started:.2f} s", flush=True)
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("VACUUM")
    total = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    print(f"total {total} bytes after VACUUM: {total / (servers * scans):.0f} bytes per server scan")
    for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"):
        print(f"  {name:48s} {size:10d} {size / (servers * scans):8.1f}")


if __name__ == "__main__":
    main()

"""Bytes per server scan of 30 real lab scans of 100 clean servers into SQLite (issue 9,
part 3: at most 1,000). Was tests/test_storage_growth.py (45 s, the suite's slowest test);
the suite now checks the same bound at the store level with real lab observations
(tests/test_storage_growth.py), and this script keeps the whole path measured:

    .venv/bin/python bench/bench_storage_growth.py [SERVERS SCANS]

Prints the figure and the time, exits 1 above 1,000 bytes. Figures: bench/README.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from labfleet import database_bytes, many_servers

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy
from scanner.lab.serve import Lab
from scanner.scan import run_scan
from scanner.store.repo import open_store

SITES = ("Berlin", "Hamburg", "Munich", "Vienna")
LIMIT = 1000


def main() -> int:
    servers, scans = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (100, 30)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "history.db"
        store = open_store(f"sqlite:///{db}")
        catalog, policy = load_catalog(), Policy.default()
        first = datetime(2026, 12, 1, 2, tzinfo=UTC)
        with Lab(many_servers(servers, SITES, "127.0.10.1")) as lab:
            lab.write_inventory(Path(folder) / "inventory.toml")
            inventory = load_inventory(Path(folder) / "inventory.toml")
            runs = []
            for day in range(scans):
                outcome = run_scan(inventory, store=store, password="lab-password", policy=policy, catalog=catalog,
                                   concurrency=8, timeout_s=30, started_at=first + timedelta(days=day))
                if (outcome.status, outcome.scanned) != ("complete", servers):
                    print(f"scan {day + 1}: {outcome.status}, {outcome.scanned} of {servers} scanned")
                    return 1
                runs.append(outcome.run_id)
        first_findings = len(store.findings(runs[0]))
        store.close()
        per_scan = database_bytes(db) / (servers * scans)
    print(f"{servers} servers x {scans} lab scans: {per_scan:.0f} bytes per server scan "
          f"(limit {LIMIT}); first run's findings {first_findings}; {time.perf_counter() - started:.1f} s")
    return 0 if per_scan <= LIMIT and first_findings >= servers else 1


if __name__ == "__main__":
    sys.exit(main())

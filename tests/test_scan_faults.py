"""Every way a server can fail is one failed server with a one-word reason, never a stuck
or crashed scan: the per-server wall-clock limit holds, and the healthy server is scanned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labfleet import cas_audit, cas_audit_here

from scanner.lab.fleet import load_fleet
from scanner.lab.serve import Lab
from scanner.store.repo import open_store

pytestmark = pytest.mark.slow  # a lab of eleven failing servers and a scan subprocess that waits out the limit

HERE = Path(__file__).parent / "fleets"
EXPECTED_KIND = {
    "F01": "refused",       # nothing listening
    "F02": "timeout",       # accepts, never answers
    "F03": "reset",         # connection reset
    "F04": "auth",          # credentials rejected
    "F05": "soap-fault",    # Create refused with a WS-Management fault
    "F06": "timeout",       # answers far too slowly
    "F07": "output",        # not the collector's document
    "F08": "output",        # document cut off, no end marker
    "F09": "output",        # 20 MiB of output: refused by size
    "F10": "script-error",  # PowerShell error, exit code 1
}
TIMEOUT_S = 10  # F09 streams 8 MiB through the scanner within it, while the other xdist workers run (6 s missed at load 14)


def test_each_fault_fails_only_its_server_within_the_time_limit(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'history.db'}"
    with Lab(load_fleet(HERE / "faults.toml")) as lab:
        lab.write_inventory(tmp_path / "inventory.toml")
        scan = cas_audit("scan", "--inventory", str(tmp_path / "inventory.toml"),
                         "--timeout", str(TIMEOUT_S), "--concurrency", "11", db=db)
    assert scan.returncode == 3, scan.stderr
    with open_store(db) as store:
        run_id = store.latest_run_id()
        assert run_id is not None
        results = {obs.name: obs for obs in store.server_observations(run_id)}
    took = {name: (obs.finished_at - obs.started_at).total_seconds() for name, obs in results.items()}
    # F02 never answers and F06 answers after a minute: each is cut off by the per-server limit
    # (as the scanner itself timed it, so the load of the machine on starting processes is not
    # counted), well before their answer, and both were in flight at once (all servers at once)
    for name in ("F02", "F06"):
        assert took[name] < TIMEOUT_S + 6, (name, took[name])
    assert results["F02"].started_at < results["F06"].finished_at
    assert results["F06"].started_at < results["F02"].finished_at
    report = json.loads(cas_audit_here("report", "--format", "json", db=db).stdout)  # only read
    servers = {s["name"]: s for s in report["servers"]}
    assert servers["F11"]["scan_status"] == "ok"
    for name, kind in EXPECTED_KIND.items():
        assert servers[name]["scan_status"] == "error", name
        assert servers[name]["error"].split(":")[0] == kind, (name, servers[name]["error"])
        assert len(servers[name]["error"]) < 400, name  # one sentence, not the server's output
    unscanned = {f["server"] for f in report["findings"] if f["rule"] == "XS-011"}
    assert unscanned == set(EXPECTED_KIND)
    assert "lab-password" not in json.dumps(report) + scan.stderr

"""Every way a server can fail is one failed server with a one-word reason, never a stuck
or crashed scan: the per-server wall-clock limit holds, and the healthy server is scanned."""

from __future__ import annotations

import json
import time
from pathlib import Path

from labfleet import cas_audit

from scanner.lab.fleet import load_fleet
from scanner.lab.serve import Lab

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
TIMEOUT_S = 4


def test_each_fault_fails_only_its_server_within_the_time_limit(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'history.db'}"
    with Lab(load_fleet(HERE / "faults.toml")) as lab:
        lab.write_inventory(tmp_path / "inventory.toml")
        started = time.monotonic()
        scan = cas_audit("scan", "--inventory", str(tmp_path / "inventory.toml"),
                         "--timeout", str(TIMEOUT_S), "--concurrency", "11", db=db)
        elapsed = time.monotonic() - started
    assert scan.returncode == 3, scan.stderr
    # all servers at once: the slowest is bounded by the per-server limit, plus start-up
    assert elapsed < TIMEOUT_S + 6, elapsed
    report = json.loads(cas_audit("report", "--format", "json", db=db).stdout)
    servers = {s["name"]: s for s in report["servers"]}
    assert servers["F11"]["scan_status"] == "ok"
    for name, kind in EXPECTED_KIND.items():
        assert servers[name]["scan_status"] == "error", name
        assert servers[name]["error"].split(":")[0] == kind, (name, servers[name]["error"])
        assert len(servers[name]["error"]) < 400, name  # one sentence, not the server's output
    unscanned = {f["server"] for f in report["findings"] if f["rule"] == "XS-011"}
    assert unscanned == set(EXPECTED_KIND)
    assert "lab-password" not in json.dumps(report) + scan.stderr

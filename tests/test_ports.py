"""An inventory without `port` reaches WinRM 1.1 hosts on 80 and WinRM 2.0 hosts on 5985
(443/5986 for https): 2.0's port first, 1.1's only after that connection was refused, in
the scan and in preflight. The lab binds the real ports on distinct loopback addresses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w
from labfleet import cas_audit_here as cas_audit
from labfleet import running

from scanner.inventory import load_inventory
from scanner.lab.fleet import load_fleet

FLEET = Path(__file__).parent / "fleets" / "default_ports.toml"


def test_without_port_the_candidates_are_winrm_2_then_1_1(tmp_path: Path) -> None:
    path = tmp_path / "inv.toml"
    path.write_text(tomli_w.dumps({
        "defaults": {"username": "CONTOSO\\auditor", "auth": "ntlm"},
        "server": [{"name": "A", "scheme": "http"}, {"name": "B"}, {"name": "C", "port": 8080},
                   {"name": "D", "scheme": "http", "port": 5985}],
    }), encoding="utf-8")
    targets = {t.name: t for t in load_inventory(path).targets}
    assert targets["A"].candidate_ports == (5985, 80) and targets["A"].endpoint.endswith(":5985/wsman")
    assert targets["B"].candidate_ports == (5986, 443)
    assert targets["C"].candidate_ports == (8080,)
    assert targets["D"].candidate_ports == (5985,)  # a port given is the only one tried


@pytest.mark.slow
def test_scan_and_preflight_find_port_80_and_5985(tmp_path: Path) -> None:
    fleet = load_fleet(FLEET)
    with running(fleet, tmp_path) as (lab, _):
        assert (lab.port("OLD"), lab.port("NEW")) == (80, 5985)
        inventory = tmp_path / "noport.toml"
        inventory.write_text(tomli_w.dumps({
            "defaults": {"username": "CONTOSO\\auditor", "auth": "ntlm", "scheme": "http"},
            "server": [{"name": s.name, "address": s.address, "site": s.site} for s in fleet.servers],
        }), encoding="utf-8")
        pinned = tmp_path / "port80.toml"
        pinned.write_text(tomli_w.dumps({
            "defaults": {"username": "CONTOSO\\auditor", "auth": "ntlm", "scheme": "http", "port": 80},
            "server": [{"name": "OLD", "address": fleet.server("OLD").address}],
        }), encoding="utf-8")
        known = cas_audit("scan", "--inventory", str(pinned), db=f"sqlite:///{tmp_path / 'pinned.db'}")
        assert known.returncode in (0, 1), known.stderr
        with_port = lab.stats("OLD").requests
        lab.servers["OLD"].reset_stats()
        db = f"sqlite:///{tmp_path / 'h.db'}"
        scan = cas_audit("scan", "--inventory", str(inventory), db=db)
        without_port = lab.stats("OLD").requests
        check = cas_audit("preflight", "--inventory", str(inventory), "--format", "json")
    assert scan.returncode in (0, 1), scan.stderr
    report = json.loads(cas_audit("report", "--format", "json", db=db).stdout)
    assert {s["name"]: s["scan_status"] for s in report["servers"]} == {"OLD": "ok", "NEW": "ok"}
    # the refused connection to 5985 costs no HTTP request: as many as with port = 80 given
    assert without_port == with_port > 0
    assert check.returncode == 0, check.stdout + check.stderr
    servers = {s["name"]: s for s in json.loads(check.stdout)["servers"]}
    assert (servers["OLD"]["port"], servers["OLD"]["winrm"]) == (80, "1.1")
    assert (servers["NEW"]["port"], servers["NEW"]["winrm"]) == (5985, "2.0")

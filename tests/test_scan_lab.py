"""Issue 2 end to end: the demo organisation scanned over real WinRM (Basic and NTLM with
encryption) by the real command line (click's, in this process: nothing here is about the
process), and the JSON report checked against the fleet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labfleet import cas_audit_here, demo_fleet, running

pytestmark = pytest.mark.slow  # scans of a running lab organisation

# What the fleet file (scanner/lab/fleets/demo.toml) describes, per server and protocol:
# (allow_cross_site, value_source, config_status, raw_value, service, start_mode, pending_restart)
EXPECTED = {
    "CAS01": {"pop3": (False, "file", "ok", "false", "Running", "Auto", False),
              "imap4": (False, "file", "ok", "false", "Running", "Auto", False)},
    "CAS02": {"pop3": (False, "file", "ok", "False", "Running", "Auto", False),   # UTF-16 LE, German path
              "imap4": (False, "default", "ok", None, "Running", "Auto", False)},  # no key at all
    "CAS03": {"pop3": (True, "file", "ok", "true", "Running", "Auto", False),     # key twice, other case
              "imap4": (False, "file", "ok", "false", "Running", "Auto", False)},
    "CAS04": {"pop3": (None, "file", "malformed", None, "Running", "Auto", False),
              "imap4": (False, "file", "ok", "false", "Stopped", "Manual", False)},
    "CAS05": {"pop3": (True, "file", "ok", "true", "Running", "Auto", False),
              "imap4": (True, "file", "ok", "true", "Running", "Auto", False)},
    "CAS06": {"pop3": (True, "file", "ok", "true", "Running", "Auto", False),
              "imap4": (True, "file", "ok", "true", "Running", "Auto", True)},     # written after start
    "CAS07": {"pop3": (False, "file", "ok", "false", "Running", "Auto", False),
              "imap4": (False, "file", "ok", "false", "Running", "Auto", False)},
    "CAS09": {"pop3": (None, "file", "invalid-value", "yes", "Running", "Auto", False),
              "imap4": (None, "file", "missing", None, "Running", "Auto", False)},
}
SITES = {"CAS01": "Berlin", "CAS02": "Berlin", "CAS03": "Berlin", "CAS04": "Berlin", "CAS09": "Berlin",
         "CAS05": "Hamburg", "CAS06": "Hamburg", "CAS07": "Hamburg", "CAS08": "Hamburg"}
BUILDS = {"CAS01": ("8.3.517.0", "SP3", "RU23"), "CAS03": ("8.2.176.2", "SP2", None),
          "CAS05": ("8.1.240.6", "SP1", None), "CAS02": ("8.3.83.6", "SP3", None)}
REFUSED = {("CAS01", "pop3"): 2, ("CAS07", "pop3"): 1, ("CAS07", "imap4"): 3}
# Requests per server for one collection: Create, Command, Receive, Delete; NTLM adds the
# three requests of the handshake on the fresh connection.
REQUESTS = {"basic": 4, "ntlm": 7}


@pytest.mark.parametrize(("auth", "base"), [("basic", "127.0.6.1"), ("ntlm", "127.0.7.1")])
def test_scan_reports_what_every_server_really_does(tmp_path: Path, auth: str, base: str) -> None:
    db = f"sqlite:///{tmp_path / 'history.db'}"
    with running(demo_fleet(base, auth), tmp_path) as (lab, inventory):
        scan = cas_audit_here("scan", "--inventory", str(inventory), db=db)
        stats = {name: lab.stats(name) for name in SITES if name != "CAS08"}
    assert scan.returncode == 3, scan.stderr  # CAS08 refused connections: 3 wins over 1
    assert "8 scanned, 1 failed" in scan.stderr
    assert "lab-password" not in scan.stdout + scan.stderr

    report = cas_audit_here("report", "--format", "json", db=db)
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["run"]["status"] == "partial"
    assert (data["run"]["servers_planned"], data["run"]["servers_scanned"]) == (9, 8)
    servers = {s["name"]: s for s in data["servers"]}
    assert set(servers) == set(SITES)
    for name, site in SITES.items():
        assert servers[name]["site"] == site
    unreachable = servers["CAS08"]
    assert unreachable["scan_status"] == "error" and unreachable["error"].startswith("refused")
    assert unreachable["protocols"] == {}
    for name, build in BUILDS.items():
        s = servers[name]
        assert (s["build"], s["service_pack"], s["rollup"]) == build
    for name, protocols in EXPECTED.items():
        assert servers[name]["scan_status"] == "ok"
        for protocol, expected in protocols.items():
            p = servers[name]["protocols"][protocol]
            got = (p["allow_cross_site"], p["value_source"], p["config_status"], p["raw_value"],
                   p["service"], p["start_mode"], p["pending_restart"])
            assert got == expected, (name, protocol)
            assert p["refused_logons"] == REFUSED.get((name, protocol), 0), (name, protocol)
            if p["config_status"] != "missing":
                assert len(p["config_sha256"]) == 64 and p["config_modified"].endswith("Z")
    assert servers["CAS04"]["protocols"]["imap4"]["service_started"] is None

    findings = {(f["rule"], f["server"], f["protocol"]) for f in data["findings"]}
    assert ("XS-011", "CAS08", None) in findings
    assert ("XS-006", "CAS04", "pop3") in findings and ("XS-006", "CAS09", "imap4") in findings
    assert ("XS-001", "CAS03", "pop3") in findings  # default policy forbids it everywhere
    assert ("XS-001", "CAS06", "imap4") in findings

    for name, stat in stats.items():
        assert stat.requests == REQUESTS[auth], (name, stat.requests, dict(stat.actions))
        assert stat.shells_created == 1 and stat.shells_open == 0, name


def test_scan_without_password_is_a_usage_error(tmp_path: Path) -> None:
    with running(demo_fleet("127.0.8.1", "ntlm"), tmp_path) as (_lab, inventory):
        result = cas_audit_here("scan", "--inventory", str(inventory), password=None,
                                db=f"sqlite:///{tmp_path / 'h.db'}")
    assert result.returncode == 2
    assert "CAS_AUDIT_PASSWORD" in result.stderr


def test_wrong_password_is_reported_per_server_not_as_a_crash(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    with running(demo_fleet("127.0.9.1", "basic"), tmp_path) as (_lab, inventory):
        result = cas_audit_here("scan", "--inventory", str(inventory), password="wrong", db=db)
    assert result.returncode == 3
    data = json.loads(cas_audit_here("report", "--format", "json", db=db).stdout)
    kinds = {s["name"]: (s["error"] or "").split(":")[0] for s in data["servers"]}
    assert kinds["CAS01"] == "auth" and kinds["CAS08"] == "refused"
    assert "wrong" not in json.dumps(data)


def test_passwords_are_per_account(tmp_path: Path) -> None:
    """A password given for another account is not used: the server fails with 'auth'."""
    from scanner.inventory import load_inventory
    from scanner.judge.catalog import load_catalog
    from scanner.judge.policy import Policy
    from scanner.scan import run_scan
    from scanner.store.repo import open_store

    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    with running(demo_fleet("127.0.10.1", "basic"), tmp_path) as (_lab, inventory_path):
        inventory = load_inventory(inventory_path)
        kwargs = {"store": store, "policy": Policy.default(), "catalog": load_catalog(), "timeout_s": 20}
        good = run_scan(inventory, password={"CONTOSO\\auditor": "lab-password"}, **kwargs)
        other = run_scan(inventory, password={"CONTOSO\\someone": "lab-password"}, **kwargs)
    assert (good.scanned, good.failed) == (8, 1)
    assert (other.scanned, other.failed) == (0, 9)
    kinds = {o.name: o.error_kind for o in store.server_observations(other.run_id)}
    assert kinds["CAS01"] == "auth" and kinds["CAS08"] == "auth"

"""`cas-audit fix apply --restart now|none` end to end against the lab (real pywinrm over
HTTP, a real SQLite history, the real command line): with `none` the file is written but
the running service still has the old value, so the next scan reports XS-005 (pending
restart); the plan of that scan is a restart only, and `--restart now` restarts the
service: its process start time moves to after the write, and the next scan no longer
reports XS-005."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner
from labfleet import demo_fleet

from scanner.cli import cli
from scanner.lab.serve import Lab, demo_fleet_path

POLICY = demo_fleet_path().with_name("demo-policy.toml")
SERVER = "CAS03"  # POP3 at true with an expired waiver: XS-001 active, the service running


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"CAS_AUDIT_PASSWORD": "lab-password",
                                                      "CAS_AUDIT_FIX_PASSWORD": "fix-password"})
    return result.exit_code, result.output


def _active(url: str, run: str = "latest") -> set[tuple[str, str, str]]:
    code, out = _cli("report", "--db", url, "--run", run, "--format", "json")
    assert code == 0, out
    document = json.loads(out)
    return {(f["rule"], f["server"], f.get("protocol") or "") for f in document["findings"]
            if f["state"] in ("new", "persisting", "waiver-expired")}


def test_restart_none_leaves_xs005_and_restart_now_clears_it(tmp_path: Path) -> None:
    fleet = demo_fleet("127.0.171.1", "basic")
    fleet = replace(fleet, servers=(fleet.server(SERVER),))
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with Lab(fleet) as lab:
        inventory = tmp_path / "inventory.toml"
        lab.write_inventory(inventory)

        def scan() -> set[tuple[str, str, str]]:
            code, out = _cli("scan", "--inventory", str(inventory), "--db", url, "--policy", str(POLICY))
            assert code in (0, 1), out
            return _active(url)

        first = scan()
        assert ("XS-001", SERVER, "pop3") in first and ("XS-005", SERVER, "pop3") not in first
        started = lab.hosts[SERVER].server.protocols["pop3"].started
        code, out = _cli("fix", "plan", "--db", url, "--out", str(tmp_path / "edit"))
        assert code == 0, out
        code, out = _cli("fix", "apply", str(tmp_path / "edit"), "--inventory", str(inventory), "--yes",
                         "--ticket", "CHG-1", "--username", "fixer", "--restart", "none", "--db", url)
        assert code == 0, out
        pop3 = lab.hosts[SERVER].server.protocols["pop3"]
        assert pop3.started == started and pop3.modified is not None and started is not None
        assert pop3.modified > started  # written, not yet in force
        second = scan()
        assert ("XS-001", SERVER, "pop3") not in second
        assert ("XS-005", SERVER, "pop3") in second  # the restart is left to a maintenance window

        code, out = _cli("fix", "plan", "--db", url, "--out", str(tmp_path / "restart"))
        assert code == 0, out
        plan = json.loads((tmp_path / "restart" / "plan.json").read_text())
        assert [(c["server"], c["protocol"], c["kind"]) for c in plan["changes"]] == [(SERVER, "pop3", "restart")]
        code, out = _cli("fix", "apply", str(tmp_path / "restart"), "--inventory", str(inventory), "--yes",
                         "--ticket", "CHG-2", "--username", "fixer", "--restart", "now", "--db", url)
        assert code == 0, out
        assert "restart restarted" in out
        pop3 = lab.hosts[SERVER].server.protocols["pop3"]
        assert pop3.service == "Running" and pop3.started is not None and pop3.started >= pop3.modified
        third = scan()
        assert ("XS-005", SERVER, "pop3") not in third and ("XS-001", SERVER, "pop3") not in third

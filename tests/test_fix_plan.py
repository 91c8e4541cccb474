"""`cas-audit fix plan` end to end: two scans of a lab organisation with a service pack
upgrade between them (H1), a hand edit without restart (B1) and a server unreachable in
the second scan (B3); the plan's changes, refusals, diffs and scripts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pslint
import pytest
from click.testing import CliRunner

from scanner.cli import cli
from scanner.collect.fixscript import read_script_data
from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import load_policy
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import Fleet, relocate_fleet, upgrade_server
from scanner.lab.serve import Lab
from scanner.parse.configfile import read_config
from scanner.remedy.plan import clean_text, unified_diff
from scanner.scan import run_scan
from scanner.store.repo import open_store

HERE = Path(__file__).parent / "fleets"
TRUE_FILE = (b'<?xml version="1.0" encoding="utf-8" ?>\r\n<configuration><appSettings>'
             b'<add key="AllowCrossSiteSessions" value="true" /></appSettings></configuration>\r\n')


def _edit_pop3(fleet: Fleet, name: str, modified: datetime, started: datetime | None = None) -> Fleet:
    server = fleet.server(name)
    pop3 = server.protocols["pop3"]
    pop3 = replace(pop3, config_bytes=TRUE_FILE, modified=modified, started=started or pop3.started)
    changed = replace(server, protocols={**server.protocols, "pop3": pop3})
    return replace(fleet, servers=tuple(changed if s is server else s for s in fleet.servers))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[int]]:
    tmp = tmp_path_factory.mktemp("fixplan")
    url = f"sqlite:///{tmp / 'history.db'}"
    store = open_store(url)
    policy = load_policy(HERE / "three_scans_policy.toml")
    # addresses of its own (test_three_scans scans this organisation at the same time under
    # pytest-xdist), on the fixed port that B3's restart needs
    fleet = relocate_fleet(load_fleet(HERE / "three_scans.toml"), "127.0.20.1", 15985)
    # B3: cross-site on (and in force) before scan 1
    fleet = _edit_pop3(fleet, "B3", datetime(2026, 11, 1, tzinfo=UTC), started=datetime(2026, 11, 2, tzinfo=UTC))
    runs = []
    with Lab(fleet) as lab:
        lab.write_inventory(tmp / "inventory.toml")
        inventory = load_inventory(tmp / "inventory.toml")

        def scan(when: datetime) -> int:
            return run_scan(inventory, store=store, password="lab-password", policy=policy, catalog=load_catalog(),
                            concurrency=3, timeout_s=20, started_at=when).run_id

        runs.append(scan(datetime(2026, 12, 1, 8, tzinfo=UTC)))
        fleet = upgrade_server(fleet, "H1", "8.1.240.6", datetime(2026, 12, 20, tzinfo=UTC))
        fleet = _edit_pop3(fleet, "B1", modified=datetime(2026, 12, 22, 10, tzinfo=UTC))
        lab.replace_fleet(fleet)
        lab.servers["B3"].stop()
        runs.append(scan(datetime(2027, 1, 15, 8, tzinfo=UTC)))
    store.close()
    return url, runs


def _plan(url: str, out: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(cli, ["fix", "plan", "--db", url, "--out", str(out), *args])
    plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else {}
    return result.exit_code, plan, result.output


def test_plan_of_the_upgraded_organisation(history: tuple[str, list[int]], tmp_path: Path) -> None:
    url, runs = history
    store = open_store(url, read_only=True)
    code, plan, output = _plan(url, tmp_path / "p")
    assert code == 3, output  # B3 is refused: its finding carried over from run 1, its scan in run 2 failed
    assert [(r["server"], r["protocol"]) for r in plan["refused"]] == [("B3", "pop3")]
    assert "scan in run 2 failed" in plan["refused"][0]["reason"] and "B3" not in plan["scripts"]
    assert set(plan) >= {"plan", "changes", "refused"}
    assert plan["plan"]["run_id"] == runs[1] and plan["plan"]["created_at"].endswith("Z")
    by = {(c["server"], c["protocol"]): c for c in plan["changes"]}
    # H1: SP1 setup reset both files to false; Hamburg's baseline is true
    for protocol in ("pop3", "imap4"):
        change = by[("H1", protocol)]
        assert "XS-003" in change["rules"] and change["before_value"] is False and change["after_value"] is True
        assert change["restart"] is True and change["config_path"].lower().endswith(".exe.config")
        obs = {o.name: o for o in store.server_observations(runs[1])}["H1"].protocols[protocol]
        assert change["before_sha256"] == obs.config_sha256
        script = read_script_data((tmp_path / "p" / change["script"]).read_bytes().decode("utf-8-sig"))
        new = next(c.content for c in script.changes if c.protocol == protocol)
        assert new is not None and hashlib.sha256(new).hexdigest() == change["after_sha256"]
        assert read_config(new).value is True
        assert change["diff"] == unified_diff(obs.config_bytes or b"", new, obs.config_path)
        added = [line for line in change["diff"].splitlines() if line.startswith("+") and not line.startswith("+++")]
        removed = [line for line in change["diff"].splitlines() if line.startswith("-") and not line.startswith("---")]
        assert len(added) == 1 and len(removed) <= 1 and "AllowCrossSiteSessions" in added[0]
        pre = change["pre_upgrade_diff"]
        assert pre["run_before"] == runs[0] and pre["run_after"] == runs[1] and pre["build_after"] == "8.1.240.6"
    # B1: set to true by hand, not restarted: back to false, and the restart
    b1 = by[("B1", "pop3")]
    assert set(b1["rules"]) >= {"XS-001"} and b1["after_value"] is False and b1["kind"] == "edit"
    # every script passes the PowerShell 1.0 lint, apply and rollback
    for names in plan["scripts"].values():
        for name in names.values():
            text = (tmp_path / "p" / name).read_bytes()
            assert text.startswith(b"\xef\xbb\xbf")
            source = text.decode("utf-8-sig")
            assert pslint.syntax_errors(source) == [] and pslint.lint(source) == []
    store.close()


def test_an_existing_plan_is_never_overwritten(history: tuple[str, list[int]], tmp_path: Path) -> None:
    url, _runs = history
    assert _plan(url, tmp_path / "p")[0] == 3
    before = (tmp_path / "p" / "plan.json").read_bytes()
    code, _plan_doc, output = _plan(url, tmp_path / "p")
    assert code == 2 and "never overwritten" in output
    assert (tmp_path / "p" / "plan.json").read_bytes() == before


def test_a_server_whose_latest_scan_failed_is_refused(history: tuple[str, list[int]], tmp_path: Path) -> None:
    """Planned from run 1, B3 (unreachable in run 2) is refused with the reason."""
    url, runs = history
    code, plan, output = _plan(url, tmp_path / "p", "--run", str(runs[0]))
    refused = {(r["server"], r["protocol"]): r["reason"] for r in plan["refused"]}
    b3 = [reason for (server, _p), reason in refused.items() if server == "B3"]
    assert b3 and all("latest scan" in reason and "failed" in reason for reason in b3)
    assert code == 3


def test_filters_and_usage(history: tuple[str, list[int]], tmp_path: Path) -> None:
    url, _runs = history
    code, plan, _out = _plan(url, tmp_path / "a", "--server", "h*")
    assert code == 0 and {c["server"] for c in plan["changes"]} == {"H1"}
    code, plan, _out = _plan(url, tmp_path / "b", "--rule", "XS-005", "--server", "B1")
    assert code == 0 and plan["changes"] and all(c["kind"] == "restart" and c["before_sha256"] == c["after_sha256"]
                             for c in plan["changes"])
    code, _plan_doc, output = _plan(url, tmp_path / "c", "--rule", "XS-009")
    assert code == 2 and "has no fix" in output


def test_clean_text_keeps_reviewers_safe() -> None:
    assert clean_text("a\x1b[31mb\u202ec\r\td") == "a\\x1b[31mb\\u202ec\\x0d\td"
    diff = unified_diff(b"<a>\x1b]0;x\x07</a>\r\n", b"<a>y</a>\r\n", "C:\\x\x1b.config")
    assert "\x1b" not in diff and "\x07" not in diff and "\\x1b" in diff


def _observation(name: str, path: str, content: bytes) -> Any:
    from scanner.parse.observe import ProtocolObservation, ServerObservation

    started = datetime(2026, 12, 1, tzinfo=UTC)
    pop3 = ProtocolObservation(
        protocol="pop3", allow_cross_site=True, value_source="file", config_status="ok", raw_value="true",
        config_path=path, config_sha256=hashlib.sha256(content).hexdigest(), config_bytes=content,
        config_length=len(content), config_modified=started, config_encoding="utf-8", key_notes=(),
        service="Running", start_mode="Auto", service_started=started, pending_restart=False)
    return ServerObservation(name=name, address="127.0.0.1", site="Berlin", scan_status="ok", started_at=started,
                             finished_at=started, protocols={"pop3": pop3})


def test_hostile_names_and_paths_stay_inert(tmp_path: Path) -> None:
    """Server names become safe, distinct file names; paths with '%', quotes, "'@" and
    escapes reach the script only as data; diffs and the plan show no terminal escape."""
    from scanner.judge.policy import Policy
    from scanner.remedy.plan import PlanInputs, build_plan, write_plan
    from scanner.store.findings import FindingRow

    names = ["..\\CON\x1b[2J", "../CON\x1b[2J", "nul"]
    path = "C:\\Ex'@ \"%TEMP%\\$(rm)\u202e\\Microsoft.Exchange.Pop3.exe.config"
    content = TRUE_FILE.replace(b"<appSettings>", "<!-- \u202e[31m --><appSettings>".encode())
    observations = {n.casefold(): _observation(n, path, content) for n in names}
    findings = [FindingRow(rule="XS-001", severity="high", state="new", server_name=n, site="Berlin",
                           protocol="pop3", message="m") for n in names]
    inputs = PlanInputs(run_id=1, findings=findings, observations=observations,
                        latest={n.casefold(): (1, o) for n, o in observations.items()}, pre_upgrade={})
    plan = build_plan(inputs, Policy(), datetime(2026, 12, 6, tzinfo=UTC))
    files = [n for pair in plan.scripts.values() for n in pair.values()]
    assert len(set(files)) == 6 and all("/" not in f and "\\" not in f and "\x1b" not in f for f in files)
    assert all(f.split(".")[0].upper() not in ("CON", "NUL") for f in files)
    write_plan(plan, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*files, "plan.json"])
    text = (tmp_path / "out" / "plan.json").read_text()
    assert "\x1b" not in text and "\u202e" not in text
    for change in plan.changes:
        assert "\u202e" not in change["diff"] and "\\u202e[31m" in change["diff"] and change["after_value"] is False
        assert "\u202e" not in change["config_path"]
    for name in files:
        source = (tmp_path / "out" / name).read_bytes().decode("utf-8-sig")
        assert pslint.syntax_errors(source) == [] and pslint.lint(source) == []
        assert read_script_data(source).changes[0].path == path


def test_a_path_with_control_characters_is_refused() -> None:
    from scanner.judge.policy import Policy
    from scanner.remedy.plan import PlanInputs, build_plan
    from scanner.store.findings import FindingRow

    obs = _observation("CAS01", "C:\\x\x1b[2J\\Microsoft.Exchange.Pop3.exe.config", TRUE_FILE)
    finding = FindingRow(rule="XS-001", severity="high", state="new", server_name="CAS01", site="Berlin",
                         protocol="pop3", message="m")
    plan = build_plan(PlanInputs(run_id=1, findings=[finding], observations={"cas01": obs},
                                 latest={"cas01": (1, obs)}, pre_upgrade={}), Policy(), datetime(2026, 12, 6, tzinfo=UTC))
    assert plan.changes == [] and "control characters" in plan.refused[0]["reason"]
    assert "\x1b" not in plan.refused[0]["config_path"]

"""`cas-audit fix apply` / `fix rollback` against the lab (real pywinrm over HTTP, a real
SQLite history): without --yes nothing changes on the server nor in the history; with
--yes and a ticket the writing account changes the file and every change is recorded; a
file changed since the plan and the read-only scan account are refused; rollback restores
the scanned bytes exactly; a script edited after the review is never sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select
from test_lab_fix import ADMIN, ADMIN_PASSWORD, NAME, PASSWORD, _after, _fleet, _script, _sha

from scanner.cli import cli
from scanner.lab.fleet_model import Fleet
from scanner.lab.serve import Lab
from scanner.store.models import Change


def _plan(folder: Path, fleet: Fleet, *, before: bytes | None = None) -> Path:
    server = fleet.server(NAME)
    scanned = server.protocols["pop3"].config_bytes if before is None else before
    assert scanned is not None
    folder.mkdir()
    change = {"server": NAME, "protocol": "pop3", "before_sha256": _sha(scanned), "after_sha256": _sha(_after(scanned))}
    (folder / "plan.json").write_text(json.dumps({
        "plan": {"created_at": "2026-12-06T02:00:00Z", "run_id": 1}, "changes": [change], "refused": [],
        "scripts": {NAME: {"apply": f"{NAME}.ps1", "rollback": f"{NAME}-rollback.ps1"}}}), encoding="utf-8")
    (folder / f"{NAME}.ps1").write_bytes(b"\xef\xbb\xbf" + _script(server, before=before).encode("utf-8"))
    (folder / f"{NAME}-rollback.ps1").write_bytes(_script(server, "rollback", before=before).encode("utf-8"))
    return folder


def _inventory(tmp_path: Path, lab: Lab, fleet: Fleet) -> Path:
    path = tmp_path / "inventory.toml"
    path.write_text('[defaults]\nusername = "auditor"\nauth = "basic"\nscheme = "http"\nallow_insecure = true\n'
                    f'[[server]]\nname = "{NAME}"\naddress = "{fleet.server(NAME).address}"\nport = {lab.port(NAME)}\n',
                    encoding="utf-8")
    return path


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"CAS_AUDIT_PASSWORD": PASSWORD,
                                                      "CAS_AUDIT_FIX_PASSWORD": ADMIN_PASSWORD})
    return result.exit_code, result.output


def _rows(url: str) -> list[Change]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(Change)).all())  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_apply_checks_only_without_yes_then_changes_and_records_with_yes_and_rolls_back(
        tmp_path: Path, sqlite_url: str) -> None:
    fleet = _fleet("127.0.160.1")
    scanned = fleet.server(NAME).protocols["pop3"].config_bytes
    assert scanned is not None
    with Lab(fleet) as lab:
        plan, inventory = _plan(tmp_path / "plan", fleet), _inventory(tmp_path, lab, fleet)
        code, out = _cli("fix", "apply", str(plan), "--inventory", str(inventory), "--username", ADMIN,
                         "--db", sqlite_url)
        assert code == 0, out
        assert "checked only; nothing changed" in out
        assert lab.hosts[NAME].server == fleet.server(NAME)
        assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # the history was not even opened
        code, out = _cli("fix", "apply", str(plan), "--inventory", str(inventory), "--yes", "--db", sqlite_url)
        assert code == 2 and "--ticket" in out
        code, out = _cli("fix", "apply", str(plan), "--inventory", str(inventory), "--yes", "--ticket", "CHG-1234",
                         "--username", ADMIN, "--db", sqlite_url)
        assert code == 0, out
        assert lab.hosts[NAME].server.protocols["pop3"].config_bytes == _after(scanned)
        (row,) = _rows(sqlite_url)
        assert (row.ticket, row.kind, row.server_name, row.protocol, row.result) == \
            ("CHG-1234", "apply", NAME, "pop3", "done")
        assert (row.before_sha256, row.after_sha256) == (_sha(scanned), _sha(_after(scanned)))
        assert row.backup_path.endswith(".bak") and row.operator.endswith(f" as {ADMIN}")
        code, out = _cli("fix", "rollback", str(plan), "--inventory", str(inventory), "--ticket", "CHG-1234",
                         "--yes", "--username", ADMIN, "--db", sqlite_url)
        assert code == 0, out
        assert lab.hosts[NAME].server.protocols["pop3"].config_bytes == scanned  # the scanned bytes exactly
        assert [r.kind for r in _rows(sqlite_url)] == ["apply", "rollback"]


def test_a_file_changed_since_the_plan_and_the_scan_account_are_refused(tmp_path: Path, sqlite_url: str) -> None:
    fleet = _fleet("127.0.161.1")
    with Lab(fleet) as lab:
        inventory = _inventory(tmp_path, lab, fleet)
        stale = _plan(tmp_path / "stale", fleet, before=b"<configuration>at the scan</configuration>")
        code, out = _cli("fix", "apply", str(stale), "--inventory", str(inventory), "--yes", "--ticket", "CHG-1",
                         "--username", ADMIN, "--db", sqlite_url)
        assert code == 3, out
        assert "changed since the plan" in out
        plan = _plan(tmp_path / "plan", fleet)
        code, out = _cli("fix", "apply", str(plan), "--inventory", str(inventory), "--yes", "--ticket", "CHG-2",
                         "--db", sqlite_url)   # the inventory's (scan) account
        assert code == 3, out
        assert "Access to the path '" in out and "is denied." in out
        assert "so nothing was changed" in out and "name the account that may write with --username" in out
        assert lab.hosts[NAME].server == fleet.server(NAME)
        assert sorted(r.result for r in _rows(sqlite_url)) == ["changed", "failed"]


def test_a_script_edited_after_the_review_is_never_sent(tmp_path: Path) -> None:
    fleet = _fleet("127.0.162.1")
    with Lab(fleet) as lab:
        plan = _plan(tmp_path / "plan", fleet)
        other = _script(fleet.server(NAME), before=b"something else")
        (plan / f"{NAME}.ps1").write_text(other, encoding="utf-8")
        code, out = _cli("fix", "apply", str(plan), "--inventory", str(_inventory(tmp_path, lab, fleet)))
        assert code == 2 and "edited after the review" in out
        assert lab.stats(NAME).requests == 0


@pytest.mark.parametrize("ticket", ["../evil", "a b"])
def test_a_ticket_that_cannot_name_a_file_is_a_usage_error(tmp_path: Path, ticket: str) -> None:
    fleet = _fleet("127.0.163.1")
    plan = _plan(tmp_path / "plan", fleet)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[defaults]\nusername = "auditor"\n[[server]]\nname = "X"\naddress = "127.0.0.1"\n')
    code, out = _cli("fix", "apply", str(plan), "--inventory", str(inventory), "--yes", "--ticket", ticket)
    assert code == 2, out


def test_a_script_whose_code_was_edited_after_the_review_is_never_sent(tmp_path: Path) -> None:
    """Only the data block is checked against plan.json; the code around it must be what
    `fix plan` writes too (here an edit that makes a check write), or nothing is sent.
    Comment lines do not run: a reviewer's note is fine."""
    fleet = _fleet("127.0.164.1")
    with Lab(fleet) as lab:
        plan = _plan(tmp_path / "plan", fleet)
        inventory = _inventory(tmp_path, lab, fleet)
        script = plan / f"{NAME}.ps1"
        reviewed = script.read_bytes()
        script.write_bytes(reviewed.replace(b"$doApply = [bool]$Apply", b"$doApply = $true"))
        code, out = _cli("fix", "apply", str(plan), "--inventory", str(inventory), "--username", ADMIN)
        assert code == 2 and "its code was edited after the review" in " ".join(out.split()), out
        assert lab.stats(NAME).requests == 0 and lab.hosts[NAME].server == fleet.server(NAME)
        script.write_bytes(reviewed.replace(b"\r\n#\r\n", b"\r\n# reviewed: J. Weber, CHG-1234\r\n#\r\n", 1))
        code, out = _cli("fix", "apply", str(plan), "--inventory", str(inventory), "--username", ADMIN)
        assert code == 0 and "checked only; nothing changed" in out, out

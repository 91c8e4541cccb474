"""The safety rules of `cas-audit fix apply` / `fix rollback` over the real command line,
against the lab (real pywinrm over HTTP) and a real SQLite history, with plans that
`cas-audit fix plan` wrote from a real scan: without --yes nothing on any server and
nothing in the history changes, byte for byte; a read-only server is refused with a
sentence saying nothing was changed; a write or a replace failing halfway leaves the
scanned bytes and no temporary file; a restart that fails is reported and recorded; a rollback after a
later hand edit is refused and leaves the hand edit. Each refusal exits 3 and is
recorded in the history as what it was."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from labfleet import demo_fleet

from scanner.cli import cli
from scanner.lab.fleet_model import Fleet
from scanner.lab.serve import Lab, demo_fleet_path
from scanner.store.changes import changes_between
from scanner.store.repo import open_store

POLICY = demo_fleet_path().with_name("demo-policy.toml")
EDITED = "CAS03"  # POP3 at true under an expired waiver: an edit (XS-001)
RESTARTED = "CAS06"  # IMAP4 changed after the service started: a restart only (XS-005)


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"CAS_AUDIT_PASSWORD": "lab-password",
                                                      "CAS_AUDIT_FIX_PASSWORD": "fix-password"})
    return result.exit_code, result.output


def _fleet(base: str, **switches: object) -> Fleet:
    fleet = demo_fleet(base, "basic")
    return replace(fleet, servers=tuple(replace(fleet.server(n), **switches)  # type: ignore[arg-type]
                                        for n in (EDITED, RESTARTED)))


def _scanned_and_planned(lab: Lab, tmp_path: Path) -> tuple[Path, Path, str]:
    """Scan the lab, write the plan of that scan: (inventory, plan folder, history URL)."""
    inventory, url, plan = tmp_path / "inventory.toml", f"sqlite:///{tmp_path / 'history.db'}", tmp_path / "plan"
    lab.write_inventory(inventory)
    code, out = _cli("scan", "--inventory", str(inventory), "--db", url, "--policy", str(POLICY))
    assert code in (0, 1), out
    code, out = _cli("fix", "plan", "--db", url, "--out", str(plan))
    assert code == 0, out
    document = json.loads((plan / "plan.json").read_text())
    assert {(c["server"], c["kind"]) for c in document["changes"]} == {(EDITED, "edit"), (RESTARTED, "restart")}
    return inventory, plan, url


def _apply(plan: Path, inventory: Path, url: str, *extra: str) -> tuple[int, str]:
    return _cli("fix", "apply", str(plan), "--inventory", str(inventory), "--username", "fixer", "--db", url, *extra)


def _tables(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY rowid').fetchall() for n in names}


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (the history, its -wal/-shm, the plan) by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_without_yes_nothing_changes_on_any_server_nor_in_the_history(tmp_path: Path) -> None:
    with Lab(_fleet("127.0.173.1")) as lab:
        inventory, plan, url = _scanned_and_planned(lab, tmp_path)
        # one change already applied and recorded, so the rollback has something to check
        code, out = _apply(plan, inventory, url, "--yes", "--ticket", "CHG-1")
        assert code == 0, out
        servers = {name: host.server for name, host in lab.hosts.items()}
        db = tmp_path / "history.db"
        tables, files = _tables(db), _files(tmp_path)
        assert tables["changes"]
        for command in (("fix", "apply", str(plan), "--inventory", str(inventory), "--ticket", "CHG-2",
                         "--restart", "now", "--username", "fixer", "--db", url),
                        ("fix", "apply", str(plan), "--inventory", str(inventory), "--db", url),
                        ("fix", "rollback", str(plan), "--inventory", str(inventory), "--ticket", "CHG-1",
                         "--username", "fixer", "--db", url)):
            code, out = _cli(*command)
            assert code in (0, 3), out
            assert "checked only; nothing changed" in out
            assert {name: host.server for name, host in lab.hosts.items()} == servers  # every file, service, backup
            assert _tables(db) == tables and _files(tmp_path) == files  # the history byte for byte


@pytest.mark.parametrize(
    ("address", "switches", "restart", "status", "said"),
    [
        ("127.0.174.1", {"writable": False}, "none", "failed",
         "could not write the new file beside it, so nothing was changed: Access to the path '"),
        ("127.0.178.1", {"write_fault": "disk-full"}, "none", "failed",
         "could not write the new file beside it, so nothing was changed: There is not enough space on the disk."),
        ("127.0.175.1", {"replace_fault": "halfway"}, "none", "failed", "the file was copied back from the backup"),
        ("127.0.176.1", {"restart_fails": True}, "now", "done", "The restart failed: Service 'Microsoft Exchange POP3"),
    ],
    ids=["read-only", "write-halfway", "replace-halfway", "restart-fails"],
)
def test_a_refused_or_failed_change_exits_3_says_why_and_is_recorded(
        tmp_path: Path, address: str, switches: dict[str, object], restart: str, status: str, said: str) -> None:
    with Lab(_fleet(address, **switches)) as lab:
        inventory, plan, url = _scanned_and_planned(lab, tmp_path)
        scanned = lab.hosts[EDITED].server.protocols["pop3"].config_bytes
        code, out = _apply(plan, inventory, url, "--yes", "--ticket", "CHG-7", "--restart", restart)
        assert code == 3, out
        assert said in " ".join(out.split())
        # the summary says what each server's change did: a written file whose restart failed
        # is not "not changed"
        assert f"not: {EDITED} (pop3 {status}" + (", restart failed)" if restart == "now" else ")") in out
        pop3 = lab.hosts[EDITED].server
        if status == "failed":  # the scanned bytes in place, no temporary file left beside them
            assert pop3.protocols["pop3"].config_bytes == scanned
            assert not [n for n in pop3.extra_files if n.endswith(".new")]
        else:
            assert pop3.protocols["pop3"].config_bytes != scanned and pop3.protocols["pop3"].service == "Stopped"
        with open_store(url, read_only=True) as store:
            rows = {(c.server_name, c.protocol): c for c in changes_between(store, None, None)}
        row = rows[(EDITED, "pop3")]
        assert (row.ticket, row.kind, row.result) == ("CHG-7", "apply", status)
        assert row.restart == ("failed" if restart == "now" else "none") and said.split(":")[0] in row.message


def test_rollback_after_a_later_hand_edit_is_refused_and_keeps_the_edit(tmp_path: Path) -> None:
    with Lab(_fleet("127.0.177.1")) as lab:
        inventory, plan, url = _scanned_and_planned(lab, tmp_path)
        code, out = _apply(plan, inventory, url, "--yes", "--ticket", "CHG-8")
        assert code == 0, out
        host = lab.hosts[EDITED]
        by_hand = b'<?xml version="1.0"?>\r\n<configuration><!-- edited by hand --></configuration>\r\n'
        edited = replace(host.server.protocols["pop3"], config_bytes=by_hand)
        host.replace(replace(host.server, protocols={**host.server.protocols, "pop3": edited}), lab.fleet)
        before = host.server
        code, out = _cli("fix", "rollback", str(plan), "--inventory", str(inventory), "--ticket", "CHG-8", "--yes",
                         "--username", "fixer", "--db", url)
        assert code == 3, out
        assert "changed since the plan" in out and f"not: {EDITED}" in out
        assert lab.hosts[EDITED].server == before  # the hand edit stays, and so do the backups
        with open_store(url, read_only=True) as store:
            rows = [(c.kind, c.server_name, c.protocol, c.result) for c in changes_between(store, None, None)]
        assert ("rollback", EDITED, "pop3", "changed") in rows

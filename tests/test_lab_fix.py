"""The lab runs `fix plan`'s scripts as Windows would (scanner/lab/simfix.py), reached by
real pywinrm over HTTP through the scanner's own launch (winrm_client.run_collector): the
safety rules of issue 16 hold against it: a file changed since the plan is refused and left
untouched, the scan account and a read-only server get "Access is denied", a replace that
fails halfway leaves the old file, a failing restart is reported, a rollback restores the
scanned bytes exactly and refuses after a later hand edit; a check changes nothing."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from scanner.collect import winrm_client
from scanner.collect.collected import CONFIG_FILE_NAMES
from scanner.collect.fixscript import (
    FixResult,
    ScriptChange,
    ScriptData,
    read_result,
    render_script,
    script_environment,
    sendable_script,
)
from scanner.inventory import Target
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import Fleet, SimServer, relocate_fleet
from scanner.lab.serve import Lab
from scanner.lab.simhost import path_combine

FLEET = Path(__file__).resolve().parent / "fleets" / "platforms.toml"
PASSWORD = "lab-password"
ADMIN, ADMIN_PASSWORD = "fixer", "fix-password"
NAME = "W8-PS2"
TICKET = "CHG-1234"


def _fleet(base: str, **switches: object) -> Fleet:
    fleet = relocate_fleet(load_fleet(FLEET), base, 0)
    server = replace(fleet.server(NAME), account="local", allow_unencrypted=True, **switches)  # type: ignore[arg-type]
    lab = replace(fleet.lab, auth="basic", domain="", admin_username=ADMIN, admin_password=ADMIN_PASSWORD)
    return replace(fleet, lab=lab, servers=(server,))


def _target(lab: Lab, fleet: Fleet, username: str) -> Target:
    return Target(name=NAME, address=fleet.server(NAME).address, site=None, username=username, auth="basic",
                  scheme="http", port=lab.port(NAME), verify_tls=False, ca_bundle=None, allow_insecure=True,
                  cert_pem=None, cert_key_pem=None)


def _path(server: SimServer) -> str:
    return path_combine(server.install_path, "ClientAccess\\PopImap\\" + CONFIG_FILE_NAMES["pop3"])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _after(before: bytes) -> bytes:
    return before.replace(b"</configuration>", b"<!-- fixed -->\r\n</configuration>")


def _script(server: SimServer, kind: str = "apply", before: bytes | None = None) -> str:
    scanned = server.protocols["pop3"].config_bytes if before is None else before
    assert scanned is not None
    new = _after(scanned)
    data = ScriptData(kind=kind, server=server.name, run_id=1, created_at="2026-12-06T02:00:00Z",  # type: ignore[arg-type]
                      changes=(ScriptChange("pop3", _path(server), _sha(scanned), _sha(new), new),))
    return render_script(data)


def _run(lab: Lab, fleet: Fleet, script: str, *, user: str = ADMIN, apply: bool = True,
         restart: bool = False) -> tuple[FixResult, int]:
    password = ADMIN_PASSWORD if user == ADMIN else PASSWORD
    sent = sendable_script(script)
    env = script_environment(sent, apply=apply, restart=restart, ticket=TICKET)
    env = {k: v for k, v in env.items() if k != "CASAUDIT_SCRIPT"}
    out = winrm_client.run_collector(_target(lab, fleet, user), password, script=sent, env=env, timeout_s=30)
    return read_result(out.stdout), out.exit_code


def _pop3(lab: Lab) -> bytes | None:
    return lab.hosts[NAME].server.protocols["pop3"].config_bytes


def test_check_only_changes_nothing_and_apply_writes_with_a_backup_beside_the_file() -> None:
    fleet = _fleet("127.0.150.1")
    server = fleet.server(NAME)
    scanned = server.protocols["pop3"].config_bytes
    assert scanned is not None
    with Lab(fleet) as lab:
        script = _script(server)
        result, code = _run(lab, fleet, script, apply=False)
        assert (code, result.mode, result.changes[0].status) == (0, "check", "ready")
        assert lab.hosts[NAME].server == server  # nothing at all changed
        result, code = _run(lab, fleet, script)
        change = result.changes[0]
        assert (code, change.status, change.now) == (0, "done", _sha(_after(scanned)))
        now = lab.hosts[NAME].server
        assert now.protocols["pop3"].config_bytes == _after(scanned)
        assert change.backup.startswith(_path(server) + f".{TICKET}-") and change.backup.endswith(".bak")
        backup_name = change.backup.rsplit("\\", 1)[1]
        assert now.extra_files == {backup_name: scanned}  # only the backup: the .new file became the file
        # the same script again: already in place, nothing written
        again, code = _run(lab, fleet, script)
        assert (code, again.changes[0].status) == (0, "already")


def test_a_file_changed_since_the_plan_is_refused_and_left_untouched() -> None:
    fleet = _fleet("127.0.151.1")
    server = fleet.server(NAME)
    with Lab(fleet) as lab:
        stale = _script(server, before=b"<configuration>as it was at the scan</configuration>")
        result, code = _run(lab, fleet, stale)
        assert (code, result.changes[0].status) == (1, "changed")
        assert "changed since the plan" in result.changes[0].message
        assert lab.hosts[NAME].server == server


def test_the_scan_account_and_a_read_only_server_get_access_denied() -> None:
    fleet = _fleet("127.0.152.1")
    server = fleet.server(NAME)
    with Lab(fleet) as lab:
        result, code = _run(lab, fleet, _script(server), user="auditor")
        change = result.changes[0]
        assert (code, change.status) == (1, "failed")
        assert "Access to the path '" in change.message and "' is denied." in change.message
        assert lab.hosts[NAME].server == server
    fleet = _fleet("127.0.153.1", writable=False)
    server = fleet.server(NAME)
    with Lab(fleet) as lab:
        result, code = _run(lab, fleet, _script(server))
        assert (code, result.changes[0].status) == (1, "failed")
        assert "is denied." in result.changes[0].message
        assert lab.hosts[NAME].server == server


def test_a_replace_failing_halfway_leaves_the_scanned_file_in_place() -> None:
    fleet = _fleet("127.0.154.1", replace_fault="halfway")
    server = fleet.server(NAME)
    with Lab(fleet) as lab:
        result, code = _run(lab, fleet, _script(server))
        change = result.changes[0]
        assert (code, change.status) == (1, "failed")
        assert "copied back from the backup" in change.message
        assert _pop3(lab) == server.protocols["pop3"].config_bytes
    fleet = _fleet("127.0.155.1", replace_fault="locked")
    server = fleet.server(NAME)
    with Lab(fleet) as lab:
        result, code = _run(lab, fleet, _script(server))
        assert (code, result.changes[0].status) == (1, "failed")
        assert "being used by another process" in result.changes[0].message
        assert lab.hosts[NAME].server == server  # not even the .new file is left


def test_a_write_failing_halfway_leaves_no_partial_file() -> None:
    """The new file's write stops halfway (disk full): the partial file beside the config
    file is deleted and the config file keeps its scanned bytes."""
    fleet = _fleet("127.0.149.1", write_fault="disk-full")
    server = fleet.server(NAME)
    with Lab(fleet) as lab:
        result, code = _run(lab, fleet, _script(server))
        change = result.changes[0]
        assert (code, change.status, change.now) == (1, "failed", _sha(server.protocols["pop3"].config_bytes or b""))
        assert change.message.endswith("nothing was changed: There is not enough space on the disk.")
        assert lab.hosts[NAME].server == server  # the file as scanned, nothing left beside it


def test_restart_sets_the_process_start_time_and_a_failing_restart_is_reported() -> None:
    fleet = _fleet("127.0.156.1")
    server = fleet.server(NAME)
    before = datetime.now(UTC)
    with Lab(fleet) as lab:
        result, code = _run(lab, fleet, _script(server), restart=True)
        assert (code, result.changes[0].status, result.changes[0].restart) == (0, "done", "restarted")
        proto = lab.hosts[NAME].server.protocols["pop3"]
        assert proto.service == "Running" and proto.started is not None and proto.started >= before
    fleet = _fleet("127.0.157.1", restart_fails=True)
    server = fleet.server(NAME)
    with Lab(fleet) as lab:
        result, code = _run(lab, fleet, _script(server), restart=True)
        change = result.changes[0]
        assert (code, change.status, change.restart) == (1, "done", "failed")
        assert "cannot be started" in change.message


def test_rollback_restores_the_scanned_bytes_exactly_and_refuses_after_a_hand_edit() -> None:
    fleet = _fleet("127.0.158.1")
    server = fleet.server(NAME)
    scanned = server.protocols["pop3"].config_bytes
    with Lab(fleet) as lab:
        assert _run(lab, fleet, _script(server))[0].changes[0].status == "done"
        rollback = _script(server, kind="rollback")
        check, code = _run(lab, fleet, rollback, apply=False)
        assert (code, check.changes[0].status) == (0, "ready")
        result, code = _run(lab, fleet, rollback)
        assert (code, result.changes[0].status) == (0, "done")
        assert _pop3(lab) == scanned
        again, code = _run(lab, fleet, rollback)
        assert (code, again.changes[0].status) == (0, "already")
    fleet = _fleet("127.0.159.1")
    server = fleet.server(NAME)
    with Lab(fleet) as lab:
        # applied, then an administrator edits the file by hand: rollback refuses
        assert _run(lab, fleet, _script(server))[0].changes[0].status == "done"
        rollback = _script(server, kind="rollback")
        host = lab.hosts[NAME]
        edited = replace(host.server.protocols["pop3"], config_bytes=b"<configuration>by hand</configuration>")
        host.replace(replace(host.server, protocols={**host.server.protocols, "pop3": edited}), fleet)
        result, code = _run(lab, fleet, rollback)
        assert (code, result.changes[0].status) == (1, "changed")
        assert _pop3(lab) == b"<configuration>by hand</configuration>"


def test_the_lab_runs_a_fix_script_only_as_fix_plan_wrote_it() -> None:
    """What the lab simulates is the script exactly as rendered (comment lines aside, as
    PowerShell ignores them); one changed character of code and it is not run, so a test
    passing in the lab ran the very script a server would."""
    from scanner.lab.simfix import fix_script_data

    server = _fleet("127.0.165.1").server(NAME)
    script = _script(server)
    assert fix_script_data(sendable_script(script)) is not None
    noted = script.replace("\r\n#\r\n", "\r\n# reviewed\r\n#\r\n", 1)
    assert fix_script_data(sendable_script(noted)) is not None
    for edit in (("$doApply = [bool]$Apply", "$doApply = $true"), ("'failed'", "'done'"), ("exit $state.bad", "exit 0")):
        assert edit[0] in script
        assert fix_script_data(sendable_script(script.replace(edit[0], edit[1], 1))) is None

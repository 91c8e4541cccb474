"""Outputs: the scan's result is the database, never the terminal; a writer never replaces
a device node or a FIFO, never overwrites a file without --force, and fails cleanly on a
full disk."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from labfleet import demo_fleet, running
from test_cli_errors import cas_audit, cas_audit_process, db_url, one_run

from scanner.store.repo import open_store

pytestmark = pytest.mark.slow  # the cas-audit command (CliRunner; a child process where stdout or a pipe is real)

__all__ = ["one_run"]  # the fixture, used by name


def test_scan_into_a_closed_pipe_still_completes_the_run(tmp_path: Path) -> None:
    """`scan 2>&1 | head -1`: stderr closes after one line; the scan must go on to the end."""
    fleet = demo_fleet("127.0.34.1")
    # three servers, one refusing as in the demo: the scan writes its lines after the close
    # as the demo's nine would
    fleet = replace(fleet, servers=tuple(fleet.server(name) for name in ("CAS01", "CAS02", "CAS08")))
    with running(fleet, tmp_path) as (_lab, inventory):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
        env.update(CAS_AUDIT_DB=db_url(tmp_path), CAS_AUDIT_PASSWORD="lab-password")
        scan = subprocess.Popen([sys.executable, "-m", "scanner", "scan", "--inventory", str(inventory),
                                 "--concurrency", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)
        assert scan.stdout is not None
        first = scan.stdout.readline()
        scan.stdout.close()  # what `head -1` does after its line
        code = scan.wait(timeout=120)
    assert first
    assert code == 3, code  # the scan's verdict (CAS08 refuses, as in the demo), not a failed write
    with open_store(db_url(tmp_path)) as store:
        run = store.runs()[0]
    assert run.status == "partial"  # finished: every server has its result
    assert (run.servers_scanned, run.servers_failed) == (run.servers_planned - 1, 1)


def _null_device(folder: Path) -> Path:
    """A private node of the null device (root, as in CI), else /dev/null itself (which a
    user who is not root cannot replace anyway)."""
    node = folder / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        return Path("/dev/null")
    return node


def test_report_into_a_device_node_writes_into_it(one_run: Path) -> None:
    device = _null_device(one_run)
    before = os.stat(device)
    result = cas_audit(one_run, "report", "--format", "json", "--out", str(device))
    assert result.returncode == 0, result.stderr.decode()
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_report_into_a_fifo_writes_into_it(one_run: Path) -> None:
    fifo = one_run / "report.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = cas_audit(one_run, "report", "--format", "json", "--out", str(fifo))
    reader.join(30)
    assert result.returncode == 0, result.stderr.decode()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert json.loads(received[0])["run"]["id"] == 1


def test_evidence_refuses_to_overwrite_without_force(one_run: Path) -> None:
    out = one_run / "pop3.config"
    out.write_bytes(b"an admin's own file")
    out.chmod(0o640)
    link = one_run / "hardlink.config"
    os.link(out, link)
    args = ("evidence", "--server", "CAS01", "--protocol", "pop3", "--out", str(out))
    refused = cas_audit(one_run, *args)
    assert refused.returncode == 2, refused.stderr.decode()
    assert "--force" in refused.stderr.decode()
    assert out.read_bytes() == b"an admin's own file"
    forced = cas_audit(one_run, *args, "--force")
    assert forced.returncode == 0, forced.stderr.decode()
    assert b"AllowCrossSiteSessions" in out.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # the file's mode is kept
    assert link.read_bytes() == b"an admin's own file"  # documented: a hard link keeps the old file


def test_new_files_get_the_usual_mode(one_run: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    out = one_run / "new.config"
    result = cas_audit(one_run, "evidence", "--server", "CAS01", "--protocol", "pop3", "--out", str(out))
    assert result.returncode == 0, result.stderr.decode()
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("fmt", ["json", "xlsx"])
def test_report_refuses_to_overwrite_without_force(one_run: Path, fmt: str) -> None:
    out = one_run / f"report.{fmt}"
    out.write_bytes(b"last week's report")
    refused = cas_audit(one_run, "report", "--format", fmt, "--out", str(out))
    assert refused.returncode == 2, refused.stderr.decode()
    assert out.read_bytes() == b"last week's report"
    assert cas_audit(one_run, "report", "--format", fmt, "--out", str(out), "--force").returncode == 0
    assert out.read_bytes() != b"last week's report"


@pytest.mark.parametrize("command", [("report", "--format", "json"), ("history",)])
def test_stdout_on_a_full_disk_is_one_clean_line(one_run: Path, command: tuple[str, ...]) -> None:
    with open("/dev/full", "wb") as full:
        result = cas_audit_process(one_run, *command, stdout=full.fileno())
    stderr = result.stderr.decode()
    assert result.returncode == 4, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert "cannot write to stdout" in stderr
    assert "No space left on device" in stderr

"""Mistakes a user will make, through the command line: click's CliRunner in this process,
and a few through the real `python -m scanner` in a child process (the program's name in
click's usage text, and a workbook refused on a real terminal).

Each run gets its own SQLite history (CAS_AUDIT_DB) and data folder, so nothing touches
the user's home. A usage error is exit 2 with a short `error:` message, never a traceback.
"""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from rules_fixtures import T0, server

from scanner.cli import cli
from scanner.judge.catalog import load_catalog
from scanner.judge.evaluate import evaluate_run
from scanner.judge.policy import Policy
from scanner.store.repo import open_store

INVENTORY = """\
[defaults]
username = "auditor"
auth = "basic"
scheme = "http"
port = 5985
allow_insecure = true

[[server]]
name = "CAS01"
address = "127.0.0.1"
"""


@dataclass
class Ran:
    returncode: int
    stdout: bytes
    stderr: bytes


def _env(tmp_path: Path) -> dict[str, str]:
    return {"CAS_AUDIT_DB": db_url(tmp_path), "CAS_AUDIT_PASSWORD": "not-a-real-password",
            "XDG_DATA_HOME": str(tmp_path / "xdg-data")}


def cas_audit(tmp_path: Path, *args: str) -> Ran:
    """`cas-audit ARGS` in `tmp_path` through CliRunner, with a history database and data
    folder of its own; an exception other than click's exit fails the test."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CAS_AUDIT_")}
    env.update(_env(tmp_path))
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(cli, list(args), env=env, prog_name="cas-audit")
    finally:
        os.chdir(here)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout_bytes, result.stderr_bytes)


def cas_audit_process(tmp_path: Path, *args: str, stdout: int | None = subprocess.PIPE
                      ) -> subprocess.CompletedProcess[bytes]:
    """`cas-audit ARGS` in a child process (`python -m scanner`), as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    env.update(_env(tmp_path))
    return subprocess.run([sys.executable, "-m", "scanner", *args], cwd=tmp_path, env=env, stdout=stdout,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60)


def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'history.db'}"


def usage_error(result: Ran | subprocess.CompletedProcess[bytes]) -> str:
    """The one `error:` line of a clean exit-2 usage error."""
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert len(lines) <= 2 and all(line.startswith(("error:", "hint:")) for line in lines), stderr
    return errors[0]


def no_runs(tmp_path: Path) -> bool:
    with open_store(db_url(tmp_path)) as store:
        return store.runs() == []


_ONE_RUN: list[Path] = []  # the history of `one_run`, built once per process


def _one_run_history(folder: Path) -> Path:
    """A history in `folder` holding run 1: CAS01 scanned successfully, evaluated against the
    default policy."""
    policy = Policy.default()
    with open_store(db_url(folder)) as store:
        obs = server("CAS01", value=False)
        run_id = store.begin_run(planned=[(obs.name, obs.address, obs.site)], tool_version="test",
                                 operator="tester", scanning_host="here", inventory_sha256="0" * 64,
                                 policy_text=policy.source_text, started_at=T0)
        store.record_server(run_id, obs)
        store.finish_run(run_id, "complete", finished_at=T0 + timedelta(minutes=1))
        evaluation = evaluate_run(store, run_id, policy, load_catalog())
        store.save_findings(run_id, evaluation.findings, evaluation.resolved)
    return folder / "history.db"


@pytest.fixture
def one_run(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tmp_path`, its history holding run 1: CAS01 scanned successfully, evaluated against the
    default policy. A copy (SQLite's backup API) of the history built once per process: opening
    and evaluating it took about 0.15 s of CPU, copying it takes 2 ms."""
    if not _ONE_RUN:
        _ONE_RUN.append(_one_run_history(tmp_path_factory.mktemp("one-run")))
    source, copy = sqlite3.connect(_ONE_RUN[0]), sqlite3.connect(tmp_path / "history.db")
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    return tmp_path


def test_scan_with_a_missing_inventory_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-inventory.toml"
    line = usage_error(cas_audit(tmp_path, "scan", "--inventory", str(missing)))
    assert str(missing) in line


def test_scan_with_a_malformed_inventory_names_file_and_line(tmp_path: Path) -> None:
    inventory = tmp_path / "cas.toml"
    inventory.write_text(INVENTORY.replace('auth = "basic"', 'auth = "telnet"'), encoding="utf-8")
    line = usage_error(cas_audit(tmp_path, "scan", "--inventory", str(inventory)))
    assert str(inventory) in line and "telnet" in line
    assert no_runs(tmp_path)


POLICIES = {
    "not-toml": "[baseline\nallow_cross_site = false\n",
    "not-a-boolean": '[baseline]\nallow_cross_site = "no"\n',
    "unknown-rule": ('[[waiver]]\nrule = "XS-999"\nserver = "CAS01"\njustification = "x"\n'
                     'approver = "y"\nexpires = 2030-01-01\n'),
    "unknown-table": "[baseline]\nallow_cross_site = false\n[waivers]\n",
    "bad-severity": '[severity]\n"XS-010" = "urgent"\n',
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_scan_with_a_malformed_policy_stops_before_writing_anything(tmp_path: Path, name: str) -> None:
    inventory = tmp_path / "cas.toml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    policy = tmp_path / f"{name}.toml"
    policy.write_text(POLICIES[name], encoding="utf-8")
    line = usage_error(cas_audit(tmp_path, "scan", "--inventory", str(inventory), "--policy", str(policy)))
    assert str(policy) in line
    assert no_runs(tmp_path)


def test_scan_with_a_missing_policy_names_the_file(tmp_path: Path) -> None:
    inventory = tmp_path / "cas.toml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    missing = tmp_path / "no-such-policy.toml"
    line = usage_error(cas_audit(tmp_path, "scan", "--inventory", str(inventory), "--policy", str(missing)))
    assert str(missing) in line
    assert no_runs(tmp_path)


def test_scan_of_a_site_the_inventory_lacks_is_a_usage_error(tmp_path: Path) -> None:
    inventory = tmp_path / "cas.toml"
    inventory.write_text(INVENTORY.replace('address = "127.0.0.1"', 'address = "127.0.0.1"\nsite = "Berlin"'),
                         encoding="utf-8")
    line = usage_error(cas_audit(tmp_path, "scan", "--inventory", str(inventory), "--site", "Hamburg"))
    assert "Hamburg" in line
    assert no_runs(tmp_path)


@pytest.mark.parametrize("args", [
    ("scan",),                                              # --inventory is required
    ("scan", "--inventory", "x.toml", "--fail-on", "severe"),
    ("scan", "--inventory", "x.toml", "--concurrency", "0"),
    ("report", "--format", "pdf"),
    ("diff", "1"),
    ("evidence", "--server", "CAS01", "--protocol", "smtp", "--out", "x"),
], ids=lambda args: " ".join(args))
def test_click_usage_errors_exit_2_without_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = cas_audit(tmp_path, *args)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr and "Usage: cas-audit" in stderr


@pytest.mark.slow  # a child process
def test_a_usage_error_of_the_real_program_names_it(tmp_path: Path) -> None:
    result = cas_audit_process(tmp_path, "scan")
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr and "Usage: cas-audit scan" in stderr and "--inventory" in stderr


def test_report_of_an_unknown_run_on_an_empty_database(tmp_path: Path) -> None:
    assert cas_audit(tmp_path, "db", "upgrade").returncode == 0  # an empty history
    line = usage_error(cas_audit(tmp_path, "report", "--run", "999", "--format", "json"))
    assert "999" in line


def test_report_of_the_latest_run_on_an_empty_database(tmp_path: Path) -> None:
    assert cas_audit(tmp_path, "db", "upgrade").returncode == 0  # an empty history
    line = usage_error(cas_audit(tmp_path, "report", "--format", "json"))
    assert "no scan" in line


def test_report_run_must_be_a_number_or_latest(tmp_path: Path) -> None:
    assert cas_audit(tmp_path, "db", "upgrade").returncode == 0  # an empty history
    line = usage_error(cas_audit(tmp_path, "report", "--run", "newest", "--format", "json"))
    assert "newest" in line


def test_report_of_an_unknown_run_next_to_a_known_one(one_run: Path) -> None:
    assert cas_audit(one_run, "report", "--run", "1", "--format", "json").returncode == 0
    line = usage_error(cas_audit(one_run, "report", "--run", "2", "--format", "json"))
    assert "2" in line


@pytest.mark.slow  # a child process: a real terminal
def test_xlsx_to_a_terminal_is_refused(one_run: Path) -> None:
    written = cas_audit(one_run, "report", "--format", "xlsx", "--out", "-")
    assert written.returncode == 0, written.stderr.decode()
    assert written.stdout.startswith(b"PK\x03\x04")  # to what is not a terminal the workbook is written

    master, slave = pty.openpty()
    try:
        result = cas_audit_process(one_run, "report", "--format", "xlsx", "--out", "-", stdout=slave)
        os.close(slave)
        slave = -1
        shown = b""
        try:
            while chunk := os.read(master, 65536):
                shown += chunk
        except OSError:  # EIO: the terminal's other end is closed
            pass
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    line = usage_error(result)
    assert "terminal" in line
    assert b"PK\x03\x04" not in shown


def test_evidence_for_an_unknown_server(one_run: Path) -> None:
    out = one_run / "Microsoft.Exchange.Pop3.exe.Config"
    line = usage_error(cas_audit(one_run, "evidence", "--server", "CAS99", "--protocol", "pop3", "--out", str(out)))
    assert "CAS99" in line
    assert not out.exists()
    # the same command for a server the history knows writes the file
    written = cas_audit(one_run, "evidence", "--server", "CAS01", "--protocol", "pop3", "--out", str(out))
    assert written.returncode == 0, written.stderr.decode()
    assert b"AllowCrossSiteSessions" in out.read_bytes()


def test_evidence_for_a_run_that_did_not_see_the_server(one_run: Path) -> None:
    out = one_run / "pop3.config"
    line = usage_error(cas_audit(one_run, "evidence", "--server", "CAS01", "--protocol", "pop3",
                                 "--run", "5", "--out", str(out)))
    assert "5" in line
    assert not out.exists()


def test_history_of_an_unknown_server(one_run: Path) -> None:
    line = usage_error(cas_audit(one_run, "history", "--server", "CAS99"))
    assert "CAS99" in line

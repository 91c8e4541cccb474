"""Exit codes when a stage fails (design: 4 for any internal or storage error, never 1,
which a scheduler reads as "findings"). Each stage is broken through a real input where
one exists: a peer that answers no XML (collect), a corrupt database file (store), a
damaged history row (evaluate), an output path that cannot be written (export). The parse
stage cannot be broken by any server (its input is checked first), so it is broken by the
documented test hook CAS_AUDIT_TEST_FAIL_STAGE=parse (scanner/util/testhooks.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from labfleet import cas_audit_here, demo_fleet, running
from rawhttp import raw_peer
from test_cli_errors import one_run

__all__ = ["one_run"]  # the fixture, used by name


def run(folder: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process; its error log goes to folder/state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    env.update(CAS_AUDIT_DB=f"sqlite:///{folder / 'history.db'}", CAS_AUDIT_PASSWORD="lab-password",
               XDG_STATE_HOME=str(folder / "state"), **env_extra)
    return subprocess.run([sys.executable, "-m", "scanner", *args], cwd=folder, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)


def read(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command in this process (CliRunner): for the results a test only reads (a report, the
    scan before the damage) and for the failures a command turns into an exit code and one
    sentence itself. The error log with its traceback is written by the entry point
    (scanner.cli.main installs it), so the tests of a bug's exit 4 and its log use `run`'s
    child processes; an exception no command caught is raised here and fails the test."""
    return cas_audit_here(*args, db=f"sqlite:///{folder / 'history.db'}")


def internal(result: subprocess.CompletedProcess[str], folder: Path) -> str:
    """Assert exit 4 with one error line naming a log that holds the traceback; return the log."""
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    logs = list((folder / "state" / "cas-audit" / "log").glob("cas-audit-*.log"))
    assert len(logs) == 1, logs
    assert str(logs[0]) in result.stderr
    assert oct(logs[0].stat().st_mode & 0o777) == oct(0o600)
    text = logs[0].read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text
    assert "lab-password" not in text
    return text


@pytest.fixture(scope="module")
def lab_inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("lab")
    fleet = demo_fleet("127.0.35.1")  # two of its servers: every stage runs for each
    with running(replace(fleet, servers=fleet.servers[:2]), folder) as (_lab, inventory):
        yield inventory


def test_collect_a_peer_answering_no_xml_is_an_unscanned_server(tmp_path: Path) -> None:
    """In this process: the exit code and the sentence are the scan's (no error log)."""
    inventory = tmp_path / "inventory.toml"
    with raw_peer("not-xml") as peer:
        inventory.write_text(
            '[defaults]\nusername = "auditor"\nauth = "basic"\nscheme = "http"\nallow_insecure = true\n'
            f'[[server]]\nname = "RAW"\naddress = "127.0.0.1"\nport = {peer.port}\n', encoding="utf-8")
        result = read(tmp_path, "scan", "--inventory", str(inventory), "--timeout", "10")
    assert result.returncode == 3, result.stderr
    assert "RAW: failed (protocol)" in result.stderr


@pytest.mark.slow  # a scan of the lab in a child process (the error log is the entry point's)
def test_parse_failure_exits_4_and_keeps_the_results(tmp_path: Path, lab_inventory: Path) -> None:
    result = run(tmp_path, "scan", "--inventory", str(lab_inventory), CAS_AUDIT_TEST_FAIL_STAGE="parse")
    log = internal(result, tmp_path)
    assert "failure injected at stage 'parse'" in log
    report = json.loads(read(tmp_path, "report", "--format", "json").stdout)
    assert report["run"]["status"] == "partial"
    assert {s["error"].split(":")[0] for s in report["servers"]} >= {"internal"}


@pytest.mark.slow  # the same
def test_a_bug_in_the_config_evaluator_exits_4_and_is_no_finding(tmp_path: Path, lab_inventory: Path) -> None:
    """An exception inside the config file evaluator is our bug: exit 4 with its traceback
    in the error log, never an XS-006 "malformed" finding with exit 1 and no log line."""
    result = run(tmp_path, "scan", "--inventory", str(lab_inventory), CAS_AUDIT_TEST_FAIL_STAGE="config")
    log = internal(result, tmp_path)
    assert "failure injected at stage 'config'" in log
    report = json.loads(read(tmp_path, "report", "--format", "json").stdout)
    assert not [f for f in report["findings"] if f["rule"] == "XS-006"]
    assert {s["error"].split(":")[0] for s in report["servers"] if s["error"]} >= {"internal"}


def test_store_a_corrupt_database_file_exits_4(tmp_path: Path) -> None:
    """In this process: the store's refusal is a sentence and exit 4 of the command itself."""
    (tmp_path / "history.db").write_bytes(b"this is not a SQLite database" * 100)
    for command in (("history",), ("report", "--format", "json"), ("db", "upgrade")):
        result = read(tmp_path, *command)
        assert result.returncode == 4, result.stderr
        assert "Traceback" not in result.stderr
        assert "history database" in result.stderr


@pytest.mark.slow  # the same
def test_evaluate_a_damaged_history_exits_4_and_the_run_is_not_clean(tmp_path: Path, lab_inventory: Path) -> None:
    assert read(tmp_path, "scan", "--inventory", str(lab_inventory)).returncode == 0
    with sqlite3.connect(tmp_path / "history.db") as db:  # someone edits the history by hand
        db.execute("UPDATE documents SET body = 'last tuesday' WHERE kind = 'protocol'")
    internal(run(tmp_path, "scan", "--inventory", str(lab_inventory)), tmp_path)
    with sqlite3.connect(tmp_path / "history.db") as db:
        status = db.execute("SELECT status FROM scan_runs WHERE id = 2").fetchone()[0]
    assert status == "aborted"  # never a complete run without its findings


def test_export_an_unwritable_output_exits_4(one_run: Path) -> None:
    """In this process: the report's refusal to write is its own sentence and exit 4."""
    folder = one_run
    (folder / "a-file").write_text("x", encoding="utf-8")
    result = read(folder, "report", "--format", "json", "--out", str(folder / "a-file" / "report.json"))
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot write" in result.stderr

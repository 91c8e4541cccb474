"""Issue 14: under `--log-format json` every line is one JSON object, also where click or a
signal speaks rather than a command: the scan's and preflight's signal messages (systemd
puts them in the JSON journal), click's usage error for an unknown command, and `prune`'s
listing on stdout (the monthly retention job runs it with --log-format json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_prune import history

from scanner.cli import cli
from scanner.cli.output import output
from scanner.store.repo import open_store


@pytest.fixture(autouse=True)
def _text_again() -> Iterator[None]:
    """The command line configures the process's one Output: give the next test text again."""
    yield
    output.configure(log_format="text")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="cas-audit")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line as a JSON object (fails on the first line that is not one)."""
    records = []
    for line in text.splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"not JSON: {line!r} in\n{text}")
            assert isinstance(record, dict) and {"time", "level", "event", "message"} <= set(record), line
            records.append(record)
    return records


def test_an_unknown_command_is_a_json_usage_error() -> None:
    result = run("--log-format", "json", "nosuchcommand")
    assert result.exit_code == 2, result.output
    [record] = json_lines(result.stderr)
    assert (record["level"], record["event"], record["exit_code"]) == ("error", "usage-error", 2)
    assert "No such command 'nosuchcommand'" in record["message"]
    assert record["hint"] == "see cas-audit --help"


@pytest.mark.parametrize(("args", "env"), [
    (("--log-format", "json", "--bogus", "history"), {}),
    (("--log-format=json", "--quiet=yes", "history"), {}),
    (("--bogus", "history"), {"CAS_AUDIT_LOG_FORMAT": "json"}),
], ids=["option", "flag-with-a-value", "environment"])
def test_a_usage_error_of_the_groups_own_options_is_json_too(args: tuple[str, ...], env: dict[str, str]) -> None:
    """Before: click's text ("Usage: cas-audit [OPTIONS] ..."): the group's options had not
    been parsed when their own error came."""
    result = CliRunner().invoke(cli, list(args), prog_name="cas-audit", env=env)
    assert result.exit_code == 2, result.output
    [record] = json_lines(result.stderr)
    assert (record["level"], record["event"], record["exit_code"]) == ("error", "usage-error", 2)
    assert record["message"].startswith("cas-audit: ") and record["hint"] == "see cas-audit --help"


def test_a_usage_error_of_the_groups_own_options_stays_text_when_text_is_asked() -> None:
    result = CliRunner().invoke(cli, ["--log-format", "text", "--bogus"], prog_name="cas-audit",
                                env={"CAS_AUDIT_LOG_FORMAT": "json"})
    assert result.exit_code == 2
    assert "Usage: cas-audit" in result.stderr and "No such option '--bogus'" in result.stderr


def test_an_unknown_command_stays_clicks_text_otherwise() -> None:
    result = run("nosuchcommand")
    assert result.exit_code == 2
    assert "Usage: cas-audit" in result.stderr and "No such command 'nosuchcommand'" in result.stderr


class LibraryWarning(UserWarning):
    """What a library raises with warnings.warn (pywinrm's Kerberos: NoCertificateRetrievedWarning)."""


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_librarys_python_warning_follows_the_log_format(capsys: pytest.CaptureFixture[str],
                                                          log_format: str) -> None:
    """Before: Python printed it raw ("file.py:163: NoCertificateRetrievedWarning: ..." and
    the source line), two lines that are no JSON, on every Kerberos logon over http."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        output.configure(log_format=log_format)  # as the command line does, inside the test's filters
        warnings.warn("Failed to get raw socket for CBT", LibraryWarning, stacklevel=1)
    err = capsys.readouterr().err
    if log_format == "json":
        [record] = json_lines(err)
        assert (record["level"], record["event"]) == ("warning", "python-warning")
        assert record["message"] == "LibraryWarning: Failed to get raw socket for CBT"
        assert record["source"].startswith("test_json_log_gaps.py:")
    else:
        assert err == "warning: LibraryWarning: Failed to get raw socket for CBT\n"


SIGNALLED = """
import signal
from scanner.cli.output import output
from scanner.cli.cmd_scan import Interrupts
output.configure(log_format=LOG_FORMAT)
with Interrupts() as interrupts:
    signal.raise_signal(signal.SIGINT)
    assert interrupts.stop.is_set()
    signal.raise_signal(signal.SIGINT)  # the second exits at once, with 130
raise SystemExit("not reached")
"""


@pytest.mark.slow  # a real process: a few seconds on a loaded machine
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_signal_messages_follow_the_log_format(log_format: str) -> None:
    """Interrupts is what scan and preflight install; a real process gets real signals."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    result = subprocess.run([sys.executable, "-c", SIGNALLED.replace("LOG_FORMAT", repr(log_format))],
                            capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 130, result.stderr
    if log_format == "json":
        first, second = json_lines(result.stderr)
        assert (first["level"], first["event"], first["signal"]) == ("warning", "signal", "SIGINT")
        assert first["message"] == "SIGINT: abandoning the servers in flight (again to exit at once)"
        assert (second["event"], second["message"], second["exit_code"]) == ("signal", "SIGINT again: exiting at once",
                                                                             130)
    else:
        assert result.stderr.split("\n") == ["", "SIGINT: abandoning the servers in flight (again to exit at once)",
                                             "", "SIGINT again: exiting at once", ""]


def test_prune_lists_in_json_lines_under_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    store = open_store(url)
    runs = history(store)
    store.close()
    dry = run("--log-format", "json", "prune", "--db", url, "--before", "2026-11-01")
    assert dry.exit_code == 0, dry.stderr
    records = json_lines(dry.stdout)
    assert [r["event"] for r in records] == ["prune-dry-run", "prune-remove", "prune-remove", "prune-keep",
                                             "prune-keep", "prune-summary"]
    assert [r["run_id"] for r in records if r["event"] == "prune-remove"] == [runs[0], runs[3]]
    assert all(r["applied"] is False for r in records if r["event"] == "prune-remove")
    summary = records[-1]
    assert summary["message"].startswith("would remove 2 run(s) started before 2026-11-01T00:00:00Z: ")
    assert (summary["before"], summary["runs_removed"], summary["runs_kept"]) == ("2026-11-01T00:00:00Z", 2, 2)
    assert summary["server_scans"] == 3 and summary["applied"] is False
    text = run("prune", "--db", url, "--before", "2026-11-01")  # the same listing as text
    assert [line for line in text.stdout.splitlines()] == [r["message"] for r in records]

    done = run("--log-format", "json", "prune", "--db", url, "--before", "2026-11-01", "--apply")
    assert done.exit_code == 0, done.stderr
    records = json_lines(done.stdout)
    assert records[-1]["event"] == "prune-summary" and records[-1]["applied"] is True
    assert records[-1]["message"].startswith("removed 2 run(s)")

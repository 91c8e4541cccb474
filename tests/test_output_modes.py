"""Scheduled and machine-read runs: `--log-format json` (one JSON object per stderr line, no
secret), `--quiet`, NO_COLOR, and the summary at the end of a scan. The scans run the command
line in this process (CliRunner) against the lab, as does the log format from the environment
(read when the command line is parsed); what depends on the process's start (colour
detection, with NO_COLOR) runs it in a child process, as cron or the Task Scheduler would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from labfleet import cas_audit_here, demo_fleet, running

from scanner.cli import cli
from scanner.cli.output import Output, output

pytestmark = pytest.mark.slow  # scans of the nine-server lab

# the lab's account here, used by no other test: no command in this process knows its password
# as a secret before this file's first scan, so that scan masks it only if the scan itself does.
# An account of its own, as the NTLM lab allows one password per account in a process (an
# xdist worker runs other files' labs after this one).
LAB_USER = "output-modes"
LAB_PASSWORD = "output-modes-Lab-Passw0rd"
SEVERITIES = ["critical", "high", "medium", "low", "info"]


def json_lines(stderr: str) -> list[dict[str, Any]]:
    records = []
    for line in stderr.splitlines():
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict), line
        assert {"time", "level", "event", "message"} <= set(record), line
        assert record["level"] in ("info", "warning", "error")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
        records.append(record)
    return records


@pytest.fixture(scope="module")
def lab_inventory(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("output-modes")
    fleet = demo_fleet("127.0.53.1")
    fleet = replace(fleet, lab=replace(fleet.lab, username=LAB_USER, password=LAB_PASSWORD))
    with running(fleet, folder) as (_lab, inventory):
        yield inventory


def test_json_log_lines_carry_the_scan_and_no_secret(tmp_path: Path, lab_inventory: Path) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    # no earlier command learnt the password: the first scan masks it as a fresh process would
    assert output.redact(LAB_PASSWORD) == LAB_PASSWORD, "run this file's tests in order"
    first = cas_audit_here("--log-format", "json", "scan", "--inventory", str(lab_inventory),
                           password=LAB_PASSWORD, db=db)
    second = cas_audit_here("--log-format", "json", "scan", "--inventory", str(lab_inventory),
                            password=LAB_PASSWORD, db=db)
    for result in (first, second):
        assert result.returncode == 3, result.stderr  # CAS08 refuses connections
        assert LAB_PASSWORD not in result.stdout + result.stderr
        assert result.stdout == ""
    records = json_lines(second.stderr)
    servers = [r for r in records if r["event"] == "server-scanned"]
    assert sorted(r["server"] for r in servers) == [f"CAS0{i}" for i in range(1, 10)]
    failed = [r for r in servers if r["status"] != "ok"]
    assert [(r["server"], r["level"], r["error_kind"]) for r in failed] == [("CAS08", "warning", "refused")]
    [summary] = [r for r in records if r["event"] == "scan-summary"]
    assert records[-1] is summary
    assert (summary["servers_planned"], summary["servers_scanned"], summary["servers_failed"]) == (9, 8, 1)
    assert summary["unscanned"] == [{"server": "CAS08", "error_kind": "refused"}]
    assert list(summary["active_findings"]) == SEVERITIES
    assert summary["active_findings"]["high"] >= 1
    assert summary["previous_run"] == summary["run"] - 1
    assert summary["new_findings"] == 0  # nothing changed between the two scans
    assert summary["exit_code"] == 3
    assert summary["history"].endswith("h.db")
    first_summary = json_lines(first.stderr)[-1]
    assert first_summary["previous_run"] is None
    assert first_summary["new_findings"] == sum(first_summary["active_findings"].values()) + first_summary[
        "waived_findings"] > 0


def test_a_wrong_password_never_reaches_the_log(tmp_path: Path, lab_inventory: Path) -> None:
    secret = "Wr0ng-Secret-Passw0rd"  # used by no other command in this process: none masks it already
    result = cas_audit_here("--log-format", "json", "scan", "--inventory", str(lab_inventory),
                       password=secret, db=f"sqlite:///{tmp_path / 'h.db'}")
    assert result.returncode == 3, result.stderr
    records = json_lines(result.stderr)
    assert {r["error_kind"] for r in records if r["event"] == "server-scanned"} == {"auth", "refused"}
    assert secret not in result.stdout + result.stderr


def test_quiet_prints_only_what_needs_attention(tmp_path: Path, lab_inventory: Path) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    quiet = cas_audit_here("--quiet", "scan", "--inventory", str(lab_inventory), password=LAB_PASSWORD, db=db)
    assert quiet.returncode == 3
    assert quiet.stderr.splitlines() == [
        f"warning: [{_position(quiet.stderr)}/9] CAS08: failed (refused): {_error_of(quiet.stderr)}"]
    loud = cas_audit_here("scan", "--inventory", str(lab_inventory), password=LAB_PASSWORD, db=db)
    lines = loud.stderr.splitlines()
    assert len([line for line in lines if re.match(r"\[\d/9\] CAS0\d: ok$", line)]) == 8
    summary = lines[lines.index(next(line for line in lines if line.startswith("run 2 partial"))):]
    assert summary[0] == "run 2 partial: 8 scanned, 1 failed, of 9 planned server(s)"
    assert summary[1] == "  not scanned: CAS08 (refused)"
    assert re.fullmatch(r"  active findings: (\d+ (critical|high|medium|low|info)(, )?)+", summary[2])
    # the second scan finds nothing new; XS-010 (refused logons since the previous scan) resolves
    assert re.match(r"  since run 1: 0 new, 3 resolved", summary[3])
    assert summary[4].startswith("  history: sqlite:///") and summary[4].endswith("h.db")
    assert summary[5] == "  reports: cas-audit report --run 2 --format xlsx (or json, csv)"
    assert re.fullmatch(r"  exit 3: a server could not be scanned \(\d+ active finding\(s\) at or above high\)",
                        summary[6])
    assert len(summary) <= 24  # one screen


def _position(stderr: str) -> int:
    return int(re.search(r"\[(\d)/9\] CAS08", stderr).group(1))  # type: ignore[union-attr]


def _error_of(stderr: str) -> str:
    return stderr.split("failed (refused): ", 1)[1].splitlines()[0]


def test_json_errors_are_json_too(tmp_path: Path) -> None:
    result = cas_audit_here("--log-format", "json", "scan", "--inventory", str(tmp_path / "missing.toml"),
                       db=f"sqlite:///{tmp_path / 'h.db'}")
    assert result.returncode == 2
    [record] = json_lines(result.stderr)
    assert (record["level"], record["event"], record["exit_code"]) == ("error", "error", 2)
    assert "missing.toml" in record["message"]


def test_log_format_from_the_environment(tmp_path: Path) -> None:
    """CAS_AUDIT_LOG_FORMAT is read when the command line is parsed (click's envvar), not when
    the process starts: in this process with the variable set, as cron's environment sets it."""
    result = CliRunner().invoke(cli, ["db", "upgrade"], prog_name="cas-audit",
                                env={"CAS_AUDIT_LOG_FORMAT": "json", "CAS_AUDIT_DB": f"sqlite:///{tmp_path / 'h.db'}"})
    assert result.exit_code == 0, result.stderr
    [record] = json_lines(result.stderr)
    assert record["message"].endswith("is at the current schema")


def test_every_known_secret_is_masked_in_every_mode(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = Output()
    for log_format in ("text", "json"):
        out.configure(log_format=log_format)
        out.add_secret("s3cret-value")
        out.info("connecting with s3cret-value")
        out.console.print("a command's own line: s3cret-value")  # what commands print via err_console
        out.error("failed: s3cret-value", hint="s3cret-value again")
        err = capsys.readouterr().err
        assert "s3cret-value" not in err
        assert err.count("***") == 4


COLOR_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def colours(text: str) -> set[int]:
    """The colour parameters (30-38, 40-48, 90-107) of every SGR sequence in `text`."""
    found = set()
    for params in COLOR_SGR.findall(text):
        for p in params.split(";"):
            if p and (30 <= int(p) <= 48 or 90 <= int(p) <= 107):
                found.add(int(p))
    return found


@pytest.mark.parametrize("no_color", [None, "1"])
def test_no_color_is_respected(tmp_path: Path, no_color: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CAS_AUDIT_LOG_FORMAT")}
    env.update(FORCE_COLOR="1", TERM="xterm-256color", CAS_AUDIT_DB=f"sqlite:///{tmp_path / 'h.db'}")
    if no_color:
        env["NO_COLOR"] = no_color
    # an error (red) with its hint (yellow): there is no history to report on
    result = subprocess.run([sys.executable, "-m", "scanner", "report", "--format", "json"], capture_output=True,
                            text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert "hint: " in COLOR_SGR.sub("", result.stderr)
    if no_color:
        assert colours(result.stderr) == set(), repr(result.stderr)
    else:  # the same run without NO_COLOR is coloured: the check above can see colour
        assert colours(result.stderr), repr(result.stderr)


def test_json_usage_errors_are_json_too(tmp_path: Path) -> None:
    result = cas_audit_here("--log-format", "json", "scan", "--inventory", "cas.toml", "--fail-on", "severe",
                       db=f"sqlite:///{tmp_path / 'h.db'}")
    assert result.returncode == 2
    [record] = json_lines(result.stderr)
    assert (record["level"], record["event"], record["exit_code"]) == ("error", "usage-error", 2)
    assert record["message"].startswith("cas-audit scan: Invalid value for '--fail-on'")
    text = cas_audit_here("scan", "--inventory", "cas.toml", "--fail-on", "severe", db=f"sqlite:///{tmp_path / 'h.db'}")
    assert text.returncode == 2 and "Usage: cas-audit scan" in text.stderr  # click's own text otherwise

"""The scheduling examples (docs/scheduling/, README.md "Scheduling") are real: systemd
accepts the units, cron the lines, schtasks the options, and cas-audit every command line.

systemd is checked by systemd itself (`systemd-analyze verify`, `systemd-analyze calendar`,
from Debian's systemd package, which .ci/run installs). cron and schtasks cannot run here:
their lines are checked against the documented syntax (crontab(5); Microsoft's
"schtasks create" reference in Windows Commands).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from test_cli_docs import parse_invocation

ROOT = Path(__file__).resolve().parent.parent
SCHEDULING = ROOT / "docs" / "scheduling"
README = (ROOT / "README.md").read_text(encoding="utf-8")
UNITS = sorted(SCHEDULING.glob("*.service")) + sorted(SCHEDULING.glob("*.timer"))
INSTALLED = "/opt/cas-audit/bin/cas-audit"  # where the units expect the virtual environment


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing in CI: .ci/run installs Debian's systemd package")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def test_the_units_are_there() -> None:
    names = {u.name for u in UNITS}
    assert {"cas-audit.service", "cas-audit.timer", "cas-audit-prune.service", "cas-audit-prune.timer"} <= names
    for name in names:
        assert f"`{name}`" in README or name in README, f"README.md does not mention {name}"


def verify(tmp_path: Path, units: list[Path]) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on copies whose ExecStart names this environment's cas-audit
    (verify refuses a command that does not exist); everything else is as shipped."""
    cas_audit = Path(sys.executable).with_name("cas-audit")
    assert cas_audit.exists(), cas_audit
    copies = []
    for unit in units:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text(encoding="utf-8").replace(INSTALLED, str(cas_audit)), encoding="utf-8")
        copies.append(str(copy))
    return subprocess.run([systemd_analyze(), "verify", "--man=no", *copies], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


def test_systemd_accepts_every_unit_without_a_warning(tmp_path: Path) -> None:
    result = verify(tmp_path, UNITS)
    assert result.returncode == 0, result.stderr
    # an unknown directive or section is only a warning (exit 0): any output is a failure
    assert result.stdout + result.stderr == ""


def test_verify_would_notice_an_unknown_directive(tmp_path: Path) -> None:
    bad = tmp_path / "src" / "cas-audit.service"
    bad.parent.mkdir()
    bad.write_text((SCHEDULING / "cas-audit.service").read_text(encoding="utf-8")
                   .replace("Nice=10", "Nice=10\nTimeoutSecs=5"), encoding="utf-8")
    result = verify(tmp_path, [bad])
    assert "Unknown key 'TimeoutSecs'" in result.stderr


def on_calendar(unit: Path) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in unit.read_text(encoding="utf-8").splitlines()
            if line.startswith("OnCalendar=")]


@pytest.mark.parametrize(("timer", "normalized"), [("cas-audit.timer", "*-*-* 02:30:00"),
                                                   ("cas-audit-prune.timer", "*-*-01 04:00:00")])
def test_on_calendar_parses(timer: str, normalized: str) -> None:
    [spec] = on_calendar(SCHEDULING / timer)
    result = subprocess.run([systemd_analyze(), "calendar", spec], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"Normalized form: {normalized}" in result.stdout
    bad = subprocess.run([systemd_analyze(), "calendar", "*-*-* 25:00:00"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0  # the check can fail


def test_readme_states_the_timer_schedule() -> None:
    assert "OnCalendar=*-*-* 02:30:00" in README
    assert on_calendar(SCHEDULING / "cas-audit.timer") == ["*-*-* 02:30:00"]


# -- cas-audit command lines in the scheduling files ----------------------------------------

SUBSTITUTION = re.compile(r'"\$\$?\([^)]*\)"')  # "$(date ...)" in sh, "$$(date ...)" in a unit
CAS_AUDIT = re.compile(r"(?:/opt/cas-audit/bin/|C:\\cas-audit\\venv\\Scripts\\)cas-audit(?:\.exe)?\s(.*)")


def invocations(text: str) -> list[str]:
    """Each cas-audit command line in `text`, as `cas-audit ...` up to a shell operator."""
    found = []
    for line in text.splitlines():
        line = SUBSTITUTION.sub("2025-11-01", line)
        for match in CAS_AUDIT.finditer(line):
            rest = re.split(r"\s*(?:;|>>|>|2>&1|'$)", match.group(1), maxsplit=1)[0]
            found.append("cas-audit " + rest.strip())
    return found


SCHEDULED = [(path.name, line) for path in sorted(SCHEDULING.iterdir())
             for line in invocations(path.read_text(encoding="utf-8"))]


def test_every_scheduling_file_runs_cas_audit() -> None:
    files = {name for name, _ in SCHEDULED}
    assert files == {"cas-audit.service", "cas-audit-prune.service", "cas-audit.cron", "cas-audit-nightly.cmd"}
    assert len(SCHEDULED) == 8  # unit: scan + report, prune; cron: 3; cmd: scan + report


@pytest.mark.parametrize(("name", "line"), SCHEDULED, ids=[f"{n}: {line[10:40]}" for n, line in SCHEDULED])
def test_scheduled_command_lines_parse(name: str, line: str) -> None:
    try:
        parse_invocation(line)
    except click.UsageError as exc:
        pytest.fail(f"{name}: {line!r} does not parse: {exc.format_message()}")


def test_the_unit_retention_line_is_what_systemd_runs() -> None:
    """In a unit $$ is a literal $ and %% a literal % (systemd.service(5), systemd.unit(5));
    the shell then computes the cut-off date."""
    text = (SCHEDULING / "cas-audit-prune.service").read_text(encoding="utf-8")
    [exec_start] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    command = exec_start.removeprefix("ExecStart=").replace("$$", "$").replace("%%", "%")
    words = shlex.split(command)
    assert words[:2] == ["/bin/sh", "-c"]
    script = words[2]
    date = re.search(r"\$\((date [^)]*)\)", script)
    assert date is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\d\n", subprocess.run(["sh", "-c", date.group(1)], capture_output=True,
                                                           text=True, timeout=30, check=True).stdout)


# -- cron -----------------------------------------------------------------------------------

# crontab(5): minute hour day-of-month month day-of-week; names for months and days.
CRON_FIELDS = [(0, 59, {}), (0, 23, {}), (1, 31, {}),
               (1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
               (0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())})]


def cron_field_ok(text: str, low: int, high: int, names: dict[str, int]) -> bool:
    for part in text.split(","):
        body, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if body == "*":
            continue
        ends = body.split("-")
        if len(ends) > 2:
            return False
        values = [names.get(e.lower(), int(e) if e.isdigit() else -1) for e in ends]
        if any(not low <= v <= high for v in values) or values != sorted(values):
            return False
    return True


def cron_jobs() -> list[tuple[list[str], str, str]]:
    jobs = []
    for line in (SCHEDULING / "cas-audit.cron").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 6)
        jobs.append((fields[:5], fields[5], fields[6]))
    return jobs


def test_cron_lines_are_valid_crontab_lines() -> None:
    jobs = cron_jobs()
    assert len(jobs) == 3
    for times, user, command in jobs:
        for text, (low, high, names) in zip(times, CRON_FIELDS, strict=True):
            assert cron_field_ok(text, low, high, names), f"bad cron field {text!r}"
        assert user == "cas-audit"
        # cron turns an unescaped % into a newline and feeds the rest to stdin
        assert not re.search(r"(?<!\\)%", command), command
    for bad in ("60", "*/0", "5-2", "1,x"):
        assert not cron_field_ok(bad, 0, 59, {})  # the check can fail


def test_cron_retention_date_expression_runs() -> None:
    [command] = [c for _, _, c in cron_jobs() if " prune " in c]
    date = re.search(r"\$\((date [^)]*)\)", command)
    assert date is not None
    expression = date.group(1).replace("\\%", "%")  # what cron hands to the shell
    result = subprocess.run(["sh", "-c", expression], capture_output=True, text=True, timeout=30, check=True)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d\n", result.stdout)


def test_readme_cron_line_is_the_shipped_one() -> None:
    shipped = (SCHEDULING / "cas-audit.cron").read_text(encoding="utf-8").splitlines()
    shown = [line for line in README.splitlines() if re.match(r"^[\d*]+ [\d*]+ [\d*]+ [\d*]+ [\d*]+ cas-audit ", line)]
    assert shown
    assert set(shown) <= set(shipped)


# -- Windows Task Scheduler ----------------------------------------------------------------

# "schtasks create", Windows Commands reference (learn.microsoft.com, windows-server/
# administration/windows-commands/schtasks-create) and "Schtasks.exe" (Win32 Task Scheduler):
# every option of /Create, and the values the reference lists.
SCHTASKS_CREATE = {"/SC", "/TN", "/TR", "/S", "/U", "/P", "/RU", "/RP", "/MO", "/D", "/M", "/I", "/ST", "/RI",
                   "/ET", "/DU", "/K", "/SD", "/ED", "/IT", "/NP", "/Z", "/XML", "/V1", "/F", "/RL", "/DELAY",
                   "/HRESULT"}
SCHTASKS_FLAGS = {"/K", "/IT", "/NP", "/Z", "/V1", "/F", "/HRESULT"}
SCHEDULE_TYPES = {"MINUTE", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "ONCE", "ONSTART", "ONLOGON", "ONIDLE",
                  "ONEVENT"}


def schtasks_lines() -> list[str]:
    return [line.strip() for line in README.splitlines() if line.strip().lower().startswith("schtasks ")]


def schtasks_options(line: str) -> dict[str, str | None]:
    words = [w.strip('"') for w in shlex.split(line, posix=False)]
    assert words[0].lower() == "schtasks" and words[1].lower() == "/create", line
    options: dict[str, str | None] = {}
    rest = words[2:]
    while rest:
        option = rest.pop(0).upper()
        assert option in SCHTASKS_CREATE, f"schtasks /Create has no option {option} ({line!r})"
        assert option not in options, f"{option} given twice"
        options[option] = None if option in SCHTASKS_FLAGS else rest.pop(0)
    return options


def test_schtasks_line_uses_real_options_and_values() -> None:
    [line] = schtasks_lines()
    options = schtasks_options(line)
    assert {"/SC", "/TN", "/TR"} <= set(options)
    assert (options["/SC"] or "").upper() in SCHEDULE_TYPES
    assert re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", options["/ST"] or "")  # HH:mm, 24-hour
    assert (options["/RL"] or "").upper() in ("LIMITED", "HIGHEST")
    assert len(options["/TN"] or "") <= 238 and len(options["/TR"] or "") <= 261
    assert "/NP" not in options  # an S4U task has no network access: see README
    assert (options["/TR"] or "").endswith("\\cas-audit-nightly.cmd")
    with pytest.raises(AssertionError):
        schtasks_options("schtasks /Create /TN x /TR y /SC DAILY /Every 2")  # the check can fail


def test_the_task_script_is_a_windows_batch_file() -> None:
    data = (SCHEDULING / "cas-audit-nightly.cmd").read_bytes()
    assert data.count(b"\r\n") == data.count(b"\n")  # CRLF throughout (.gitattributes keeps it)
    text = data.decode("ascii")
    assert "exit /b %SCAN_EXIT%" in text  # the scan's exit code is the task's Last Run Result
    assert text.index("set SCAN_EXIT=%ERRORLEVEL%") > text.index(" scan ")


def test_the_password_comes_from_the_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LoadCredential=cas-audit-password:... in cas-audit.service: systemd puts the file in
    $CREDENTIALS_DIRECTORY (systemd.exec(5), "Credentials")."""
    from scanner.cli.app import _password

    (tmp_path / "cas-audit-password").write_text("from-systemd\n", encoding="utf-8")
    monkeypatch.delenv("CAS_AUDIT_PASSWORD", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert _password("CONTOSO\\auditor") == "from-systemd"
    monkeypatch.setenv("CAS_AUDIT_PASSWORD", "from-environment")  # the environment still wins
    assert _password("CONTOSO\\auditor") == "from-environment"
    assert "LoadCredential=cas-audit-password:" in (SCHEDULING / "cas-audit.service").read_text(encoding="utf-8")


def test_readme_exit_code_table_covers_the_contract() -> None:
    """Every exit code a scheduler can see is explained once, and ExitCode has no other."""
    from scanner.errors import ExitCode

    section = README.split("### Exit codes, for alerting", 1)[1].split("\n### ", 1)[0]
    codes = [int(c) for c in re.findall(r"^\| (\d+) \|", section, re.M)]
    assert codes == [0, 1, 2, 3, 4, 130, 143]  # design contract: 130 SIGINT, 143 SIGTERM
    assert {int(code) for code in ExitCode} <= set(codes)


@pytest.mark.parametrize("source", ["cas-audit-prune.service", "cas-audit.cron"])
def test_the_retention_lines_run(tmp_path: Path, source: str) -> None:
    """The retention job as shipped, run by sh with this environment's cas-audit in place
    of /opt/cas-audit: the date expression, the quoting and prune's options all work."""
    text = (SCHEDULING / source).read_text(encoding="utf-8")
    if source.endswith(".service"):
        [line] = [x for x in text.splitlines() if x.startswith("ExecStart=")]
        script = shlex.split(line.removeprefix("ExecStart=").replace("$$", "$").replace("%%", "%"))[2]
    else:
        [script] = [c.replace("\\%", "%") for _, _, c in cron_jobs() if " prune " in c]
    script = script.replace(INSTALLED, str(Path(sys.executable).with_name("cas-audit")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    env["CAS_AUDIT_DB"] = f"sqlite:///{tmp_path / 'history.db'}"
    from scanner.store.db import upgrade_database

    upgrade_database(env["CAS_AUDIT_DB"])  # prune --apply refuses a missing history (exit 2)
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    if "--log-format json" in script:  # stdout follows the log format: one JSON object per line
        last = json.loads(last)["message"]
    assert re.match(r"removed 0 run\(s\) started before \d{4}-\d\d-\d\dT00:00:00Z", last), result.stdout


def unit_lines(unit: str, key: str) -> list[str]:
    return [x.split("=", 1)[1] for x in (SCHEDULING / unit).read_text(encoding="utf-8").splitlines()
            if x.startswith(key + "=")]


@pytest.mark.slow
def test_the_nightly_jobs_run_against_the_lab(tmp_path: Path) -> None:
    """The scan and report lines of cas-audit.service and cas-audit.cron, as written, with
    /etc/cas-audit, /var/lib/cas-audit and /opt/cas-audit moved into a temporary folder, run
    against two servers of the lab organisation: exit 3 (CAS08 refuses), then the workbook
    is written. (Two, not all nine: the lines, their environment and exit codes are under
    test, not the scan of each server, which test_scan_lab covers; four child processes
    scan nine servers or write their workbook for nothing more.)"""
    from dataclasses import replace

    from labfleet import demo_fleet, running

    from scanner.demo import demo_policy_path

    etc, var = tmp_path / "etc", tmp_path / "var"
    (var / "reports").mkdir(parents=True)
    etc.mkdir()
    moved = {"/etc/cas-audit": str(etc), "/var/lib/cas-audit": str(var),
             INSTALLED: str(Path(sys.executable).with_name("cas-audit"))}

    def move(text: str) -> str:
        for old, new in moved.items():
            text = text.replace(old, new)
        return text

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_") and k != "CREDENTIALS_DIRECTORY"}
    (etc / "password").write_text("lab-password\n", encoding="utf-8")
    (etc / "policy.toml").write_bytes(demo_policy_path().read_bytes())
    fleet = demo_fleet("127.0.54.1")
    fleet = replace(fleet, servers=(fleet.server("CAS01"), fleet.server("CAS08")))
    with running(fleet, etc) as (_lab, inventory):
        inventory.rename(etc / "cas.toml")
        # systemd: Environment=, LoadCredential= (the password file in $CREDENTIALS_DIRECTORY)
        env = dict(base_env)
        for assignment in unit_lines("cas-audit.service", "Environment"):
            name, value = move(assignment).split("=", 1)
            env[name] = value
        [credential] = unit_lines("cas-audit.service", "LoadCredential")
        name, path = move(credential).split(":", 1)
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / name).write_bytes(Path(path).read_bytes())
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
        [exec_start] = unit_lines("cas-audit.service", "ExecStart")
        scan = subprocess.run(shlex.split(move(exec_start)), capture_output=True, text=True, env=env, timeout=300,
                              stdin=subprocess.DEVNULL)
        assert scan.returncode == 3, scan.stderr
        assert [json.loads(x)["event"] for x in scan.stderr.splitlines()] == ["server-scanned"]  # --quiet: CAS08
        [stop_post] = unit_lines("cas-audit.service", "ExecStopPost")
        report_line = shlex.split(move(stop_post).lstrip("-"))
        report = subprocess.run(report_line, capture_output=True, text=True, env=env, timeout=300,
                                stdin=subprocess.DEVNULL)
        assert report.returncode == 0, report.stderr
        workbook = var / "reports" / "cas-audit-latest.xlsx"
        assert workbook.stat().st_size > 0
        # the second night replaces the first night's workbook: the same line and environment,
        # run in this process (CliRunner), as only the file it leaves is read
        from click.testing import CliRunner

        from scanner.cli import cli

        unit_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CAS_AUDIT_")}
        unit_env.update({k: v for k, v in env.items() if k.startswith("CAS_AUDIT_") or k == "CREDENTIALS_DIRECTORY"})
        workbook.write_bytes(b"last night's workbook")
        second = CliRunner().invoke(cli, report_line[1:], env=unit_env, prog_name="cas-audit")
        assert second.exit_code == 0, second.output
        assert workbook.read_bytes()[:2] == b"PK" and workbook.stat().st_size > 0  # an xlsx again

        # cron: the variable line, then each job's command through sh, as cron runs it
        env = dict(base_env)
        cron = (SCHEDULING / "cas-audit.cron").read_text(encoding="utf-8")
        for name, value in re.findall(r"^([A-Z_]+)=(\S+)$", cron, re.M):
            env[name] = move(value)
        env["CAS_AUDIT_DB"] = f"sqlite:///{tmp_path / 'cron.db'}"
        scan_job, report_job = [move(c) for _, _, c in cron_jobs() if " prune " not in c]
        scan = subprocess.run(["sh", "-c", scan_job], capture_output=True, text=True, env=env, timeout=300,
                              stdin=subprocess.DEVNULL)
        assert scan.returncode == 3, scan.stderr
        assert re.fullmatch(r"warning: \[\d/2\] CAS08: failed \(refused\): [^\n]*\n", scan.stderr)  # what cron mails
        report = subprocess.run(["sh", "-c", report_job], capture_output=True, text=True, env=env, timeout=300,
                                stdin=subprocess.DEVNULL)
        assert report.returncode == 0, report.stderr

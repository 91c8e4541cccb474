"""The session's leak check (tests/conftest.py, tests/leaks.py) in a pytest of its own: a
session that leaves a child and an orphan running (its parent gone, re-parented to init)
fails, names both (and not the process a test waited for) and ends them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a pytest session in a subprocess

HERE = Path(__file__).resolve().parent

LEAKY = '''
import subprocess

def test_leaves_a_child():
    subprocess.Popen(["sleep", "301"])

def test_leaves_an_orphan(tmp_path):
    # the shell starts sleep in the background and exits: sleep's parent is gone
    subprocess.run(["sh", "-c", "sleep 302 >/dev/null 2>&1 &"], check=True)

def test_waits_for_its_process():
    subprocess.run(["sleep", "0"], check=True)
'''

def session(tmp_path: Path, tests: str) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "inner"
    folder.mkdir()
    for name in ("conftest.py", "leaks.py"):
        shutil.copy(HERE / name, folder / name)
    (folder / "test_inner.py").write_text(tests, encoding="utf-8")
    env = {**os.environ, "PYTEST_CAS_AUDIT_LEAK_GRACE_S": "0.5", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(folder),
                           "-c", os.devnull, "--basetemp", str(tmp_path / "basetemp"), str(folder)],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=120, stdin=subprocess.DEVNULL)


def sleeping(seconds: str) -> list[str]:
    return [entry for entry in os.listdir("/proc") if entry.isdigit() and _cmdline(entry) == f"sleep {seconds}"]


def _cmdline(pid: str) -> str:
    try:
        return (Path("/proc") / pid / "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_session_leaving_processes_running_fails_and_ends_them(tmp_path: Path) -> None:
    done = session(tmp_path, LEAKY)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "3 passed" in done.stdout and "2 process(es) started by this test session still running" in done.stdout
    assert "sleep 301" in done.stdout and "sleep 302" in done.stdout and "(parent 1)" in done.stdout, done.stdout
    assert sleeping("301") == [] and sleeping("302") == []


"""The session's leak check (tests/conftest.py, tests/leaks.py) in a pytest of its own: a
session that leaves a child and an orphan running (its parent gone, re-parented to init)
fails, names both (and not the process a test waited for) and ends them. The same with
pytest-xdist's workers, as `make test` runs the suite: what a worker leaves running fails
the whole run, even a child whose environment was built from nothing (no session mark)."""

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

def test_leaves_an_unmarked_child():
    subprocess.Popen(["sleep", "303"], env={})  # no PATH: the default, /bin and /usr/bin
'''

def session(tmp_path: Path, tests: str, *options: str) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "inner"
    folder.mkdir()
    for name in ("conftest.py", "leaks.py"):
        shutil.copy(HERE / name, folder / name)
    (folder / "test_inner.py").write_text(tests, encoding="utf-8")
    env = {**os.environ, "PYTEST_CAS_AUDIT_LEAK_GRACE_S": "0.5", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(folder),
                           "-c", os.devnull, "--basetemp", str(tmp_path / "basetemp"), *options, str(folder)],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=120, stdin=subprocess.DEVNULL)


def sleeping(seconds: str) -> list[str]:
    return [entry for entry in os.listdir("/proc") if entry.isdigit() and _cmdline(entry) == f"sleep {seconds}"]


def _cmdline(pid: str) -> str:
    try:
        return (Path("/proc") / pid / "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.parametrize("options", [(), ("-p", "xdist", "-n", "2")], ids=["serial", "xdist"])
def test_a_session_leaving_processes_running_fails_and_ends_them(tmp_path: Path, options: tuple[str, ...]) -> None:
    done = session(tmp_path, LEAKY, *options)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "4 passed" in done.stdout and "3 process(es) started by this test session still running" in done.stdout
    for seconds in ("301", "302", "303"):
        assert f"sleep {seconds}" in done.stdout, done.stdout
    assert "(parent 1)" in done.stdout, done.stdout
    assert sleeping("301") == [] and sleeping("302") == [] and sleeping("303") == []

"""The command line's garbage collection (scanner/util/gcpolicy.py): `cas-audit` starts
with the young generation's threshold raised while the modules load, then freezes its heap
and collects every THRESHOLD allocations once a command's work starts; a process that did
not start through the command line (a library caller, this test session) keeps its own
settings. Each case runs the real entry point in a child process, where the collector's
state is read when the command is done."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from scanner.store.repo import open_store
from scanner.util import gcpolicy

# the real entry point, then the collector's state printed as the process ends
ENTRY = """
import atexit, gc, json, sys
atexit.register(lambda: print("GC " + json.dumps([gc.get_threshold()[0], gc.get_freeze_count()]), file=sys.stderr))
sys.argv = ["cas-audit", *sys.argv[1:]]
import runpy
runpy.run_module("scanner", run_name="__main__")
"""


def _state_after(*args: str) -> tuple[int, int, subprocess.CompletedProcess[str]]:
    done = subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    line = [x for x in done.stderr.splitlines() if x.startswith("GC ")][-1]
    threshold, frozen = json.loads(line[3:])
    return threshold, frozen, done


def test_a_command_with_a_history_freezes_the_start_up_heap(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    open_store(url).close()  # an empty history
    threshold, frozen, done = _state_after("history", "--db", url)
    assert "holds no scan yet" in done.stderr, done.stderr  # it read the history
    assert threshold == gcpolicy.THRESHOLD
    assert frozen > 50_000  # the command line, SQLAlchemy, alembic, the store: frozen


def test_a_command_that_never_settles_is_still_collected() -> None:
    threshold, frozen, done = _state_after("--help")
    assert done.returncode == 0, done.stderr
    assert (threshold, frozen) == (gcpolicy.START_UP_THRESHOLD, 0)


def test_a_process_that_did_not_start_through_the_command_line_keeps_its_settings() -> None:
    before = gc.get_threshold(), gc.get_freeze_count()
    gcpolicy.settle()
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    assert not gcpolicy.started()

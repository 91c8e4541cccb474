"""Run liveness: a run whose scanner died (kill -9, power loss) does not stay `running`.
The next command that opens the history records it `aborted`; `--run latest` means the
latest finished run; an aborted run is reported only when asked for by id, and then, like
in `history` and `diff`, shown as aborted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from labfleet import demo_fleet, running
from rules_fixtures import T0, server
from test_cli_errors import cas_audit, db_url

from scanner.store.liveness import STALE_AFTER, this_process
from scanner.store.repo import Store, open_store

pytestmark = pytest.mark.slow  # scanner and reader processes of the cas-audit command


def _begin(store: Store, *, host: str, pid: int | None, names: tuple[str, ...] = ("CAS01", "CAS02")) -> int:
    observations = [server(name, value=False) for name in names]
    return store.begin_run(planned=[(o.name, o.address, o.site) for o in observations], tool_version="test",
                           operator="tester", scanning_host=host, inventory_sha256="0" * 64,
                           started_at=T0, owner_pid=pid)


def _gone_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_whose_process_is_gone_is_recorded_aborted_keeping_its_results(sqlite_url: str) -> None:
    with open_store(sqlite_url) as store:
        run_id = _begin(store, host=this_process().host, pid=_gone_pid())
        store.record_server(run_id, server("CAS01", value=False))  # committed before the kill
    with open_store(sqlite_url) as store:  # whatever command opens the history next
        run = store.run(run_id)
        assert run.status == "aborted"
        assert run.end_reason is not None and "ended without finishing" in run.end_reason
        assert (run.servers_scanned, run.servers_failed) == (1, 0)
        assert [o.name for o in store.server_observations(run_id)] == ["CAS01"]


def test_a_live_scanner_on_this_host_keeps_its_run(sqlite_url: str) -> None:
    me = this_process()
    with open_store(sqlite_url) as store:
        run_id = _begin(store, host=me.host, pid=me.pid)
        assert store.abort_dead_runs(now=T0 + timedelta(days=365)) == []  # alive beats any heartbeat age
    with open_store(sqlite_url) as store:
        assert store.run(run_id).status == "running"


def test_another_hosts_run_is_judged_by_its_heartbeat(store_url: str) -> None:
    with open_store(store_url) as store:
        run_id = _begin(store, host="scanner-in-another-site", pid=4242)
        beat = store.run(run_id).heartbeat_at
        assert beat is not None
        assert store.abort_dead_runs(now=beat + STALE_AFTER - timedelta(seconds=5)) == []
        store.heartbeat(run_id)
        later = store.run(run_id).heartbeat_at
        assert later is not None and later >= beat
        assert store.abort_dead_runs(now=later + STALE_AFTER + timedelta(seconds=5)) == [run_id]
        run = store.run(run_id)
        assert run.status == "aborted" and "no heartbeat" in (run.end_reason or "")


def test_a_late_finish_does_not_revive_an_aborted_run(sqlite_url: str) -> None:
    with open_store(sqlite_url) as store:
        run_id = _begin(store, host="elsewhere", pid=1)
        beat = store.run(run_id).heartbeat_at
        assert beat is not None
        store.abort_dead_runs(now=beat + STALE_AFTER * 2)
        assert store.finish_run(run_id, "complete") == "aborted"
        assert store.run(run_id).status == "aborted"


@pytest.fixture
def finished_then_dead(tmp_path: Path) -> Path:
    """Run 1 complete (with its findings); run 2 killed after one server."""
    from scanner.judge.catalog import load_catalog
    from scanner.judge.evaluate import evaluate_run
    from scanner.judge.policy import Policy

    with open_store(db_url(tmp_path)) as store:
        first = _begin(store, host="here", pid=None, names=("CAS01",))
        store.record_server(first, server("CAS01", value=True))
        evaluation = evaluate_run(store, first, Policy.default(), load_catalog())
        store.save_findings(first, evaluation.findings, evaluation.resolved)
        store.finish_run(first, "complete", finished_at=T0 + timedelta(minutes=1))
        second = _begin(store, host=this_process().host, pid=_gone_pid())
        store.record_server(second, server("CAS01", value=False))
    return tmp_path


def test_latest_means_the_latest_finished_run(finished_then_dead: Path) -> None:
    latest = cas_audit(finished_then_dead, "report", "--format", "json")
    assert latest.returncode == 0, latest.stderr.decode()
    assert json.loads(latest.stdout)["run"]["id"] == 1


def test_an_aborted_run_asked_for_by_id_is_shown_as_aborted(finished_then_dead: Path) -> None:
    result = cas_audit(finished_then_dead, "report", "--run", "2", "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["run"]["status"] == "aborted"
    assert {s["name"]: s["scan_status"] for s in report["servers"]}["CAS02"] != "ok"
    assert "run 2 is aborted" in result.stderr.decode()
    for fmt in ("xlsx", "csv"):
        other = cas_audit(finished_then_dead, "report", "--run", "2", "--format", fmt, "--out",
                          str(finished_then_dead / f"r.{fmt}"))
        assert "run 2 is aborted" in other.stderr.decode(), fmt
    history = cas_audit(finished_then_dead, "history")
    row = next(line for line in history.stdout.decode().splitlines() if line.strip("│ ").startswith("2 "))
    assert "aborted" in row
    diff = cas_audit(finished_then_dead, "diff", "1", "2")
    assert "run 2 (aborted)" in diff.stdout.decode()
    assert "run 2 is aborted" in diff.stderr.decode()


def test_kill_9_during_a_scan_leaves_an_aborted_run(tmp_path: Path) -> None:
    fleet = demo_fleet("127.0.36.1")
    # three servers are enough: two recorded, CAS03 stalling while the scan is killed (the
    # other six of the demo would only cost the scanner's time)
    fleet = replace(fleet, servers=(fleet.server("CAS01"), fleet.server("CAS02"),
                                    replace(fleet.server("CAS03"), fault="slow")))
    with running(fleet, tmp_path) as (_lab, inventory):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
        env.update(CAS_AUDIT_DB=db_url(tmp_path), CAS_AUDIT_PASSWORD="lab-password")
        scan = subprocess.Popen([sys.executable, "-m", "scanner", "scan", "--inventory", str(inventory),
                                 "--timeout", "600"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            recorded = 0
            others = len(fleet.servers) - 1  # all but the stalling one
            while time.monotonic() < deadline and recorded < others:
                time.sleep(0.3)
                try:
                    with sqlite3.connect(tmp_path / "history.db") as db:
                        recorded = db.execute("SELECT count(*) FROM server_scans").fetchone()[0]
                except sqlite3.Error:
                    pass
            assert recorded == others
        finally:
            os.kill(scan.pid, signal.SIGKILL)
            scan.wait()
    history = cas_audit(tmp_path, "history")
    assert history.returncode == 0, history.stderr.decode()
    row = next(line for line in history.stdout.decode().splitlines() if line.strip("│ ").startswith("1 "))
    assert "aborted" in row and "running" not in row
    latest = cas_audit(tmp_path, "report", "--format", "json")
    assert latest.returncode == 2 and b"no finished scan" in latest.stderr

"""Issue 14: liveness across hosts. Heartbeats are written and judged with the database's
clock, so a scanner host whose clock is 15 minutes off (libfaketime's `faketime` on a real
process) neither has its live run recorded aborted by a reader with a correct clock, nor
keeps its dead run `running` longer than STALE_AFTER."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from scanner.store.db import upgrade_database
from scanner.store.liveness import STALE_AFTER
from scanner.store.repo import open_store

pytestmark = pytest.mark.slow  # a scanner process under faketime

# A scanner on another host (so only its heartbeat can tell whether it lives): begins a
# run, renews its heartbeat, records a server, and exits leaving the run `running`.
SCANNER = """
import sys
from datetime import UTC, datetime
from scanner.parse.observe import failed
from scanner.store.repo import open_store
with open_store(sys.argv[1]) as store:
    run_id = store.begin_run(planned=[("CAS01", "cas01", None)], tool_version="t", operator="o",
                             scanning_host="scanner-with-a-wrong-clock", inventory_sha256="0" * 64,
                             owner_pid=4242)
    store.heartbeat(run_id)
    now = datetime.now(UTC)
    store.record_server(run_id, failed("CAS01", "cas01", None, "timeout", "slow", now, now))
    print(run_id, now.isoformat())
"""


def scanner_with_clock_off_by(url: str, offset: str) -> tuple[int, datetime]:
    """Run SCANNER under `faketime -f OFFSET`; its run id and the time its clock showed."""
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.fail("libfaketime's faketime is not installed (apt-get install faketime)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    done = subprocess.run([faketime, "-f", offset, sys.executable, "-c", SCANNER, url], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    run_id, clock = done.stdout.split()
    return int(run_id), datetime.fromisoformat(clock)


def database_now(url: str) -> datetime:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            moment = conn.execute(text("SELECT now()")).scalar_one()
    finally:
        engine.dispose()
    assert isinstance(moment, datetime)
    return moment.astimezone(UTC)


def test_a_live_run_of_a_scanner_whose_clock_is_behind_stays_running(pg_url: str) -> None:
    upgrade_database(pg_url)
    run_id, clock = scanner_with_clock_off_by(pg_url, "-15m")
    assert clock < datetime.now(UTC) - STALE_AFTER  # the skew is real
    with open_store(pg_url) as store:  # a reader with a correct clock
        run = store.run(run_id)
        assert run.status == "running", run.end_reason
        assert run.heartbeat_at is not None and abs(run.heartbeat_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_a_dead_run_of_a_scanner_whose_clock_is_ahead_is_aborted_in_time(pg_url: str) -> None:
    upgrade_database(pg_url)
    run_id, clock = scanner_with_clock_off_by(pg_url, "+15m")
    assert clock > datetime.now(UTC) + STALE_AFTER
    with open_store(pg_url) as store:
        assert store.run(run_id).status == "running"  # its heartbeat is fresh
        later = database_now(pg_url) + STALE_AFTER + timedelta(minutes=1)  # no heartbeat since
        assert store.abort_dead_runs(now=later) == [run_id]
        run = store.run(run_id)
        assert run.status == "aborted" and "no heartbeat" in (run.end_reason or "")

"""Issue 14: `prune --apply` and a running scan exclude each other, on SQLite and
PostgreSQL. A real scan of the lab organisation is held running by a server that stalls
(fault "slow") until the lab stops; meanwhile `prune --apply --wait 0` refuses (exit 4,
nothing removed) and `prune --apply --wait 5` waits, saying so, and removes the old run
once the scan has finished. The scan keeps every result either way (before the fix prune
removed runs under a running scan; on PostgreSQL a scan that referred to a document prune
was deleting failed with a foreign-key violation)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from labfleet import cas_audit_here, demo_fleet, running
from rules_fixtures import server
from test_history import record
from test_upgrade_wait import first_line

from scanner.store.repo import open_store

pytestmark = pytest.mark.slow  # a lab scan and prune processes

OLD = datetime(2025, 1, 6, 8, tzinfo=UTC)


def cas_audit(url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    env.update(CAS_AUDIT_DB=url, CAS_AUDIT_PASSWORD="lab-password")
    return subprocess.Popen([sys.executable, "-m", "scanner", *args], env=env, text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_prune_and_a_running_scan_exclude_each_other(store_url: str, tmp_path: Path) -> None:
    """One running scan for both: `--wait 0` is refused while it runs, then `--wait 5` waits
    for it and removes the old run once it has finished."""
    fleet = demo_fleet("127.0.61.1")
    # two servers: CAS01 is recorded (the run is running), CAS03 stalls until the lab stops
    fleet = replace(fleet, servers=(fleet.server("CAS01"), replace(fleet.server("CAS03"), fault="slow")))
    names = [s.name for s in fleet.servers]
    with open_store(store_url) as store:  # two old runs: the first holds nothing anyone needs
        old = [record(store, [server(n, at=OLD + timedelta(days=d)) for n in names], OLD + timedelta(days=d))
               for d in (0, 7)]
    prune: subprocess.Popen[str] | None = None
    scan: subprocess.Popen[str] | None = None
    try:
        with running(fleet, tmp_path) as (lab, inventory):
            scan = cas_audit(store_url, "scan", "--inventory", str(inventory), "--timeout", "600")
            line = ""
            while not re.match(r"\[\d+/\d+\] ", line):  # a server is recorded: the run is running
                line = scan.stderr.readline() if scan.stderr else ""
                assert line, "the scan ended before it recorded a server"
            # refused at once: prune runs in this process, the scan in its own
            refused = cas_audit_here("prune", "--before", "2025-06-01", "--apply", "--wait", "0", db=store_url)
            assert refused.returncode == 4, refused.stderr
            assert "error: a scan is still running on this history (run 3 on" in refused.stderr
            assert "nothing was removed" in refused.stderr and "removed" not in refused.stdout
            with open_store(store_url) as store:
                assert sorted(r.id for r in store.runs()) == [*old, 3]
            # waits, saying so, in a process of its own until the scan has finished
            prune = cas_audit(store_url, "prune", "--before", "2025-06-01", "--apply", "--wait", "5")
            said = first_line(prune.stderr, timeout=60)
            assert said is not None and "waiting for the scan(s) running on this history to finish" in said, said
            assert "run 3 on" in said and prune.poll() is None
            lab.stop()  # the stalled server's answer ends: the scan finishes
            _out, scan_err = scan.communicate(timeout=120)
        assert scan.returncode == 3, scan_err  # CAS03 failed
        out, err = prune.communicate(timeout=120)
        assert prune.returncode == 0, err
        assert out.splitlines()[-1].startswith("removed 1 run(s) started before 2025-06-01T00:00:00Z"), out
        with open_store(store_url) as store:
            kept = {r.id: r for r in store.runs()}
            assert sorted(kept) == [old[1], 3]
            assert kept[3].status == "partial" and kept[3].servers_scanned + kept[3].servers_failed == len(names)
            results = {o.name: o.scan_status for o in store.server_observations(3)}
            assert len(results) == len(names) and results["CAS03"] == "error"
            assert store.findings(3)  # evaluated and saved
    finally:
        for process in (prune, scan):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_a_write_waits_for_prunes_deletion_on_postgresql(pg_url: str) -> None:
    """While prune's deletion holds the retention lock, a scan's write waits for it, saying so
    (before: it wrote at once, and could refer to a document prune was deleting)."""
    import logging
    import threading

    from sqlalchemy import create_engine, text

    from scanner.store.db import PG_RETENTION_LOCK_KEY, upgrade_database

    upgrade_database(pg_url)
    said = threading.Event()

    class Heard(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for `cas-audit prune` to finish" in record.getMessage():
                said.set()

    heard = Heard()
    logging.getLogger("scanner").addHandler(heard)
    engine = create_engine(pg_url)
    began: list[int] = []
    try:
        with open_store(pg_url) as store, engine.connect() as prune_side:
            writer = threading.Thread(target=lambda: began.append(store.begin_run(
                planned=[("CAS01", "cas01", None)], tool_version="t", operator="o", scanning_host="h",
                inventory_sha256="0" * 64)))
            with prune_side.begin():  # as Store.delete_runs holds it
                prune_side.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_RETENTION_LOCK_KEY})
                writer.start()
                assert said.wait(timeout=30)
                assert prune_side.execute(text("SELECT count(*) FROM scan_runs")).scalar() == 0
            writer.join(timeout=30)
            assert began and store.run(began[0]).status == "running"
    finally:
        logging.getLogger("scanner").removeHandler(heard)
        engine.dispose()

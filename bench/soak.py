"""Soak: kill -9 the scanner at random moments, then check that the history never lies.

    .venv/bin/python bench/soak.py                 # 20 kills on SQLite and 20 on PostgreSQL
    .venv/bin/python bench/soak.py --scans 5 --backends sqlite --seed 7

Runs the demo organisation of the lab on loopback (every answer delayed by --latency-ms,
so a scan takes a few seconds) and, per backend, a first full scan to time a scan. Then,
--scans times: start `cas-audit scan`, kill it with SIGKILL after a random time between
0 and one scan's duration, run `cas-audit history` (the next command that opens the
history), and check:

- integrity: SQLite `PRAGMA integrity_check` is "ok" and `PRAGMA foreign_key_check` finds
  nothing; PostgreSQL enforces its constraints itself, and for both every stored row of a
  run belongs to a planned server of that run;
- no run is shown as `running`, and none as `complete` or `partial` unless every planned
  server has its result and its findings were saved (the demo organisation always has
  findings);
- every server the killed scanner reported as done (its `[k/n] NAME:` line, printed
  after the commit) is in the history: rows lost must be 0;
- the next scan succeeds: an uninterrupted scan afterwards finishes with every server
  recorded (exit 3: the demo's CAS08 refuses connections, by design).

Prints the figures for README.md, "Reliability"; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import relocate_fleet
from scanner.lab.serve import Lab, demo_fleet_path

PG_ADMIN = os.environ.get("CAS_AUDIT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DONE_LINE = re.compile(r"^(?:warning: )?\[\d+/\d+\] (\S+): ")


@dataclass
class Figures:
    backend: str
    kills: int = 0
    killed_mid_run: int = 0  # the run was recorded aborted
    killed_before_run: int = 0  # killed before the run was recorded
    finished_before_kill: int = 0
    servers_committed_before_kill: int = 0
    rows_lost: int = 0
    integrity_ok: int = 0
    next_scan_ok: int = 0
    failures: list[str] = field(default_factory=list)


def _env(db: str, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_AUDIT_")}
    env.update(CAS_AUDIT_DB=db, CAS_AUDIT_PASSWORD="lab-password", XDG_STATE_HOME=str(folder / "state"))
    return env


def _cas_audit(db: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner", *args], env=_env(db, folder), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=600)


def _check(db: str, figures: Figures, label: str, killed_run: int | None, reported: set[str]) -> None:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            ok = True
            if engine.dialect.name == "sqlite":
                integrity = conn.exec_driver_sql("PRAGMA integrity_check").scalar()
                broken_fk = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                if integrity != "ok" or broken_fk is not None:
                    figures.failures.append(f"{label}: integrity_check {integrity!r}, foreign key {broken_fk}")
                    ok = False
            stray = conn.execute(text(
                "SELECT count(*) FROM server_scans s WHERE NOT EXISTS (SELECT 1 FROM run_servers p "
                "WHERE p.run_id = s.run_id AND p.server_id = s.server_id)")).scalar()
            if stray:
                figures.failures.append(f"{label}: {stray} result(s) of servers not planned in their run")
                ok = False
            figures.integrity_ok += ok
            running = conn.execute(text("SELECT id FROM scan_runs WHERE status = 'running'")).scalars().all()
            if running:
                figures.failures.append(f"{label}: run(s) {running} still shown as running")
            finished = conn.execute(text(
                "SELECT r.id, r.servers_planned, "
                "(SELECT count(*) FROM server_scans s WHERE s.run_id = r.id), "
                "(SELECT count(*) FROM findings f WHERE f.run_id = r.id) "
                "FROM scan_runs r WHERE r.status IN ('complete', 'partial')")).all()
            for run_id, planned, results, findings in finished:
                if results != planned or findings == 0:
                    figures.failures.append(f"{label}: run {run_id} shown finished with {results}/{planned} "
                                            f"results and {findings} findings")
            if killed_run is not None:
                names = set(conn.execute(text(
                    "SELECT v.name FROM server_scans s JOIN servers v ON v.id = s.server_id WHERE s.run_id = :r"),
                    {"r": killed_run}).scalars().all())
                lost = reported - names
                figures.rows_lost += len(lost)
                if lost:
                    figures.failures.append(f"{label}: servers reported done but lost: {sorted(lost)}")
    finally:
        engine.dispose()


def _latest_run(db: str) -> tuple[int, str] | None:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT id, status FROM scan_runs ORDER BY id DESC LIMIT 1")).first()
            return (int(row[0]), str(row[1])) if row is not None else None
    except Exception:
        return None
    finally:
        engine.dispose()


def soak(backend: str, db: str, inventory: Path, folder: Path, scans: int, rng: random.Random) -> Figures:
    figures = Figures(backend)
    duration = 0.0
    for _ in range(2):  # the first creates the schema; the second times an ordinary scan
        started = time.monotonic()
        first = _cas_audit(db, folder, "scan", "--inventory", str(inventory))
        duration = time.monotonic() - started
        if first.returncode != 3:
            figures.failures.append(f"first scan exited {first.returncode}: {first.stderr[-500:]}")
            return figures
    for index in range(1, scans + 1):
        label = f"{backend} kill {index}"
        before = _latest_run(db)
        log = folder / f"scan-{backend}-{index}.log"
        with open(log, "w", encoding="utf-8") as err:
            scan = subprocess.Popen([sys.executable, "-m", "scanner", "scan", "--inventory", str(inventory)],
                                    env=_env(db, folder), stdout=subprocess.DEVNULL, stderr=err,
                                    stdin=subprocess.DEVNULL)
            time.sleep(rng.uniform(0, duration))
            scan.send_signal(signal.SIGKILL)
            code = scan.wait()
        figures.kills += 1
        reported = {m.group(1) for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                    if (m := DONE_LINE.match(line))}
        figures.servers_committed_before_kill += len(reported)
        after = _latest_run(db)
        killed_run = after[0] if after is not None and after != before and (before is None or after[0] > before[0]) \
            else None
        history = _cas_audit(db, folder, "history")  # the next command that opens the history
        if history.returncode != 0:
            figures.failures.append(f"{label}: history exited {history.returncode}: {history.stderr[-300:]}")
        status = _latest_run(db)
        if killed_run is None:
            figures.killed_before_run += 1
        elif code != -signal.SIGKILL:
            figures.finished_before_kill += 1
        elif status is not None and status[0] == killed_run and status[1] == "aborted":
            figures.killed_mid_run += 1
        elif status is not None and status[1] in ("complete", "partial"):
            figures.finished_before_kill += 1  # killed after its last commit, while printing
        _check(db, figures, label, killed_run, reported)
        following = _cas_audit(db, folder, "scan", "--inventory", str(inventory))
        latest = _latest_run(db)
        if following.returncode == 3 and latest is not None and latest[1] == "partial":
            figures.next_scan_ok += 1
        else:
            figures.failures.append(f"{label}: next scan exited {following.returncode} ({latest}): "
                                    f"{following.stderr[-300:]}")
    _check(db, figures, f"{backend} end", None, set())
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=20, help="kills per backend (default 20)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--latency-ms", type=int, default=150, help="lab delay per HTTP answer (default 150)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    fleet = relocate_fleet(load_fleet(demo_fleet_path()), "127.0.39.1", 0)
    fleet = replace(fleet, lab=replace(fleet.lab, latency_ms=args.latency_ms))
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="cas-audit-soak-") as tmp, Lab(fleet) as lab:
        folder = Path(tmp)
        inventory = folder / "inventory.toml"
        lab.write_inventory(inventory)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                results.append(soak(backend, f"sqlite:///{folder / 'soak.db'}", inventory, folder, args.scans, rng))
                continue
            admin = create_engine(make_url(PG_ADMIN), isolation_level="AUTOCOMMIT")
            name = f"cas_audit_soak_{uuid.uuid4().hex[:12]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
                results.append(soak(backend, url, inventory, folder, args.scans, rng))
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    print(f"soak: seed {seed}, lab latency {args.latency_ms} ms, demo organisation ({len(fleet.servers)} servers)")
    print("| backend | kills | mid-run (aborted) | before the run | after the last commit | "
          "servers committed before a kill | rows lost | integrity ok | next scan ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in results:
        print(f"| {f.backend} | {f.kills} | {f.killed_mid_run} | {f.killed_before_run} | {f.finished_before_kill} | "
              f"{f.servers_committed_before_kill} | {f.rows_lost} | {f.integrity_ok}/{f.kills + 1} | "
              f"{f.next_scan_ok}/{f.kills} |")
    failures = [failure for f in results for failure in f.failures]
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

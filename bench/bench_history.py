"""Issue 9's benchmark: a long generated history (bench/history_gen.py), measured.

Generates two histories of the same servers, one of `--days` (365) and one of
`--short-days` (30) daily runs, on SQLite and (with --pg) on PostgreSQL, then measures on
each, medians of `--repeats`, long and short interleaved in one process:
- evaluating the newest run (`evaluate_run`: reads, checks, lifecycle; not saving), and
  the ratio long/short;
- `history --server` (timeline of one server, both protocols) and `diff` of the two
  newest runs, as the commands compute them;
- the newest run's report and the organisation view as of its end, JSON and xlsx
  (model built and rendered);
- bytes per server scan: SQLite file size after VACUUM (page_count x page_size) divided by
  servers x runs; PostgreSQL: pg_total_relation_size of every table (with indexes and
  TOAST) after VACUUM FULL, divided likewise.

    .venv/bin/python bench/bench_history.py --servers 1000 --days 365 --pg postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from history_gen import generate
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from scanner.facts import is_active
from scanner.judge.catalog import load_catalog
from scanner.judge.evaluate import evaluate_run
from scanner.judge.policy import Policy
from scanner.report.build import build_report
from scanner.report.history import diff, timeline
from scanner.report.organisation import build_organisation_report
from scanner.report.write import render
from scanner.store.repo import Store, open_store


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s"


def size_sqlite(url: str) -> int:
    path = make_url(url).database
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages * size)
    finally:
        conn.close()


def size_pg(url: str) -> int:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM FULL"))
            return int(conn.execute(text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'")).scalar() or 0)
    finally:
        engine.dispose()


def measure(label: str, long_url: str, short_url: str, args: argparse.Namespace) -> None:
    catalog = load_catalog()
    policy = Policy.default()
    stores = {"long": open_store(long_url), "short": open_store(short_url)}
    newest = {k: int(s.latest_run_id() or 0) for k, s in stores.items()}
    times: dict[str, list[float]] = {"long": [], "short": []}
    evaluation = None
    for _ in range(args.repeats):
        for key in ("long", "short"):
            seconds, result = timed(lambda key=key: evaluate_run(stores[key], newest[key], policy, catalog))
            times[key].append(seconds)
            if key == "long":
                evaluation = result
    assert evaluation is not None
    states = Counter(f.state for f in evaluation.findings)
    print(f"[{label}] evaluate newest run ({args.servers} servers): {args.days} days {median(times['long'])}, "
          f"{args.short_days} days {median(times['short'])}, ratio "
          f"{statistics.median(times['long']) / statistics.median(times['short']):.2f} "
          f"(findings by state {dict(states)}, resolved {len(evaluation.resolved)})")
    for key, store in stores.items():
        result = evaluate_run(store, newest[key], policy, catalog)
        store.save_findings(newest[key], result.findings, result.resolved)

    store: Store = stores["long"]
    run = store.run(newest["long"])
    server = "CAS0001"
    history_times = [timed(lambda: timeline(store, server))[0] for _ in range(args.repeats)]
    diff_times = [timed(lambda: diff(store, newest["long"] - 1, newest["long"]))[0] for _ in range(args.repeats)]
    print(f"[{label}] history --server {server} ({len(timeline(store, server))} rows): {median(history_times)}; "
          f"diff {newest['long'] - 1} {newest['long']}: {median(diff_times)}")
    for fmt in ("json", "xlsx"):
        seconds = [timed(lambda fmt=fmt: render(build_report(store, newest["long"]), fmt))[0] for _ in range(args.repeats)]
        print(f"[{label}] report of the newest run, {fmt}: {median(seconds)}")
    as_of = (run.finished_at or run.started_at) + timedelta(minutes=1)
    for fmt in ("json", "xlsx"):
        seconds = [timed(lambda fmt=fmt: render(build_organisation_report(store, as_of), fmt))[0]
                   for _ in range(args.repeats)]
        print(f"[{label}] organisation view as of the newest run, {fmt}: {median(seconds)}")
    for s in stores.values():
        s.close()
    size = size_pg(long_url) if long_url.startswith("postgresql") else size_sqlite(long_url)
    scans = args.servers * args.days
    print(f"[{label}] size {size / 1e6:.1f} MB for {scans} server scans: {size / scans:.0f} bytes per server scan")


def measure_runs_list(label: str, url: str, args: argparse.Namespace) -> None:
    """`cas-audit history` without --server: the runs with their active findings, counted
    in one query (issue 14), against the former one findings read per run."""
    store = open_store(url)
    try:
        runs = store.runs()
        for run in runs:  # the generator leaves the newest run without findings
            if not store.findings(run.id) and run.id == runs[0].id:
                result = evaluate_run(store, run.id, Policy.default(), load_catalog())
                store.save_findings(run.id, result.findings, result.resolved)

        def one_query() -> dict[int, int]:
            counts = store.active_finding_counts()
            return {run.id: counts.get(run.id, 0) for run in store.runs()}

        def per_run() -> dict[int, int]:
            return {run.id: sum(1 for f in store.findings(run.id) if is_active(f.state)) for run in store.runs()}

        assert one_query() == per_run()
        new = [timed(one_query)[0] for _ in range(args.repeats)]
        old = [timed(per_run)[0] for _ in range(args.repeats)]
        print(f"[{label}] history (list of {len(runs)} runs x {args.servers} servers, active findings): "
              f"one query {median(new)}; one findings read per run (before issue 14) {median(old)}")
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="issue 9 history benchmark")
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--short-days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="folder for the SQLite files (default: a temporary one)")
    parser.add_argument("--pg", default=None, help="PostgreSQL URL of an existing database with CREATE DATABASE rights")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--runs-list", action="store_true",
                        help="measure only `history` (the list of runs) and prune on a history of --days runs")
    args = parser.parse_args()
    folder = Path(args.dir or tempfile.mkdtemp(prefix="cas-audit-bench-"))
    if args.runs_list:
        runs_list_only(folder, args)
        return
    if not args.skip_sqlite:
        urls = {}
        for key, days in (("long", args.days), ("short", args.short_days)):
            path = folder / f"history-{args.servers}x{days}.db"
            path.unlink(missing_ok=True)
            urls[key] = f"sqlite:///{path}"
            seconds, counts = timed(lambda url=urls[key], days=days: generate(url, args.servers, days, quiet=True))
            print(f"[sqlite] generated {args.servers} x {days} in {seconds:.1f} s: {counts}")
        measure("sqlite", urls["long"], urls["short"], args)
    if args.pg:
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        names = []
        try:
            urls = {}
            for key, days in (("long", args.days), ("short", args.short_days)):
                name = f"cas_audit_bench_{uuid.uuid4().hex[:10]}"
                names.append(name)
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                urls[key] = admin.url.set(database=name).render_as_string(hide_password=False)
                seconds, counts = timed(lambda url=urls[key], days=days: generate(url, args.servers, days, quiet=True))
                print(f"[postgresql] generated {args.servers} x {days} in {seconds:.1f} s: {counts}")
            measure("postgresql", urls["long"], urls["short"], args)
        finally:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def measure_prune(label: str, url: str, args: argparse.Namespace) -> None:
    """`prune --apply` of the oldest quarter of the runs, in its three steps: the plan, the
    contexts kept runs' reports read from the removed runs (before the lock), and the
    deletion (in the transaction that holds the retention lock: scans wait for it)."""
    from datetime import UTC, datetime

    from scanner.report.context import evidence_to_keep
    from scanner.store.retention import plan

    store = open_store(url)
    try:
        runs = sorted(r.id for r in store.runs())
        before = store.run(runs[len(runs) // 4]).started_at
        seconds_plan, result = timed(lambda: plan(store, before, now=datetime.now(UTC)))
        removed = [r.id for r in result.removed]
        seconds_keep, contexts = timed(lambda: evidence_to_keep(store, removed))
        seconds_delete, counts = timed(lambda: store.delete_runs(removed, apply=True, contexts=contexts,
                                                                 newest_run=result.newest_run))
        print(f"[{label}] prune --apply of {len(removed)} of {len(runs)} runs x {args.servers} servers: plan "
              f"{seconds_plan:.2f} s, kept contexts of {len(contexts)} runs {seconds_keep:.2f} s, deletion "
              f"under the lock {seconds_delete:.2f} s ({counts})")
    finally:
        store.close()


def runs_list_only(folder: Path, args: argparse.Namespace) -> None:
    if not args.skip_sqlite:
        path = folder / f"history-{args.servers}x{args.days}.db"
        path.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
        generate(url, args.servers, args.days, quiet=True)
        measure_runs_list("sqlite", url, args)
        measure_prune("sqlite", url, args)
    if args.pg:
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        name = f"cas_audit_bench_{uuid.uuid4().hex[:10]}"
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            generate(url, args.servers, args.days, quiet=True)
            measure_runs_list("postgresql", url, args)
            measure_prune("postgresql", url, args)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()

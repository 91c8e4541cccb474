"""`cas-audit verify` over a generated history: N servers x D daily runs (history_gen.py,
which seals every run), then the chain recomputed from the rows, timed.

    .venv/bin/python bench/bench_verify.py --servers 1000 --days 365 --db /tmp/verify.db
    .venv/bin/python bench/bench_verify.py --url postgresql+psycopg://postgres@127.0.0.1:5432/verify_bench \\
        --code /tmp/before --code . --cold --repeats 2

Each `verify` is a child process (start-up included); its wall time, CPU time (user +
system) and peak resident set (`ru_maxrss` of that child, from `wait4`) are printed with
the load average (the database server's CPU is not in it). `--code DIR`
(repeatable) runs verify with DIR first on PYTHONPATH, alternating between them, to
compare two versions on the same database in the same minutes. `--cold` evicts the
operating system's cache of the database's files before each verify (posix_fadvise
DONTNEED: the SQLite file, or the files of the PostgreSQL database, which needs this
process to read the server's data directory; PostgreSQL's own shared buffers are not
emptied). An existing history (the SQLite file, or a PostgreSQL database holding runs)
is reused.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from history_gen import generate
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError


def _evict(paths: list[Path]) -> int:
    """Drop the page cache of `paths` (files, or every file under a folder); returns bytes covered."""
    total = 0
    for path in paths:
        for file in ([path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]):
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return total


def _database_files(url: str, sqlite_file: Path | None) -> list[Path]:
    if sqlite_file is not None:
        return [p for p in (sqlite_file, Path(f"{sqlite_file}-wal"), Path(f"{sqlite_file}-shm")) if p.exists()]
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            folder = conn.execute(text("SELECT current_setting('data_directory') || '/base/' || oid FROM pg_database "
                                       "WHERE datname = current_database()")).scalar_one()
    finally:
        engine.dispose()
    return [Path(folder)]


def _has_runs(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT count(*) FROM scan_runs")).scalar_one())
    except SQLAlchemyError:  # an empty database: no tables yet
        return False
    finally:
        engine.dispose()


def _verify(url: str, code: str | None) -> tuple[int, float, float, float, str]:
    env, cwd = dict(os.environ), None
    if code is not None:  # first on the path, and the working folder (`-m` puts that first)
        cwd = str(Path(code).resolve())
        env["PYTHONPATH"] = os.pathsep.join([cwd, env.get("PYTHONPATH", "")])
        imported = subprocess.run([sys.executable, "-c", "import scanner; print(scanner.__file__)"], env=env,
                                  cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        assert imported.startswith(cwd), f"{imported} is not from {cwd}"
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "scanner", "verify", "--db", url], env=env, cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = child.stdout.read() if child.stdout is not None else ""
    _, status, usage = os.wait4(child.pid, 0)
    took = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return child.returncode, took, cpu, usage.ru_maxrss / 1024, " ".join(out.split())[:150]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--db", type=Path, default=Path("/tmp/cas-audit-verify.db"), help="SQLite file")
    parser.add_argument("--url", default=None, help="another database URL (e.g. an empty PostgreSQL database)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--code", action="append", default=None,
                        help="a source tree to verify with (repeatable; default: the installed scanner)")
    parser.add_argument("--cold", action="store_true", help="evict the database files from the page cache first")
    args = parser.parse_args()
    url = args.url or f"sqlite:///{args.db}"
    sqlite_file = args.db if args.url is None else None
    if (sqlite_file is not None and sqlite_file.exists()) or (args.url is not None and _has_runs(url)):
        print(f"reusing {url}")
    else:
        started = time.perf_counter()
        generate(url, args.servers, args.days)
        print(f"generated and sealed in {time.perf_counter() - started:.1f} s")
    files = _database_files(url, sqlite_file)
    for repeat in range(args.repeats):
        for code in args.code or [None]:
            evicted = f", evicted {_evict(files) / 2**20:.0f} MiB" if args.cold else ""
            load = os.getloadavg()[0]
            code_rc, took, cpu, peak, out = _verify(url, code)
            print(f"[{repeat + 1}] {code or 'installed'}: exit {code_rc} in {took:.1f} s ({cpu:.1f} s CPU), "
                  f"peak RSS {peak:.0f} MiB, "
                  f"load {load:.1f}{evicted}: {out}", flush=True)


if __name__ == "__main__":
    main()

"""`cas-audit verify` over a generated history: N servers x D daily runs (history_gen.py,
which seals every run), then the chain recomputed from the rows, timed.

    .venv/bin/python bench/bench_verify.py --servers 1000 --days 365 --db /tmp/verify.db
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from history_gen import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--db", type=Path, default=Path("/tmp/cas-audit-verify.db"), help="SQLite file")
    parser.add_argument("--url", default=None, help="another database URL (e.g. an empty PostgreSQL database)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    url = args.url or f"sqlite:///{args.db}"
    if args.url is None and args.db.exists():
        print(f"reusing {args.db}")
    else:
        started = time.perf_counter()
        generate(url, args.servers, args.days)
        print(f"generated and sealed in {time.perf_counter() - started:.1f} s")
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "scanner", "verify", "--db", url],
                                capture_output=True, text=True, check=False)
        took = time.perf_counter() - started
        print(f"verify: exit {result.returncode} in {took:.1f} s: {(result.stdout or result.stderr).strip()[:160]}")


if __name__ == "__main__":
    main()

"""CPU per server of a lab scan, profiled with pyinstrument (issue 9).

A lab of N servers (copies of the demo's CAS01, four sites) runs in a child process; this
process scans it twice into a fresh SQLite history (the second scan has a history to read,
as a nightly scan does) and reports the scanner's own CPU time (user + system, from
getrusage: the lab's work is not in it) per server, split into the main thread (storing
the results, evaluating) and the others (collecting), the wall time, and pyinstrument's
profile of the second scan's main thread. Basic and NTLM by default, one after the other. The
garbage collector runs as in `cas-audit` (scanner/util/gcpolicy.py: start_up before the
imports, settle before the first scan), or with CPython's defaults (--no-gc-policy). It also times what runs serially before the servers are
submitted: the per-server event cut-off query of before (`last_successful_scan_time`, once
per server) against the one query that replaced it.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/bench_scan_cpu.py --servers 1000                # Basic, then NTLM
    .venv/bin/python bench/bench_scan_cpu.py --servers 200 --auth ntlm --no-profile
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scanner.util import gcpolicy

# the garbage collector as `cas-audit` runs it (scanner/util/gcpolicy.py): start_up before
# the imports, as the command line's entry does; settle once the history is open
GC_POLICY = "--no-gc-policy" not in sys.argv
if GC_POLICY:
    gcpolicy.start_up()

from scanner.inventory import load_inventory  # noqa: E402 - after gcpolicy.start_up
from scanner.judge.catalog import load_catalog  # noqa: E402
from scanner.judge.policy import Policy  # noqa: E402
from scanner.scan import run_scan  # noqa: E402
from scanner.store.repo import open_store  # noqa: E402

TESTS = Path(__file__).resolve().parent.parent / "tests"
LAB = """
import sys, time
sys.path.insert(0, {tests!r})
from labfleet import many_servers
from scanner.lab.serve import Lab
from pathlib import Path
with Lab(many_servers({n}, ("Berlin", "Hamburg", "Munich", "Vienna"), "127.0.11.1", {auth!r})) as lab:
    lab.write_inventory(Path({inventory!r}))
    print("ready", flush=True)
    sys.stdin.read()
"""


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu() -> float:
    return time.thread_time()


def bench(auth: str, servers: int, concurrency: int, profile: bool) -> tuple[float, float]:
    """Two scans of a lab of `servers` with `auth`; returns the ms CPU per server of both."""
    folder = Path(tempfile.mkdtemp(prefix="cas-audit-cpu-"))
    inventory_path = folder / "inventory.toml"
    code = LAB.format(tests=str(TESTS), n=servers, auth=auth, inventory=str(inventory_path))
    lab = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert lab.stdout is not None and lab.stdout.readline().strip() == "ready"
        inventory = load_inventory(inventory_path)
        store = open_store(f"sqlite:///{folder / 'history.db'}")
        catalog, policy = load_catalog(), Policy.default()
        gcpolicy.settle()  # as `cas-audit scan` does before run_scan (nothing with --no-gc-policy)
        os.environ.setdefault("CAS_AUDIT_PASSWORD", "lab-password")
        per_server: list[float] = []

        def scan(label: str) -> None:
            c0, t0, w0 = cpu(), thread_cpu(), time.perf_counter()
            outcome = run_scan(inventory, store=store, password="lab-password", policy=policy, catalog=catalog,
                               concurrency=concurrency, timeout_s=120)
            total, main_thread, wall = cpu() - c0, thread_cpu() - t0, time.perf_counter() - w0
            per_server.append(total / servers * 1000)
            print(f"{label} scan ({auth}): {outcome.status}, {outcome.scanned} scanned; CPU {total:.1f} s = "
                  f"{per_server[-1]:.1f} ms per server (main thread: storing and evaluating "
                  f"{main_thread / servers * 1000:.1f} ms, other threads: collecting "
                  f"{(total - main_thread) / servers * 1000:.1f} ms); wall {wall:.1f} s", flush=True)

        scan("first")
        profiler = None
        if profile:
            from pyinstrument import Profiler  # the bench extra; not needed with --no-profile

            profiler = Profiler(interval=0.002)
        if profiler is not None:
            profiler.start()
        scan("second")
        if profiler is not None:
            profiler.stop()
        names = [t.name for t in inventory.targets]
        started = time.perf_counter()
        for name in names:
            store.last_successful_scan_time(name)
        each = time.perf_counter() - started
        started = time.perf_counter()
        store.last_successful_scan_times(names)
        once = time.perf_counter() - started
        print(f"event cut-off before submitting: one query per server {each:.2f} s "
              f"({each / len(names) * 1000:.2f} ms each), one query for all {once * 1000:.0f} ms")
        if profiler is not None:
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        store.close()
    finally:
        if lab.stdin is not None:
            lab.stdin.close()
        lab.wait(timeout=120)
    return per_server[0], per_server[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per server of a lab scan")
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--auth", choices=("basic", "ntlm"), nargs="+", default=["basic", "ntlm"])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip pyinstrument's profile of the second scan")
    parser.add_argument("--no-gc-policy", action="store_true",
                        help="CPython's default garbage collection, not the command line's (gcpolicy.py)")
    args = parser.parse_args()
    results = {auth: bench(auth, args.servers, args.concurrency, args.profile) for auth in args.auth}
    print(f"ms of scanner CPU per server, {args.servers} servers, concurrency {args.concurrency}, "
          f"{'the command line' if GC_POLICY else 'CPython'}'s garbage collection:")
    for auth, (first, second) in results.items():
        print(f"  {auth}: first scan {first:.1f}, second scan {second:.1f}")


if __name__ == "__main__":
    main()

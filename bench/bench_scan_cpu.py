"""CPU per server of a lab scan, profiled with pyinstrument (issue 9).

A lab of N servers (copies of the demo's CAS01, four sites) runs in a child process; this
process scans it twice into a fresh SQLite history (the second scan has a history to read,
as a nightly scan does) and reports the scanner's own CPU time (user + system, from
getrusage: the lab's work is not in it) per server, the wall time, and pyinstrument's
profile of the second scan. It also times what runs serially before the servers are
submitted: the per-server event cut-off query of before (`last_successful_scan_time`, once
per server) against the one query that replaced it.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/bench_scan_cpu.py --servers 1000 --auth basic
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

from pyinstrument import Profiler

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy
from scanner.scan import run_scan
from scanner.store.repo import open_store

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


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per server of a lab scan")
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--auth", choices=("basic", "ntlm"), default="basic")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cas-audit-cpu-"))
    inventory_path = folder / "inventory.toml"
    code = LAB.format(tests=str(TESTS), n=args.servers, auth=args.auth, inventory=str(inventory_path))
    lab = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert lab.stdout is not None and lab.stdout.readline().strip() == "ready"
        inventory = load_inventory(inventory_path)
        store = open_store(f"sqlite:///{folder / 'history.db'}")
        catalog, policy = load_catalog(), Policy.default()
        os.environ.setdefault("CAS_AUDIT_PASSWORD", "lab-password")

        def scan() -> tuple[float, float, str]:
            c0, w0 = cpu(), time.perf_counter()
            outcome = run_scan(inventory, store=store, password="lab-password", policy=policy, catalog=catalog,
                               concurrency=args.concurrency, timeout_s=120)
            return cpu() - c0, time.perf_counter() - w0, f"{outcome.status}, {outcome.scanned} scanned"

        first = scan()
        print(f"first scan ({args.auth}): {first[2]}; CPU {first[0]:.1f} s = {first[0] / args.servers * 1000:.1f} ms "
              f"per server; wall {first[1]:.1f} s", flush=True)
        profiler = Profiler(interval=0.002)
        profiler.start()
        second = scan()
        profiler.stop()
        print(f"second scan ({args.auth}): {second[2]}; CPU {second[0]:.1f} s = "
              f"{second[0] / args.servers * 1000:.1f} ms per server; wall {second[1]:.1f} s", flush=True)
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
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        store.close()
    finally:
        if lab.stdin is not None:
            lab.stdin.close()
        lab.wait(timeout=120)


if __name__ == "__main__":
    main()

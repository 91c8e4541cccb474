"""Issue 9, part 3: storage grows with change, not with time, tested at the store: 100
servers x 30 daily runs recorded, evaluated and their findings saved as `run_scan` does
(one transaction per run's results), take at most 1,000 bytes per server scan, measured as
the database's pages (page_count x page_size) after VACUUM; the issue measured 2,350 before
scans and findings were stored as shared documents.

The observations are real: one clean lab server (the demo's CAS01, NTLM) collected twice
through pywinrm, its first scan (with the event window of a first scan: refused logons,
XS-010) and a later one. Each server's scan is that observation under its own name, site
and day. The same figure through 30 real lab scans of 100 servers (45 s) is
bench/bench_storage_growth.py, recorded in bench/README.md."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from labfleet import database_bytes, many_servers

from scanner.judge.catalog import load_catalog
from scanner.judge.evaluate import evaluate_run
from scanner.judge.policy import Policy
from scanner.lab.serve import Lab
from scanner.parse.observe import ServerObservation
from scanner.scan import FIRST_SCAN_EVENT_WINDOW, scan_one
from scanner.store.repo import open_store

SERVERS, SCANS = 100, 30
SITES = ("Berlin", "Hamburg", "Munich", "Vienna")
FIRST = datetime(2026, 12, 1, 2, tzinfo=UTC)


def lab_observations(tmp_path: Path) -> tuple[ServerObservation, ServerObservation]:
    """A clean CAS's first scan and a later one, collected from the lab."""
    from scanner.inventory import load_inventory

    with Lab(many_servers(1, SITES, "127.0.10.1", auth="ntlm")) as lab:
        lab.write_inventory(tmp_path / "inventory.toml")
        target = load_inventory(tmp_path / "inventory.toml").targets[0]
        now = datetime.now(UTC)
        first = scan_one(target, "lab-password", now - FIRST_SCAN_EVENT_WINDOW, 30)
        later = scan_one(target, "lab-password", first.finished_at, 30)
    assert first.scan_status == later.scan_status == "ok", (first.error, later.error)
    return first, later


def as_server(obs: ServerObservation, index: int, day: int) -> ServerObservation:
    """`obs` as server `index`'s scan on day `day`."""
    name, site = f"{SITES[index % len(SITES)][:3].upper()}{index:03d}", SITES[index % len(SITES)]
    shift = FIRST + timedelta(days=day, seconds=index) - obs.started_at
    return replace(obs, name=name, address=f"{name.lower()}.contoso.test", site=site, computer=name,
                   reported_site=site, started_at=obs.started_at + shift, finished_at=obs.finished_at + shift,
                   events_since=None if obs.events_since is None else obs.events_since + shift)


@pytest.mark.slow  # two lab collections and 30 evaluated runs: seconds
def test_thirty_scans_of_a_hundred_servers_stay_under_1000_bytes_each(tmp_path: Path) -> None:
    first_scan, later_scan = lab_observations(tmp_path)
    assert first_scan.protocols["pop3"].refused_logons  # the first scan reads the lab's refused logons
    db = tmp_path / "history.db"
    catalog, policy = load_catalog(), Policy.default()
    runs = []
    with open_store(f"sqlite:///{db}") as store:
        for day in range(SCANS):
            scans = [as_server(first_scan if day == 0 else later_scan, i, day) for i in range(SERVERS)]
            run_id = store.begin_run(planned=[(o.name, o.address, o.site) for o in scans], tool_version="test",
                                     operator="tester", scanning_host="here", inventory_sha256="0" * 64,
                                     policy_text=policy.source_text, started_at=FIRST + timedelta(days=day))
            store.record_servers(run_id, scans)
            evaluation = evaluate_run(store, run_id, policy, catalog)
            store.save_findings(run_id, evaluation.findings, evaluation.resolved)
            assert store.finish_run(run_id, "complete", finished_at=FIRST + timedelta(days=day, hours=1)) == \
                "complete"
            runs.append(run_id)
        first_findings = len(store.findings(runs[0]))
    assert first_findings >= SERVERS  # the first scan reports every server's refused logons (XS-010)
    per_scan = database_bytes(db) / (SERVERS * SCANS)
    assert per_scan <= 1000, f"{per_scan:.0f} bytes per server scan"

"""Issue 9, part 4: `cas-audit prune --before DATE [--apply]` on SQLite and PostgreSQL.

Five runs of three servers: runs 1 and 4 hold nothing the organisation view still needs
and go; run 2 (CAS03's only observation) and run 3 (CAS02's latest) stay although they are
older than the date; run 5 is newer. Kept runs' reports and the organisation view read
the same afterwards; a config file only a removed run had is gone."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from labfleet import cas_audit_here
from test_store import CONFIG_UTF16, protocol_obs, server_obs

from scanner.judge.catalog import load_catalog
from scanner.judge.evaluate import evaluate_run
from scanner.judge.policy import Policy
from scanner.report.build import build_report
from scanner.report.organisation import build_organisation_report
from scanner.report.write import render
from scanner.store.repo import Store, open_store

DAY = datetime(2026, 10, 1, 8, tzinfo=UTC)
EDITED = CONFIG_UTF16.replace("true".encode("utf-16-le"), "false".encode("utf-16-le"))
ONLY_IN_RUN_4 = b'<?xml version="1.0"?><configuration><appSettings/></configuration><!-- run 4 -->'


def history(store: Store) -> list[int]:
    catalog = load_catalog()
    policy = Policy.default()
    plan = {1: ("CAS01", "CAS02"), 2: ("CAS01", "CAS02", "CAS03"), 3: ("CAS01", "CAS02"), 4: ("CAS01",), 5: ("CAS01",)}
    runs = []
    for number, names in plan.items():
        start = DAY + timedelta(days=number) if number < 5 else DAY + timedelta(days=50)
        run_id = store.begin_run(planned=[(n, n.lower(), "Berlin") for n in names], tool_version="t",
                                 operator="o", scanning_host="h", inventory_sha256="0" * 64, started_at=start)
        for name in names:
            obs = server_obs(name, start=start)
            if number == 4:  # CAS01's files, seen only in run 4
                obs = server_obs(name, start=start, protocols={
                    "pop3": protocol_obs("pop3", EDITED, allow_cross_site=False),
                    "imap4": protocol_obs("imap4", ONLY_IN_RUN_4, allow_cross_site=False)})
            store.record_server(run_id, obs)
        store.finish_run(run_id, "complete", finished_at=start + timedelta(minutes=5))
        evaluation = evaluate_run(store, run_id, policy, catalog)
        store.save_findings(run_id, evaluation.findings, evaluation.resolved)
        runs.append(run_id)
    return runs


@pytest.mark.slow  # two histories of several runs, pruned and read back: seconds
def test_prune_keeps_what_the_organisation_view_and_kept_runs_need(store_url: str) -> None:
    store = open_store(store_url)
    runs = history(store)
    now = DAY + timedelta(days=51)
    kept_reports = {r: render(build_report(store, r), "json") for r in (runs[1], runs[2], runs[4])}
    view = render(build_organisation_report(store, now), "json")
    only_run_4 = hashlib.sha256(ONLY_IN_RUN_4).hexdigest()
    assert store.config_blob(only_run_4) == ONLY_IN_RUN_4
    store.close()

    dry = cas_audit_here("prune", "--before", "2026-11-01", db=store_url)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "dry run: nothing is removed without --apply"
    assert [line.split("  ")[0] for line in lines if line.startswith("would remove run")] == [
        f"would remove run {runs[0]}", f"would remove run {runs[3]}"]
    keeping = [line for line in lines if line.startswith("keeping run")]
    assert keeping[0].startswith(f"keeping run {runs[1]} ") and "latest observation of CAS03" in keeping[0]
    assert keeping[1].startswith(f"keeping run {runs[2]} ") and "latest observation of CAS02" in keeping[1]
    assert lines[-1].startswith("would remove 2 run(s) started before 2026-11-01T00:00:00Z: 3 server scan(s), "
                                "6 observation(s)")
    store = open_store(store_url)
    assert [r.id for r in store.runs()] == list(reversed(runs))  # a dry run changes nothing
    store.close()

    done = cas_audit_here("prune", "--before", "2026-11-01", "--apply", db=store_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == lines[-1].replace("would remove", "removed")

    store = open_store(store_url)
    try:
        assert sorted(r.id for r in store.runs()) == [runs[1], runs[2], runs[4]]
        for run_id, before in kept_reports.items():
            assert render(build_report(store, run_id), "json") == before
        assert render(build_organisation_report(store, now), "json") == view
        assert store.config_blob(only_run_4) is None  # only the removed run 4 had it
        assert store.config_blob(hashlib.sha256(CONFIG_UTF16).hexdigest()) == CONFIG_UTF16
        assert [run_id for run_id, _obs in store.history("CAS01")] == [runs[1], runs[2], runs[4]]
    finally:
        store.close()

    again = cas_audit_here("prune", "--before", "2026-11-01", "--apply", db=store_url)
    assert again.returncode == 0 and again.stdout.splitlines()[-1].startswith("removed 0 run(s)")


def test_prune_refuses_a_bad_date(sqlite_url: str) -> None:
    result = cas_audit_here("prune", "--before", "last tuesday", db=sqlite_url)
    assert result.returncode == 2
    assert "--before must be a date" in result.stderr


def test_a_scan_that_begins_after_prunes_plan_stops_its_deletion(history_url: str) -> None:
    """The window the issue found (prune deleting documents a new scan refers to) is closed
    under the retention lock: a run that began after prune planned (here: while prune
    gathers the kept runs' context, the last step before deleting) makes the deletion
    change nothing, and with no time to wait prune refuses (HistoryBusyError, exit 4)."""
    from scanner.store.retention import HistoryBusyError, prune

    with open_store(history_url) as store, open_store(history_url) as scanner:
        runs = history(store)
        began: list[int] = []

        def a_scan_begins(removed: object) -> dict[int, str]:
            began.append(scanner.begin_run(planned=[("CAS09", "cas09", "Berlin")], tool_version="t", operator="o",
                                           scanning_host="another-host", inventory_sha256="0" * 64))
            return {}

        with pytest.raises(HistoryBusyError, match="a scan is still running on this history") as refused:
            prune(store, datetime(2026, 11, 1, tzinfo=UTC), apply=True, now=DAY + timedelta(days=51), wait_s=0,
                  keep_evidence=a_scan_begins)
        assert f"run {began[0]} on another-host" in str(refused.value)
        assert [r.id for r in store.runs()] == [began[0], *reversed(runs)]  # nothing removed
        assert store.run(began[0]).status == "running"

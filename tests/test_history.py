"""History data for `cas-audit history`, `diff` and the Changes sheet, from a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from rules_fixtures import SP1, SP3, failed, proto, server

from scanner.judge.catalog import load_catalog
from scanner.judge.evaluate import evaluate_run
from scanner.judge.policy import Policy
from scanner.parse.observe import ServerObservation
from scanner.report.history import changes, diff, timeline
from scanner.store.repo import Store, open_store

DAYS = [datetime(2026, 11, 20, 8, 0, tzinfo=UTC) + timedelta(days=7 * i) for i in range(4)]


@pytest.fixture
def store(sqlite_history_url: str) -> Iterator[Store]:
    with open_store(sqlite_history_url) as s:
        yield s


def record(store: Store, observations: Sequence[ServerObservation], at: datetime) -> int:
    run_id = store.begin_run(
        planned=[(o.name, o.address, o.site) for o in observations], tool_version="t", operator="o",
        scanning_host="h", inventory_sha256="0" * 64, started_at=at,
    )
    for obs in observations:
        store.record_server(run_id, obs)
    store.finish_run(run_id, "complete" if all(o.scan_status == "ok" for o in observations) else "partial", finished_at=at)
    policy = Policy.default()
    evaluation = evaluate_run(store, run_id, policy, load_catalog())
    store.save_findings(run_id, evaluation.findings, evaluation.resolved)
    return run_id


@pytest.fixture
def four_runs(store: Store) -> Store:
    """CAS01: SP1 true -> (failed) -> SP3 false (reset) -> SP3 false with the service stopped.
    CAS02: unchanged throughout."""
    record(store, [server("CAS01", build=SP1, sp="SP1", value=True, at=DAYS[0]), server("CAS02", at=DAYS[0])], DAYS[0])
    record(store, [failed("CAS01", at=DAYS[1]), server("CAS02", at=DAYS[1])], DAYS[1])
    record(store, [server("CAS01", value=False, at=DAYS[2]), server("CAS02", at=DAYS[2])], DAYS[2])
    stopped = proto("pop3", False, service="Stopped")
    record(store, [server("CAS01", pop3=stopped, value=False, at=DAYS[3]), server("CAS02", at=DAYS[3])], DAYS[3])
    return store


def test_timeline_marks_changes_against_the_previous_successful_scan(four_runs: Store) -> None:
    rows = timeline(four_runs, "cas01", "pop3")
    assert [(r.run_id, r.scan_status) for r in rows] == [(1, "ok"), (2, "error"), (3, "ok"), (4, "ok")]
    first, gap, after, last = rows
    assert first.changed == frozenset() and first.allow_cross_site is True and first.build == SP1
    assert gap.error == "timeout: no answer within 120 s" and gap.changed == frozenset()
    assert {"allow_cross_site", "build", "service_pack", "config_sha256"} <= after.changed
    assert "service" not in after.changed
    assert last.changed == {"service"}
    assert last.service == "Stopped"
    assert set(last.changed) <= set(last.as_dict())  # the command marks columns by these names
    assert after.as_dict()["allow_cross_site"] == "false" and gap.as_dict()["scan_status"].startswith("error")


def test_timeline_of_both_protocols_and_of_an_unknown_server(four_runs: Store) -> None:
    rows = timeline(four_runs, "CAS02")
    assert [(r.run_id, r.protocol) for r in rows] == [(n, p) for n in (1, 2, 3, 4) for p in ("pop3", "imap4")]
    assert all(r.changed == frozenset() for r in rows)
    assert timeline(four_runs, "NOSUCH") == []


def test_diff_between_runs_server_by_server(four_runs: Store) -> None:
    d = diff(four_runs, 1, 3)
    assert d.unchanged == ("CAS02",)
    (cas01,) = d.servers
    assert (cas01.server, cas01.status_a, cas01.status_b) == ("CAS01", "ok", "ok")
    by_field = {(c.protocol, c.field): (c.before, c.after) for c in cas01.changes}
    assert by_field[(None, "build")] == (SP1, SP3)
    assert by_field[("pop3", "allow_cross_site")] == ("true", "false")
    assert by_field[("imap4", "allow_cross_site")] == ("true", "false")
    assert ("XS-003", "pop3") in cas01.findings_new
    assert ("XS-001", "pop3") in cas01.findings_resolved and ("XS-012", None) in cas01.findings_resolved
    assert list(d) == [cas01] and len(d) == 1 and d[0] is cas01
    row = cas01.as_dict()
    assert "pop3.allow_cross_site: true -> false" in row["changes"] and "XS-003/pop3" in row["new findings"]


def test_diff_with_a_failed_scan_shows_status_not_invented_changes(four_runs: Store) -> None:
    d = diff(four_runs, 1, 2)
    (cas01,) = d.servers
    assert (cas01.status_a, cas01.status_b) == ("ok", "error")
    assert {c.protocol for c in cas01.changes} == {None}  # only server-level fields (scan_status, build...)
    assert ("XS-011", None) in cas01.findings_new
    assert ("XS-001", "pop3") not in cas01.findings_resolved  # carried while unscanned


def test_changes_of_consecutive_successful_observations(four_runs: Store) -> None:
    found = changes(four_runs, up_to_run=4, window_runs=10)
    summary = {(c.server, c.protocol, c.field, c.before, c.after, c.before_run, c.after_run, c.build_changed) for c in found}
    assert ("CAS01", None, "build", SP1, SP3, 1, 3, True) in summary
    assert ("CAS01", "pop3", "allow_cross_site", "true", "false", 1, 3, True) in summary
    assert ("CAS01", "pop3", "service", "Running", "Stopped", 3, 4, False) in summary
    assert all(c.server == "CAS01" for c in found)
    # a window of the last run only still sees the change detected in it, not older ones
    assert {c.after_run for c in changes(four_runs, up_to_run=4, window_runs=1)} == {4}
    assert changes(four_runs, up_to_run=2, window_runs=10) == []

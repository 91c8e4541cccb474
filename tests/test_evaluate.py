"""Evaluation against a real SQLite history: states, waivers, carried findings, resolution."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from rules_fixtures import SP1, failed, proto, server

from scanner.judge.catalog import Catalog, load_catalog
from scanner.judge.evaluate import (
    Evaluation,
    active_at_or_above,
    evaluate_run,
)
from scanner.judge.policy import Policy
from scanner.parse.observe import RefusedLogonObservation, ServerObservation
from scanner.report.findings import finding_info, waiver_infos
from scanner.store.repo import FindingRow, Store, open_store

RTM = "8.0.685.24"
DAY1 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
DAY3 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)

POLICY = Policy.from_text(
    """
[baseline]
allow_cross_site = false
[[baseline.override]]
site = "Hamburg"
allow_cross_site = true
[[waiver]]
rule = "XS-001"
server = "CAS02"
protocol = "pop3"
justification = "Migration of the partner mailboxes"
approver = "J. Weber, CISO"
created = 2026-11-01
expires = 2026-11-30
[severity]
"XS-010" = "medium"
"""
)


@pytest.fixture
def store(sqlite_history_url: str) -> Iterator[Store]:
    with open_store(sqlite_history_url) as s:
        yield s


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    with open_store(pg_url) as s:
        yield s


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def record(
    store: Store,
    catalog: Catalog,
    observations: Sequence[ServerObservation],
    at: datetime,
    *,
    planned: Sequence[ServerObservation] | None = None,
    policy: Policy = POLICY,
    status: str | None = None,
    lang: str = "en",
) -> Evaluation:
    """One scan run as `cas-audit scan` stores it, evaluated and saved."""
    scope = planned if planned is not None else observations
    run_id = store.begin_run(
        planned=[(o.name, o.address, o.site) for o in scope],
        tool_version="test", operator="tester", scanning_host="here", inventory_sha256="0" * 64,
        policy_text=policy.source_text, started_at=at,
    )
    for obs in observations:
        store.record_server(run_id, obs)
    if status is None:
        status = "complete" if all(o.scan_status == "ok" for o in observations) else "partial"
    store.finish_run(run_id, status, finished_at=at + timedelta(minutes=1))
    evaluation = evaluate_run(store, run_id, policy, catalog, lang=lang)
    store.save_findings(run_id, evaluation.findings, evaluation.resolved)
    return evaluation


def states(evaluation: Evaluation) -> set[tuple[str, str | None, str | None, str]]:
    return {(f.rule, f.server_name or f.site, f.protocol, f.state) for f in evaluation.findings}


def one(evaluation: Evaluation, rule: str, server_or_site: str, protocol: str | None) -> FindingRow:
    found = [f for f in evaluation.findings if f.rule == rule and (f.server_name or f.site) == server_or_site and f.protocol == protocol]
    assert len(found) == 1, (rule, server_or_site, protocol, states(evaluation))
    return found[0]


def hamburg(name: str, build: str, sp: str, value: bool, at: datetime) -> ServerObservation:
    return server(name, site="Hamburg", build=build, sp=sp, value=value, at=at)


def scan1() -> list[ServerObservation]:
    return [
        server("CAS01", at=DAY1),
        server("CAS02", at=DAY1),
        server("CAS03", pop3=proto("pop3", False, notes=("duplicate key (2 entries)",)), at=DAY1),
        hamburg("CAS05", RTM, "RTM", True, DAY1),
        hamburg("CAS06", RTM, "RTM", True, DAY1),
    ]


def scan2() -> list[ServerObservation]:
    refused = [RefusedLogonObservation(DAY2 - timedelta(hours=5), "CONTOSO\\jörg", "Hamburg")]
    edited = proto("pop3", True, started=DAY1 - timedelta(days=3), modified=DAY2 - timedelta(hours=2))
    return [
        server("CAS01", pop3=proto("pop3", False, logons=refused), at=DAY2, events_since=DAY1),
        server("CAS02", pop3=edited, at=DAY2),  # hand edit, service not restarted
        failed("CAS03", at=DAY2),
        hamburg("CAS05", SP1, "SP1", False, DAY2),  # reset by SP1 setup
        hamburg("CAS06", SP1, "SP1", False, DAY2),
    ]


def scan3() -> list[ServerObservation]:
    restarted = proto("pop3", True, started=DAY3 - timedelta(days=1), modified=DAY2 - timedelta(hours=2))
    return [
        server("CAS01", at=DAY3),
        server("CAS02", pop3=restarted, at=DAY3),
        server(
            "CAS03",
            pop3=proto("pop3", False, notes=("duplicate key (2 entries)",)),
            imap4=proto("imap4", True),  # changed while CAS03 could not be scanned
            at=DAY3,
        ),
        hamburg("CAS05", SP1, "SP1", False, DAY3),
        hamburg("CAS06", SP1, "SP1", False, DAY3),
    ]


def test_three_scans_upgrade_hand_edit_waiver_expiry_and_an_unreachable_server(store: Store, catalog: Catalog) -> None:
    three_scans(store, catalog)


@pytest.mark.postgres
def test_three_scans_on_postgresql(pg_store: Store, catalog: Catalog) -> None:
    three_scans(pg_store, catalog)


def three_scans(store: Store, catalog: Catalog) -> None:
    run1 = record(store, catalog, scan1(), DAY1)
    assert states(run1) == {
        ("XS-007", "CAS03", "pop3", "new"),
        ("XS-012", "CAS05", None, "new"),
        ("XS-012", "CAS06", None, "new"),
    }
    assert run1.resolved == [] and run1.previous_run_id is None

    run2 = record(store, catalog, scan2(), DAY2)
    assert states(run2) == {
        ("XS-001", "CAS02", "pop3", "waived"),
        ("XS-002", "CAS05", "pop3", "new"), ("XS-002", "CAS05", "imap4", "new"),
        ("XS-002", "CAS06", "pop3", "new"), ("XS-002", "CAS06", "imap4", "new"),
        ("XS-003", "CAS05", "pop3", "new"), ("XS-003", "CAS05", "imap4", "new"),
        ("XS-003", "CAS06", "pop3", "new"), ("XS-003", "CAS06", "imap4", "new"),
        ("XS-004", "CAS02", "pop3", "new"),
        ("XS-005", "CAS02", "pop3", "new"),
        ("XS-007", "CAS03", "pop3", "persisting"),  # carried: CAS03 was not scanned
        ("XS-008", "CAS02", None, "new"),
        ("XS-009", "Berlin", "pop3", "new"),
        ("XS-010", "CAS01", "pop3", "new"),
        ("XS-011", "CAS03", None, "new"),
        ("XS-012", "CAS05", None, "persisting"), ("XS-012", "CAS06", None, "persisting"),
    }
    assert run2.resolved == []  # the unscanned server resolves nothing
    reset = one(run2, "XS-003", "CAS05", "pop3")
    assert reset.severity == "high"
    assert reset.evidence["before"]["run"] == 1 and reset.evidence["after"]["run"] == 2
    assert (reset.evidence["before"]["build"], reset.evidence["after"]["build"]) == (RTM, SP1)
    assert "changed from true to false" in reset.message
    carried = one(run2, "XS-007", "CAS03", "pop3")
    assert carried.evidence["not_rescanned"] == {"as_of_run": 1}
    assert carried.first_seen_run_id == 1 and carried.first_seen_at == DAY1
    assert "Not re-evaluated" in carried.message
    waived = one(run2, "XS-001", "CAS02", "pop3")
    assert waived.waiver is not None and waived.waiver["approver"] == "J. Weber, CISO"
    assert "Waived until 2026-11-30" in waived.message
    refused = one(run2, "XS-010", "CAS01", "pop3")
    assert refused.severity == "medium" and refused.evidence["users"] == ["CONTOSO\\jörg"]
    assert one(run2, "XS-011", "CAS03", None).evidence["error_kind"] == "timeout"

    run3 = record(store, catalog, scan3(), DAY3)
    assert states(run3) == {
        ("XS-001", "CAS02", "pop3", "waiver-expired"),
        ("XS-001", "CAS03", "imap4", "new"),
        ("XS-002", "CAS05", "pop3", "persisting"), ("XS-002", "CAS05", "imap4", "persisting"),
        ("XS-002", "CAS06", "pop3", "persisting"), ("XS-002", "CAS06", "imap4", "persisting"),
        ("XS-004", "CAS03", "imap4", "new"),  # the change made while CAS03 was unreachable
        ("XS-007", "CAS03", "pop3", "persisting"),
        ("XS-008", "CAS02", None, "persisting"),
        ("XS-008", "CAS03", None, "new"),
        ("XS-009", "Berlin", "pop3", "persisting"),
        ("XS-009", "Berlin", "imap4", "new"),
        ("XS-012", "CAS05", None, "persisting"), ("XS-012", "CAS06", None, "persisting"),
    }
    assert sorted(run3.resolved, key=str) == sorted(
        [
            ("XS-003", "CAS05", "pop3"), ("XS-003", "CAS05", "imap4"),
            ("XS-003", "CAS06", "pop3"), ("XS-003", "CAS06", "imap4"),
            ("XS-004", "CAS02", "pop3"), ("XS-005", "CAS02", "pop3"),
            ("XS-010", "CAS01", "pop3"), ("XS-011", "CAS03", None),
        ],
        key=str,
    )
    late = one(run3, "XS-004", "CAS03", "imap4")
    assert late.evidence["before"]["run"] == 1 and late.evidence["after"]["run"] == 3
    expired = one(run3, "XS-001", "CAS02", "pop3")
    assert expired.waiver is not None and expired.waiver["state"] == "expired"
    assert "expired on 2026-11-30" in expired.message
    assert expired.first_seen_run_id == 2 and expired.first_seen_at == DAY2
    back = one(run3, "XS-007", "CAS03", "pop3")
    assert back.first_seen_run_id == 1 and "not_rescanned" not in back.evidence

    # what was saved is what the next report reads back
    saved = store.findings(3)
    assert {(f.rule, f.server_name or f.site, f.protocol, f.state) for f in saved} == states(run3)
    assert store.resolved(3) == run3.resolved

    # exit codes: the waiver-expired XS-001 is active, a waived one is not
    assert [f.rule for f in active_at_or_above(run2.findings, "high")].count("XS-001") == 0
    assert ("XS-001", "CAS02") in {(f.rule, f.server_name) for f in active_at_or_above(run3.findings, "high")}
    assert {f.severity for f in active_at_or_above(run3.findings, "info")} >= {"high", "medium", "low", "info"}


def test_waived_findings_never_count_for_fail_on(store: Store, catalog: Catalog) -> None:
    policy = Policy.from_text(
        '[[waiver]]\nrule = "XS-001"\nsite = "Berlin"\njustification = "j"\napprover = "a"\nexpires = 2099-01-01\n'
    )
    run = record(store, catalog, [server("CAS01", value=True)], DAY1, policy=policy)
    assert {f.state for f in run.findings if f.rule == "XS-001"} == {"waived"}
    assert [f for f in active_at_or_above(run.findings, "high") if f.rule == "XS-001"] == []
    assert len([f for f in run.findings if f.rule == "XS-001"]) == 2  # still listed, both protocols
    with pytest.raises(ValueError):
        active_at_or_above(run.findings, "severe")


def test_report_texts_regenerate_in_either_language(store: Store, catalog: Catalog) -> None:
    record(store, catalog, scan1(), DAY1)
    run2 = record(store, catalog, scan2(), DAY2)
    for row in store.findings(2):
        english = finding_info(row, catalog, "en")
        assert english.message == row.message  # stored in English, regenerated identically
        german = finding_info(row, catalog, "de")
        assert german.message != english.message and german.title == catalog.title(row.rule, "de")
        assert "fields" not in german.evidence
    reset = finding_info(one(run2, "XS-003", "CAS05", "pop3"), catalog, "de")
    assert "von true auf false" in reset.message
    assert "cas-audit evidence --server CAS05 --protocol pop3 --run 1" in reset.remediation
    assert reset.observed == "false" and reset.expected == "true"
    waived = finding_info(one(run2, "XS-001", "CAS02", "pop3"), catalog, "de")
    assert "Ausnahme gültig bis 2026-11-30" in waived.message


def test_evaluation_in_german_is_stored_in_german(store: Store, catalog: Catalog) -> None:
    run = record(store, catalog, [server("CAS01", value=True)], DAY1, lang="de")
    assert one(run, "XS-001", "CAS01", "pop3").message.startswith("Standortübergreifende POP3-Sitzungen")


def test_waiver_states_for_the_workbook(store: Store, catalog: Catalog) -> None:
    policy = Policy.from_text(
        POLICY.source_text
        + '\n[[waiver]]\nrule = "XS-012"\nserver = "NONE*"\njustification = "j"\napprover = "a"\nexpires = 2099-01-01\n'
        + '\n[[waiver]]\nrule = "XS-002"\nsite = "Hamburg"\njustification = "j"\napprover = "a"\nexpires = 2026-01-01\n'
    )
    run = record(store, catalog, [server("CAS02", pop3=proto("pop3", True))], DAY1, policy=policy)
    infos = {(w.rule, w.scope): w.state for w in waiver_infos(policy, run.findings, DAY1.date())}
    assert infos == {
        ("XS-001", "server CAS02 / pop3"): "active",
        ("XS-012", "server NONE*"): "unused",
        ("XS-002", "site Hamburg"): "expired",
    }


def test_aborted_run_is_skipped_for_the_lifecycle(store: Store, catalog: Catalog) -> None:
    record(store, catalog, [server("CAS01", value=True)], DAY1)
    # a run that died before its findings were saved
    aborted = store.begin_run(
        planned=[("CAS01", "cas01.contoso.local", "Berlin")], tool_version="t", operator="o",
        scanning_host="h", inventory_sha256="0" * 64, started_at=DAY2,
    )
    store.finish_run(aborted, "aborted", finished_at=DAY2)
    run3 = record(store, catalog, [server("CAS01", value=True, at=DAY3)], DAY3)
    assert run3.previous_run_id == 1
    xs001 = {(f.rule, f.protocol): f for f in run3.findings}[("XS-001", "pop3")]
    assert xs001.state == "persisting" and xs001.first_seen_run_id == 1


def test_servers_outside_a_site_filtered_run_are_neither_listed_nor_resolved(store: Store, catalog: Catalog) -> None:
    record(store, catalog, [server("CAS01", value=True), hamburg("CAS05", SP1, "SP1", True, DAY1)], DAY1)
    only_hamburg = record(store, catalog, [hamburg("CAS05", SP1, "SP1", True, DAY2)], DAY2)
    assert {f.server_name for f in only_hamburg.findings} == {"CAS05"}
    assert only_hamburg.resolved == []


def test_server_never_scanned_in_the_run_fires_xs011(store: Store, catalog: Catalog) -> None:
    planned = [server("CAS01"), server("CAS02")]
    run = record(store, catalog, [server("CAS01")], DAY1, planned=planned, status="aborted")
    assert states(run) == {("XS-011", "CAS02", None, "new")}
    assert one(run, "XS-011", "CAS02", None).evidence["error_kind"] == "not-scanned"


def test_previous_failed_scan_then_recovery_resolves_xs011(store: Store, catalog: Catalog) -> None:
    record(store, catalog, [failed("CAS01", at=DAY1)], DAY1)
    run2 = record(store, catalog, [server("CAS01", at=DAY2)], DAY2)
    assert run2.resolved == [("XS-011", "CAS01", None)]
    # first successful scan ever: nothing to compare with, so no change findings
    assert states(run2) == set()

"""Issue 15 items 5 and 6 end to end: what a scan did not establish reaches every report
format in both languages, and a German server's refused logons are read.

A small lab organisation, scanned twice in this process over real WinRM:
- DE01 renders event 1008 in German; its users have no domain prefix, so only the German
  text names them (the insertion strings cannot be told apart without it);
- DENY may not read its Application log in the second scan (application_log = "denied"):
  XS-010 is not evaluated there, never "none", and its first-scan finding is neither
  resolved nor carried;
- FULL has 10,000 refused logons newer than each scan's cut-off: the collector's window of
  the newest 10,000 entries is full, so its count is a lower bound.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gapreports import rows, scan_twice
from labfleet import demo_fleet

from scanner.lab.eventlog import DENIED_MESSAGE, WINDOW
from scanner.lab.fleet_model import Fleet, RefusedLogonFact
from scanner.report.labels import Labels

pytestmark = pytest.mark.slow  # two scans of a lab organisation (the fast checks: test_event_window.py)

BASE = "127.0.41.1"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def organisation() -> Fleet:
    fleet = demo_fleet(BASE, "basic")
    cas01 = fleet.server("CAS01")
    german = (RefusedLogonFact("jörg", NOW - timedelta(hours=1), "Köln"),
              RefusedLogonFact("b.günther", NOW - timedelta(hours=2), "Köln"))
    de01 = replace(cas01, name="DE01", computer="EXDE01", language="de", address=fleet.servers[0].address,
                   protocols={**cas01.protocols, "pop3": replace(cas01.protocols["pop3"], refused_logons=german)})
    deny = replace(cas01, name="DENY", computer="", address=fleet.servers[1].address)
    many = tuple(RefusedLogonFact(f"CONTOSO\\u{i}", NOW - timedelta(seconds=i), "Berlin") for i in range(WINDOW))
    full = replace(cas01, name="FULL", computer="", address=fleet.servers[2].address,
                   protocols={**cas01.protocols, "imap4": replace(cas01.protocols["imap4"], refused_logons=many)})
    return replace(fleet, servers=(de01, deny, full))


def _second(fleet: Fleet) -> Fleet:
    """DENY's Application log refused; FULL's window filled again with newer events."""
    denied = replace(fleet.server("DENY"), application_log="denied")
    later = datetime.now(UTC) + timedelta(hours=3)  # newer than the second scan's cut-off
    fresh = tuple(RefusedLogonFact(f"CONTOSO\\v{i}", later - timedelta(seconds=i), "Berlin") for i in range(WINDOW))
    full = fleet.server("FULL")
    full = replace(full, protocols={**full.protocols, "imap4": replace(full.protocols["imap4"], refused_logons=fresh)})
    return replace(fleet, servers=(fleet.servers[0], denied, full))


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return scan_twice(tmp_path_factory.mktemp("gaps"), organisation(), _second)


def servers(data: dict[str, Any]) -> dict[str, Any]:
    return {s["name"]: s for s in data["servers"]}


def test_a_german_server_names_users_and_sites(reports: dict[str, Any]) -> None:
    (finding,) = [f for f in reports["first"]["findings"] if f["rule"] == "XS-010" and f["server"] == "DE01"]
    assert finding["evidence"]["users"] == ["b.günther", "jörg"]
    assert finding["evidence"]["mailbox_sites"] == ["Köln"]
    assert {e["cas"] for e in finding["evidence"]["events"]} == {"EXDE01"}  # as the German text names it


def test_an_unreadable_log_is_not_evaluated_in_json(reports: dict[str, Any]) -> None:
    assert servers(reports["first"])["DENY"]["protocols"]["pop3"]["refused_logons"] == 2  # readable then
    assert any(f["rule"] == "XS-010" and f["server"] == "DENY" for f in reports["first"]["findings"])
    data = reports["json-en"]
    deny = servers(data)["DENY"]
    assert [p["refused_logons"] for p in deny["protocols"].values()] == [None, None]
    assert deny["application_log"] == {"read": False, "error": DENIED_MESSAGE, "lower_bound": False,
                                       "lower_bound_reason": None, "limit": None}
    assert {"stage": "events", "message": DENIED_MESSAGE} in deny["collector_errors"]
    assert not [f for f in data["findings"] if f["rule"] == "XS-010" and f["server"] == "DENY"]
    assert not [r for r in data["resolved"] if r["rule"] == "XS-010" and r["server"] == "DENY"]
    assert servers(data)["DE01"]["application_log"]["read"] is True
    assert servers(data)["DE01"]["collector_errors"] == []


def test_a_full_window_is_a_lower_bound_in_json(reports: dict[str, Any]) -> None:
    full = servers(reports["first"])["FULL"]
    assert full["application_log"]["lower_bound_reason"] == "window"
    assert full["application_log"]["limit"] == WINDOW
    assert full["protocols"]["imap4"]["refused_logons_lower_bound"] is True
    assert full["protocols"]["imap4"]["refused_logons"] == 200  # the collector lists at most 200
    (finding,) = [f for f in reports["first"]["findings"] if f["rule"] == "XS-010" and f["server"] == "FULL"]
    assert finding["evidence"]["lower_bound"] == "window" and "200+" in finding["message"]
    assert servers(reports["json-en"])["DE01"]["protocols"]["pop3"]["refused_logons_lower_bound"] is False


def sheet_rows(sheet: Any) -> list[dict[str, Any]]:
    return rows([list(r) for r in sheet.iter_rows(values_only=True)])


@pytest.mark.parametrize("lang", ["en", "de"])
def test_the_workbook_says_not_evaluated_and_lower_bound(reports: dict[str, Any], lang: str) -> None:
    labels = Labels(lang)
    book = reports[f"xlsx-{lang}"]
    by_server = {r[labels("col.server")]: r for r in sheet_rows(book[labels.sheet("servers")])}
    deny = by_server["DENY"]
    assert deny[labels("col.application_log")] == labels("log.not_read", reason=DENIED_MESSAGE)
    assert deny[labels("col.collector_errors")] == f"events: {DENIED_MESSAGE}"
    for protocol in ("POP3", "IMAP4"):
        assert deny[labels("col.p.refused_logons", p=protocol)] == labels("note.not_evaluated")
    full = by_server["FULL"]
    assert full[labels("col.p.refused_logons", p="IMAP4")] == "200+"  # at most 200 listed, of 10,000 new
    assert full[labels("col.application_log")] == labels("log.window", limit=WINDOW)
    assert by_server["DE01"][labels("col.application_log")] == labels("log.read")
    findings = sheet_rows(book[labels.sheet("findings")])
    assert_gap_rows(findings, labels)


@pytest.mark.parametrize("lang", ["en", "de"])
def test_the_csv_says_not_evaluated_and_lower_bound(reports: dict[str, Any], lang: str) -> None:
    labels = Labels(lang)
    table = reports[f"csv-{lang}"]
    assert_gap_rows(rows(table), labels)


def assert_gap_rows(findings: list[dict[str, Any]], labels: Labels) -> None:
    def states(server: str) -> list[tuple[Any, Any]]:
        return [(r[labels("col.rule")], r[labels("col.state")]) for r in findings if r[labels("col.server")] == server]

    assert ("XS-010", labels("note.not_evaluated")) in states("DENY")
    assert (None, labels("note.collector_error")) in [(rule or None, state) for rule, state in states("DENY")]
    assert ("XS-010", labels("note.lower_bound")) in states("FULL")
    (unread,) = [r for r in findings if r[labels("col.state")] == labels("note.not_evaluated")]
    assert DENIED_MESSAGE in unread[labels("col.message")]
    assert unread[labels("col.severity")] in (None, "")
    assert not [r for r in findings if r[labels("col.server")] == "DE01" and r[labels("col.state")] in (
        labels("note.not_evaluated"), labels("note.lower_bound"), labels("note.collector_error"))]


def test_the_end_of_scan_summary_names_the_incomplete_servers(reports: dict[str, Any]) -> None:
    (line,) = [line for line in reports["summary"] if line.startswith("  incomplete: ")]
    assert "DENY (Application log not read (XS-010 not evaluated); 1 collector error(s))" in line
    assert "FULL (refused logons a lower bound)" in line and "DE01" not in line

"""XS-005 where a running service's start time could not be read: its pending restart is
unknown, and every report says "not evaluated" with the reason (xlsx, json, csv, ocsf, html;
en and de), never "pending restart: no" and never an empty cell.

A lab organisation of two servers, scanned twice in this process over real WinRM:
- STALE is the demo's CAS06 (IMAP4 file written after the service started), OPEN its CAS01;
- first scan: both answer Win32_Service, so XS-005 fires on STALE's IMAP4;
- second scan: STALE does not answer it (`wmi = "denied"`, docs/lab.md: no process, so no
  start time, while Get-Service still says Running). XS-005 is not evaluated on STALE (its
  earlier finding neither persists nor resolves); OPEN is judged as before.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from gapreports import (
    assert_not_evaluated_in_html,
    assert_not_evaluated_in_tables,
    not_evaluated_ocsf,
    rows,
    scan_twice,
)
from labfleet import demo_fleet

from scanner.lab.fleet_model import Fleet
from scanner.lab.simhost import WMI_DENIED_MESSAGE
from scanner.report.history import timeline
from scanner.report.labels import Labels

BASE = "127.0.203.1"
SERVICES = {"pop3": "Microsoft Exchange POP3", "imap4": "Microsoft Exchange IMAP4"}


def organisation() -> Fleet:
    fleet = demo_fleet(BASE, "basic")
    return replace(fleet, servers=(
        replace(fleet.server("CAS06"), name="STALE", computer="", address=fleet.servers[0].address),
        replace(fleet.server("CAS01"), name="OPEN", computer="", address=fleet.servers[1].address)))


def _stale_denied(fleet: Fleet) -> Fleet:
    stale, other = fleet.servers
    return replace(fleet, servers=(replace(stale, wmi="denied"), other))


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return scan_twice(tmp_path_factory.mktemp("restart"), organisation(), _stale_denied,
                      extra=lambda store: {"timeline": [r.as_dict() for r in timeline(store, "STALE")]})


def message(labels: Labels, protocol: str) -> str:
    return labels("note.restart_service", server="STALE", service=SERVICES[protocol], reason=WMI_DENIED_MESSAGE)


def test_the_first_scan_finds_the_pending_restart(reports: dict[str, Any]) -> None:
    fired = [(f["server"], f["protocol"]) for f in reports["first"]["findings"] if f["rule"] == "XS-005"]
    assert fired == [("STALE", "imap4")]
    assert reports["first"]["not_evaluated"] == []


def test_json_says_unknown_and_lists_xs005_not_evaluated(reports: dict[str, Any]) -> None:
    data = reports["json-en"]
    servers = {s["name"]: s for s in data["servers"]}
    stale = servers["STALE"]["protocols"]
    assert [(p["service"], p["service_started"], p["pending_restart"]) for p in stale.values()] == [
        ("Running", None, None), ("Running", None, None)]  # unknown, not "no"
    assert [p["pending_restart"] for p in servers["OPEN"]["protocols"].values()] == [False, False]
    assert [n for n in data["not_evaluated"] if n["rule"] == "XS-005"] == [
        {"rule": "XS-005", "server": "STALE", "site": "Hamburg", "protocol": p, "reason": WMI_DENIED_MESSAGE}
        for p in ("pop3", "imap4")
    ]
    assert not [f for f in data["findings"] if f["rule"] == "XS-005"]  # not "fine", not carried
    assert not [r for r in data["resolved"] if r["rule"] == "XS-005"]  # and not resolved


@pytest.mark.parametrize("lang", ["en", "de"])
def test_the_workbook_and_the_csv_say_not_evaluated(reports: dict[str, Any], lang: str) -> None:
    assert_not_evaluated_in_tables(reports, lang, rule="XS-005", server="STALE", message=message,
                                   fix="note.restart_unread_fix")


@pytest.mark.parametrize("lang", ["en", "de"])
def test_the_servers_sheet_says_unknown_not_empty(reports: dict[str, Any], lang: str) -> None:
    labels = Labels(lang)
    sheet = reports[f"xlsx-{lang}"][labels.sheet("servers")]
    servers = {r[labels("col.server")]: r for r in rows([list(r) for r in sheet.iter_rows(values_only=True)])}
    for protocol in ("pop3", "imap4"):
        shown = labels.word("protocol", protocol)
        cells = [labels(key, p=shown) for key in ("col.p.service", "col.p.start_mode", "col.p.pending_restart")]
        assert [servers["STALE"][c] for c in cells] == ["Running", labels("value.unknown"), labels("value.unknown")]
        assert [servers["OPEN"][c] for c in cells] == ["Running", "Auto", labels("no")]


@pytest.mark.parametrize("lang", ["en", "de"])
def test_the_html_says_not_evaluated(reports: dict[str, Any], lang: str) -> None:
    assert_not_evaluated_in_html(reports, lang, message=message, fix="note.restart_unread_fix")


@pytest.mark.parametrize("lang", ["en", "de"])
def test_ocsf_has_a_warning_line_per_restart_not_evaluated(reports: dict[str, Any], lang: str) -> None:
    labels = Labels(lang)
    gaps = not_evaluated_ocsf(reports, lang, rule="XS-005", server="STALE", reason=WMI_DENIED_MESSAGE,
                              message=message)
    for event in gaps:
        assert event["remediation"]["desc"] == labels("note.restart_unread_fix")


def test_the_end_of_scan_summary_names_the_restart_gap(reports: dict[str, Any]) -> None:
    (line,) = [line for line in reports["summary"] if line.startswith("  incomplete: ")]
    assert "STALE (pop3/imap4 pending restart unknown (XS-005 not evaluated); 2 collector error(s))" in line
    assert "OPEN" not in line


def test_the_history_timeline_says_unknown(reports: dict[str, Any]) -> None:
    """`cas-audit history --server STALE` prints these values, one row per scan and protocol."""
    shown = [(r["run"], r["protocol"], r["service"], r["start_mode"], r["pending_restart"]) for r in reports["timeline"]]
    assert shown == [(1, "pop3", "Running", "Auto", "no"), (1, "imap4", "Running", "Auto", "yes"),
                     (2, "pop3", "Running", "unknown", "unknown"), (2, "imap4", "Running", "unknown", "unknown")]

"""Issue 3 end to end: one organisation scanned three times through the lab, with an SP1
upgrade, a hand edit without restart, an expiring waiver and a server unreachable once.
Every run's JSON report must list exactly the findings the catalog defines."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from labfleet import cas_audit_here
from openpyxl import load_workbook

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import load_policy
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import Fleet, relocate_fleet, upgrade_server
from scanner.lab.serve import Lab
from scanner.report.build import build_report
from scanner.report.write import render
from scanner.scan import run_scan
from scanner.store.repo import open_store

pytestmark = pytest.mark.slow  # three scans of a running lab, then the cas-audit command

HERE = Path(__file__).parent / "fleets"
SCAN_DATES = [datetime(2026, 12, 1, 8, tzinfo=UTC), datetime(2027, 1, 15, 8, tzinfo=UTC),
              datetime(2027, 4, 15, 8, tzinfo=UTC)]
TRUE_FILE = (b'<?xml version="1.0" encoding="utf-8" ?>\r\n<configuration><appSettings>'
             b'<add key="AllowCrossSiteSessions" value="true" /></appSettings></configuration>\r\n')


def edit_pop3(fleet: Fleet, name: str, modified: datetime, started: datetime | None = None) -> Fleet:
    """An administrator sets POP3 AllowCrossSiteSessions to true on `name` (restarting or not)."""
    server = fleet.server(name)
    pop3 = server.protocols["pop3"]
    pop3 = replace(pop3, config_bytes=TRUE_FILE, modified=modified, started=started or pop3.started)
    changed = replace(server, protocols={**server.protocols, "pop3": pop3})
    return replace(fleet, servers=tuple(changed if s is server else s for s in fleet.servers))


def cells(workbook: bytes) -> dict[str, list[tuple]]:
    book = load_workbook(io.BytesIO(workbook))
    return {ws.title: list(ws.iter_rows(values_only=True)) for ws in book.worksheets}


def key(finding: dict) -> tuple:
    where = finding["server"] or finding["evidence"].get("site")
    return (finding["rule"], where, finding["protocol"], finding["state"])


def test_three_scans(tmp_path: Path, store_url: str) -> None:
    """On SQLite and on PostgreSQL (a shared history)."""
    db = store_url
    store = open_store(db)
    catalog = load_catalog()
    policy = load_policy(HERE / "three_scans_policy.toml")
    # addresses of its own (per database: pytest-xdist may run both at once), on the fixed
    # port that B3's restart needs
    fleet = load_fleet(HERE / "three_scans.toml")
    if not store_url.startswith("sqlite"):
        fleet = relocate_fleet(fleet, "127.0.21.1", 15985)
    runs = []
    with Lab(fleet) as lab:
        lab.write_inventory(tmp_path / "inventory.toml")
        inventory = load_inventory(tmp_path / "inventory.toml")

        def scan(when: datetime) -> int:
            outcome = run_scan(inventory, store=store, password="lab-password", policy=policy,
                               catalog=catalog, concurrency=3, timeout_s=20, started_at=when)
            return outcome.run_id

        runs.append(scan(SCAN_DATES[0]))
        first_reports = {fmt: render(build_report(store, runs[0], lang="de"), fmt) for fmt in ("json", "xlsx")}
        # Between scans 1 and 2: SP1 setup on H1 and H2; B1 edited by hand, not restarted;
        # B3's WinRM listener is down for scan 2.
        fleet = upgrade_server(fleet, "H1", "8.1.240.6", datetime(2026, 12, 20, tzinfo=UTC))
        fleet = upgrade_server(fleet, "H2", "8.1.240.6", datetime(2026, 12, 20, tzinfo=UTC))
        fleet = edit_pop3(fleet, "B1", modified=datetime(2026, 12, 22, 10, tzinfo=UTC))
        lab.replace_fleet(fleet)
        lab.servers["B3"].stop()
        runs.append(scan(SCAN_DATES[1]))
        # Between scans 2 and 3: B3 back, its POP3 set to true and the service restarted.
        lab.servers["B3"].start()
        fleet = edit_pop3(fleet, "B3", modified=datetime(2027, 2, 1, 10, tzinfo=UTC),
                          started=datetime(2027, 2, 1, 10, 5, tzinfo=UTC))
        lab.replace_fleet(fleet)
        runs.append(scan(SCAN_DATES[2]))

    # Run 1's report, made again after two more runs, has the same content.
    again = {fmt: render(build_report(store, runs[0], lang="de"), fmt) for fmt in ("json", "xlsx")}
    assert again["json"] == first_reports["json"]
    assert cells(again["xlsx"]) == cells(first_reports["xlsx"])

    reports = []
    for run_id in runs:
        result = cas_audit_here("report", "--run", str(run_id), "--format", "json", db=db)
        assert result.returncode == 0, result.stderr
        reports.append(json.loads(result.stdout))
    found = [sorted(key(f) for f in r["findings"]) for r in reports]

    assert found[0] == sorted([
        ("XS-001", "B2", "pop3", "waived"),
        ("XS-008", "B2", None, "new"),
        ("XS-009", "Berlin", "pop3", "new"),
        ("XS-012", "H1", None, "new"),
        ("XS-012", "H2", None, "new"),
    ])
    assert found[1] == sorted([
        # SP1 setup reset H1 and H2: value changed while the build changed
        ("XS-003", "H1", "pop3", "new"), ("XS-003", "H1", "imap4", "new"),
        ("XS-003", "H2", "pop3", "new"), ("XS-003", "H2", "imap4", "new"),
        ("XS-002", "H1", "pop3", "new"), ("XS-002", "H1", "imap4", "new"),
        ("XS-002", "H2", "pop3", "new"), ("XS-002", "H2", "imap4", "new"),
        ("XS-009", "Hamburg", "pop3", "new"), ("XS-009", "Hamburg", "imap4", "new"),
        ("XS-012", "H1", None, "persisting"), ("XS-012", "H2", None, "persisting"),
        # B1 edited without restart: an unexplained change, not in force yet
        ("XS-004", "B1", "pop3", "new"), ("XS-005", "B1", "pop3", "new"),
        ("XS-001", "B1", "pop3", "new"), ("XS-008", "B1", None, "new"),
        ("XS-001", "B2", "pop3", "waived"), ("XS-008", "B2", None, "persisting"),
        # B3 unreachable: XS-011 only, no change findings
        ("XS-011", "B3", None, "new"),
    ])
    assert found[2] == sorted([
        ("XS-002", "H1", "pop3", "persisting"), ("XS-002", "H1", "imap4", "persisting"),
        ("XS-002", "H2", "pop3", "persisting"), ("XS-002", "H2", "imap4", "persisting"),
        ("XS-009", "Hamburg", "pop3", "persisting"), ("XS-009", "Hamburg", "imap4", "persisting"),
        ("XS-012", "H1", None, "persisting"), ("XS-012", "H2", None, "persisting"),
        ("XS-005", "B1", "pop3", "persisting"),
        ("XS-001", "B1", "pop3", "persisting"), ("XS-008", "B1", None, "persisting"),
        ("XS-001", "B2", "pop3", "waiver-expired"), ("XS-008", "B2", None, "persisting"),
        # B3 compared with its last successful scan (run 1): the change is not missed
        ("XS-004", "B3", "pop3", "new"), ("XS-001", "B3", "pop3", "new"), ("XS-008", "B3", None, "new"),
    ])
    resolved = [sorted((r["rule"], r["server"], r["protocol"]) for r in rep["resolved"]) for rep in reports]
    assert resolved[0] == []
    assert resolved[1] == [("XS-009", None, "pop3")]  # B3 not scanned: Berlin's scanned servers agree
    assert resolved[2] == sorted([
        ("XS-003", "H1", "pop3"), ("XS-003", "H1", "imap4"), ("XS-003", "H2", "pop3"),
        ("XS-003", "H2", "imap4"), ("XS-004", "B1", "pop3"), ("XS-011", "B3", None)])

    expired = next(f for f in reports[2]["findings"] if f["state"] == "waiver-expired")
    assert "expired" in expired["message"] and "J. Weber" in expired["message"]
    persisting = next(f for f in reports[2]["findings"] if key(f) == ("XS-012", "H1", None, "persisting"))
    assert persisting["rule"] == "XS-012"
    reset = next(f for f in reports[1]["findings"] if key(f) == ("XS-003", "H1", "pop3", "new"))
    assert reset["severity"] == "high"

    # The pre-upgrade file, byte for byte, as the administrator restores it after SP1 setup.
    out = tmp_path / "Microsoft.Exchange.Pop3.exe.Config"
    result = cas_audit_here("evidence", "--server", "H1", "--protocol", "pop3", "--run", str(runs[0]),
                       "--out", str(out), db=db)
    assert result.returncode == 0, result.stderr
    first = reports[0]["servers"][0]
    assert first["name"] == "H1"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == first["protocols"]["pop3"]["config_sha256"]
    assert b'value="true"' in out.read_bytes()

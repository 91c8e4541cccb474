"""Issue 9, part 2: `cas-audit report --as-of TIME|now`, the organisation view across runs
split by site, in JSON, xlsx and csv, read back."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from labfleet import cas_audit_here
from openpyxl import load_workbook
from test_store import server_obs

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import load_policy
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import relocate_fleet
from scanner.lab.serve import Lab
from scanner.report.organisation import build_organisation_report, parse_as_of
from scanner.report.write import render
from scanner.scan import run_scan
from scanner.store.repo import FindingRow, open_store

HERE = Path(__file__).parent / "fleets"
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def sheets(data: bytes) -> dict[str, list[tuple[object, ...]]]:
    book = load_workbook(io.BytesIO(data))
    return {ws.title: list(ws.iter_rows(values_only=True)) for ws in book.worksheets}


@pytest.mark.slow  # site-split scans of a running lab, then the cas-audit command
def test_organisation_view_of_site_split_scans(tmp_path: Path, store_url: str) -> None:
    """Berlin, then Hamburg, then Berlin again: as of a time between the second and third
    run the view takes Berlin from run 1; as of now from run 3, Hamburg from run 2."""
    store = open_store(store_url)
    catalog = load_catalog()
    policy = load_policy(HERE / "three_scans_policy.toml")
    # addresses of its own (per database: pytest-xdist may run both at once): several tests
    # scan this organisation, each on a fixed port
    base = "127.0.19.1" if store_url.startswith("sqlite") else "127.0.23.1"
    with Lab(relocate_fleet(load_fleet(HERE / "three_scans.toml"), base, 15985)) as lab:
        lab.write_inventory(tmp_path / "inventory.toml")
        inventory = load_inventory(tmp_path / "inventory.toml")

        # the scans' own clock (`now`, read when called), a little in the past so that "as of
        # now" below sees every run: run 3 starts two seconds after run 2, without waiting
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)

        def scan(site: str) -> int:
            return run_scan(inventory.only_site(site), store=store, password="lab-password", policy=policy,
                            catalog=catalog, concurrency=3, timeout_s=20, site_filter=site,
                            clock=lambda: now).run_id

        berlin1 = scan("Berlin")
        hamburg = scan("Hamburg")
        between = now + timedelta(seconds=1)
        now += timedelta(seconds=2)
        berlin2 = scan("Berlin")
    store.close()

    result = cas_audit_here("report", "--as-of", iso(between), "--format", "json", db=store_url)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert list(view) == ["as_of", "servers", "findings", "resolved", "not_evaluated"]
    assert view["as_of"]["time"] == iso(between)
    assert view["as_of"]["runs"] == [berlin1, hamburg]
    runs = {s["name"]: s["run_id"] for s in view["servers"]}
    assert runs == {"B1": berlin1, "B2": berlin1, "B3": berlin1, "H1": hamburg, "H2": hamburg, "H3": hamburg}
    assert all(s["scan_status"] == "ok" and not s["stale"] for s in view["servers"])
    assert all(s["observed_at"] <= iso(between) for s in view["servers"])
    found = sorted((f["rule"], f["server"] or f["evidence"]["site"], f["protocol"], f["state"], f["run_id"])
                   for f in view["findings"])
    assert found == [
        ("XS-001", "B2", "pop3", "waived", berlin1), ("XS-008", "B2", None, "new", berlin1),
        ("XS-009", "Berlin", "pop3", "new", berlin1),
        ("XS-012", "H1", None, "new", hamburg), ("XS-012", "H2", None, "new", hamburg),
    ]

    result = cas_audit_here("report", "--as-of", "now", "--format", "json", db=store_url)
    assert result.returncode == 0, result.stderr
    now_view = json.loads(result.stdout)
    assert {s["name"]: s["run_id"] for s in now_view["servers"]} == {
        "B1": berlin2, "B2": berlin2, "B3": berlin2, "H1": hamburg, "H2": hamburg, "H3": hamburg}
    found = sorted((f["rule"], f["server"] or f["evidence"]["site"], f["state"], f["run_id"])
                   for f in now_view["findings"])
    assert found == [
        ("XS-001", "B2", "waived", berlin2), ("XS-008", "B2", "persisting", berlin2),
        ("XS-009", "Berlin", "persisting", berlin2),
        ("XS-012", "H1", "new", hamburg), ("XS-012", "H2", "new", hamburg),
    ]
    assert now_view["as_of"]["stale_servers"] == 0

    out = tmp_path / "organisation.xlsx"
    result = cas_audit_here("report", "--as-of", "now", "--lang", "de", "--out", str(out), db=store_url)
    assert result.returncode == 0, result.stderr
    book = sheets(out.read_bytes())
    summary = {row[0]: row[1] for row in book["Zusammenfassung"] if row and row[0]}
    assert isinstance(summary["Stand (UTC)"], datetime)
    assert summary["Veraltete Server"] == 0 and summary["Server"] == 6
    assert summary["Herangezogene Läufe"] == f"{hamburg}, {berlin2}"
    header, *rows = book["Server"]
    source = header.index("Aus Lauf")
    assert {row[0]: row[source] for row in rows} == runs | {"B1": berlin2, "B2": berlin2, "B3": berlin2}
    assert len(book["Befunde"]) == 1 + len(now_view["findings"])

    result = cas_audit_here("report", "--as-of", "now", "--format", "csv", db=store_url)
    assert result.returncode == 0, result.stderr
    lines = list(csv.reader(io.StringIO(result.stdout)))
    assert len(lines) == 1 + len(now_view["findings"])
    assert sorted(line[0] for line in lines[1:]) == sorted(f["rule"] for f in now_view["findings"])

    before_anything = cas_audit_here("report", "--as-of", "2000-01-01", "--format", "json", db=store_url)
    assert json.loads(before_anything.stdout)["servers"] == []


def test_stale_servers_are_flagged(sqlite_url: str) -> None:
    """A server whose latest successful observation is older than --stale-days is stale;
    one that never succeeded is stale with its failed scan shown."""
    store = open_store(sqlite_url)
    plan = [("CAS01", "cas01", "Berlin"), ("CAS02", "cas02", "Berlin"), ("CAS03", "cas03", "Hamburg")]
    old = store.begin_run(planned=plan, tool_version="t", operator="o", scanning_host="h",
                          inventory_sha256="0" * 64, started_at=T0)
    store.record_server(old, server_obs("CAS01", start=T0))
    store.record_server(old, server_obs("CAS02", start=T0))
    store.record_server(old, server_obs("CAS03", start=T0, scan_status="error", error_kind="refused",
                                        error="refused", protocols={}))
    store.finish_run(old, "partial", finished_at=T0 + timedelta(minutes=5))
    store.save_findings(old, [FindingRow(rule="XS-011", severity="high", state="new", server_name="CAS03",
                                         site="Hamburg", protocol=None, message="CAS03 could not be scanned.")], [])
    later = T0 + timedelta(days=10)
    recent = store.begin_run(planned=plan[:1], tool_version="t", operator="o", scanning_host="h",
                             inventory_sha256="0" * 64, started_at=later, site_filter="Berlin")
    store.record_server(recent, server_obs("CAS01", start=later))
    store.finish_run(recent, "complete", finished_at=later + timedelta(minutes=5))
    store.save_findings(recent, [], [])

    report = build_organisation_report(store, later + timedelta(hours=1), stale_days=7)
    assert report.as_of is not None
    assert [(s.name, src.run_id, src.stale) for s, src in zip(report.servers, report.as_of.sources, strict=True)] == [
        ("CAS01", recent, False), ("CAS02", old, True), ("CAS03", old, True)]
    assert [(f.rule, f.server) for f in report.findings] == [("XS-011", "CAS03")]
    as_json = json.loads(render(report, "json"))
    assert as_json["as_of"]["stale_servers"] == 2
    assert [s["stale"] for s in as_json["servers"]] == [False, True, True]
    summary = {row[0]: row[1] for row in sheets(render(report, "xlsx"))["Summary"] if row and row[0]}
    assert summary["Stale servers"] == 2 and summary["Stale after (days)"] == 7
    # with a longer window nothing is stale but the server that never succeeded
    wide = build_organisation_report(store, later + timedelta(hours=1), stale_days=30)
    assert wide.as_of is not None and wide.as_of.stale_servers == 1
    store.close()


def test_as_of_parsing() -> None:
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    assert parse_as_of("now", now) == now
    assert parse_as_of("2026-12-01T08:00:00Z") == T0
    assert parse_as_of("2026-12-01T09:00:00+01:00") == T0
    assert parse_as_of("2026-12-01") == datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=UTC)

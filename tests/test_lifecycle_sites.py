"""Issue 9, part 1: a finding's lifecycle belongs to its server and protocol. Scans split by
site (Berlin, then Hamburg, then Berlin again, then everything) through the lab keep every
finding's state, first-seen run and time; a run never resolves or re-dates the findings
of servers it did not scan. On SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import load_policy
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import relocate_fleet
from scanner.lab.serve import Lab
from scanner.scan import run_scan
from scanner.store.repo import FindingRow, open_store

HERE = Path(__file__).parent / "fleets"
DAYS = [datetime(2026, 12, day, 8, tzinfo=UTC) for day in (1, 2, 3, 4)]


def table(rows: list[FindingRow]) -> list[tuple[str, str | None, str | None, str, int | None]]:
    return sorted((f.rule, f.server_name or f.site, f.protocol, f.state, f.first_seen_run_id) for f in rows)


def test_site_split_scans_keep_every_lifecycle(tmp_path: Path, store_url: str) -> None:
    store = open_store(store_url)
    catalog = load_catalog()
    policy = load_policy(HERE / "three_scans_policy.toml")
    # addresses of its own (per database: pytest-xdist may run both at once): several tests
    # scan this organisation, each on a fixed port
    base = "127.0.18.1" if store_url.startswith("sqlite") else "127.0.22.1"
    with Lab(relocate_fleet(load_fleet(HERE / "three_scans.toml"), base, 15985)) as lab:
        lab.write_inventory(tmp_path / "inventory.toml")
        inventory = load_inventory(tmp_path / "inventory.toml")

        def scan(site: str | None, when: datetime) -> int:
            chosen = inventory.only_site(site) if site else inventory
            return run_scan(chosen, store=store, password="lab-password", policy=policy, catalog=catalog,
                            concurrency=3, timeout_s=20, site_filter=site, started_at=when).run_id

        berlin1 = scan("Berlin", DAYS[0])
        hamburg = scan("Hamburg", DAYS[1])
        berlin2 = scan("Berlin", DAYS[2])
        everything = scan(None, DAYS[3])
    try:
        assert table(store.findings(berlin1)) == [
            ("XS-001", "B2", "pop3", "waived", berlin1),
            ("XS-008", "B2", None, "new", berlin1),
            ("XS-009", "Berlin", "pop3", "new", berlin1),
        ]
        assert table(store.findings(hamburg)) == [
            ("XS-012", "H1", None, "new", hamburg), ("XS-012", "H2", None, "new", hamburg),
        ]
        assert store.resolved(hamburg) == []  # Berlin's findings are not Hamburg's to resolve
        # Berlin again: the Hamburg run in between changes nothing about Berlin
        assert table(store.findings(berlin2)) == [
            ("XS-001", "B2", "pop3", "waived", berlin1),
            ("XS-008", "B2", None, "persisting", berlin1),
            ("XS-009", "Berlin", "pop3", "persisting", berlin1),
        ]
        assert store.resolved(berlin2) == []
        first_seen = {f.rule: f.first_seen_at for f in store.findings(berlin2)}
        assert first_seen == {"XS-001": DAYS[0], "XS-008": DAYS[0], "XS-009": DAYS[0]}
        # The whole organisation: Hamburg continues from its own run, Berlin from its second
        assert table(store.findings(everything)) == [
            ("XS-001", "B2", "pop3", "waived", berlin1),
            ("XS-008", "B2", None, "persisting", berlin1),
            ("XS-009", "Berlin", "pop3", "persisting", berlin1),
            ("XS-012", "H1", None, "persisting", hamburg), ("XS-012", "H2", None, "persisting", hamburg),
        ]
        assert store.resolved(everything) == []
    finally:
        store.close()

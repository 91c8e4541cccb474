"""`cas-audit demo`: the lab organisation, two scans with a service pack upgrade in between,
and the reports of the second scan."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import load_policy
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import Fleet, relocate_fleet, upgrade_server
from scanner.lab.platforms import platform
from scanner.lab.serve import Lab, demo_fleet_path
from scanner.parse.builds import sp3_build
from scanner.report.build import build_report
from scanner.report.summary import summarise, summary_lines
from scanner.report.write import render
from scanner.scan import run_scan
from scanner.store.repo import Store, open_store
from scanner.util.safefile import write_file

UPGRADED_SERVER = "CAS05"
UPGRADE_BUILD = sp3_build()  # 8.3.83.6, from Microsoft's table


def _finding_lines(store: Store, run_id: int) -> Iterator[str]:
    """One line per rule: its new and still-open findings of the run, waived ones counted apart."""
    by_rule: dict[str, list[str]] = {}
    for f in store.findings(run_id):
        where = f.server_name or f.site or "organisation"
        where += f"/{f.protocol}" if f.protocol else ""
        mark = {"new": " (new)", "waived": " (waived)", "waiver-expired": " (waiver expired)"}.get(f.state, "")
        by_rule.setdefault(f"{f.rule} {f.severity}", []).append(where + mark)
    for rule, places in sorted(by_rule.items()):
        yield f"  {rule}: {', '.join(places)}"


def platform_mix(fleet: Fleet) -> list[str]:
    """"Windows Server 2003 R2 x64 (WinRM 1.1): CAS02, CAS05" for each platform in the fleet."""
    groups: dict[str, list[str]] = {}
    for server in fleet.servers:
        groups.setdefault(server.platform, []).append(f"{server.name}/PS {server.powershell}")
    return [f"{platform(key).windows} (WinRM {platform(key).winrm}): {', '.join(names)}"
            for key, names in sorted(groups.items())]


def demo_policy_path() -> Path:
    """The demo organisation's policy (package data beside the demo fleet)."""
    return demo_fleet_path().with_name("demo-policy.toml")


def run_demo(out_dir: Path, *, lang: str = "en") -> Iterator[str]:
    """Run the demo; yield one line of progress at a time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    db_path = out_dir / "demo-history.db"
    for stale in (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")):
        stale.unlink(missing_ok=True)
    with open_store(f"sqlite:///{db_path}") as store:  # closed also when the caller stops early
        catalog = load_catalog()
        policy = load_policy(demo_policy_path())
        demo = load_fleet(demo_fleet_path())
        # a free port per server: the demo never collides with a `lab serve` of the same fleet
        fleet = relocate_fleet(demo, demo.lab.base_address, 0)
        with Lab(fleet) as lab, tempfile.TemporaryDirectory(prefix="cas-audit-demo-") as tmp:
            inventory_path = Path(tmp) / "inventory.toml"
            lab.write_inventory(inventory_path)
            inventory = load_inventory(inventory_path)
            yield f"lab: {len(fleet.servers)} simulated CAS listening on loopback ({fleet.lab.auth})"
            yield from (f"  {line}" for line in platform_mix(fleet))
            for label in ("first scan", "second scan"):
                outcome = run_scan(inventory, store=store, password=fleet.lab.password, policy=policy,
                                   catalog=catalog, concurrency=4, timeout_s=20)
                yield (f"{label}: run {outcome.run_id} {outcome.status}, {outcome.scanned} scanned, "
                       f"{outcome.failed} failed, {outcome.active_at_or_above} active finding(s) high or above")
                yield from _finding_lines(store, outcome.run_id)
                if label == "first scan":
                    fleet = upgrade_server(fleet, UPGRADED_SERVER, UPGRADE_BUILD, datetime.now(UTC))
                    lab.replace_fleet(fleet)
                    yield f"upgrade: {UPGRADED_SERVER} -> Exchange 2007 SP3 ({UPGRADE_BUILD}); setup reset its config files"
        run_id = outcome.run_id
        written = []
        for report_lang in dict.fromkeys((lang, "en", "de")):
            for fmt in ("xlsx", "json", "html"):  # the HTML report beside the workbook
                model = build_report(store, run_id, lang=report_lang)
                path = out_dir / f"cas-audit-run-{run_id}-{report_lang}.{fmt}"
                write_file(path, render(model, fmt), force=True)  # the demo's own folder
                written.append(str(path))
        yield ""
        yield from summary_lines(summarise(store, run_id, reports=written))
        checked = store.verify_chain()  # the last step: the history's seal chain (cas-audit verify)
        yield (f"verify: the history's seal chain is intact ({checked.links} runs sealed, newest seal "
               f"{checked.head})" if checked.broken is None else f"verify: BROKEN: {checked.broken.reason}")
        yield f"next: cas-audit history --db sqlite:///{db_path} --server {UPGRADED_SERVER}"

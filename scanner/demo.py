"""`cas-audit demo`: the lab organisation, two scans with a service pack upgrade in between,
the reports of the second scan, then the change loop on the upgraded server: the fix plan
of the second scan for review, its check and its apply on that one server (a demo ticket,
the lab's writing account, the services restarted), a third scan that verifies it, and
the rollback checked and spelled out."""

from __future__ import annotations

import getpass
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from scanner.inventory import Inventory, load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy, load_policy
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import Fleet, relocate_fleet, upgrade_server
from scanner.lab.platforms import platform
from scanner.lab.serve import Lab, demo_fleet_path
from scanner.parse.builds import sp3_build
from scanner.remedy.apply import Kind, ServerOutcome, change_records, load_scripts, run_scripts
from scanner.remedy.plan import build_plan, gather, write_plan
from scanner.report.build import build_report
from scanner.report.summary import summarise, summary_lines
from scanner.report.write import render
from scanner.scan import ScanOutcome, run_scan
from scanner.store.changes import record_changes
from scanner.store.repo import Store, open_store
from scanner.util.safefile import write_file

UPGRADED_SERVER = "CAS05"
UPGRADE_BUILD = sp3_build()  # 8.3.83.6, from Microsoft's table
DEMO_TICKET = "DEMO-0001"
PLAN_FOLDER = "fix-plan"


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


def _scan_line(label: str, outcome: ScanOutcome) -> str:
    return (f"{label}: run {outcome.run_id} {outcome.status}, {outcome.scanned} scanned, "
            f"{outcome.failed} failed, {outcome.active_at_or_above} active finding(s) high or above")


def _clear_plan(folder: Path) -> None:
    """The demo's own plan folder from an earlier demo: its plan.json and scripts go (a
    plan is never overwritten, and the history it came from was replaced)."""
    for stale in [folder / "plan.json", *folder.glob("*.ps1")] if folder.is_dir() else []:
        stale.unlink(missing_ok=True)


def _active(store: Store, run_id: int, server: str) -> set[tuple[str, str]]:
    return {(f.rule, f.protocol or "") for f in store.findings(run_id)
            if f.server_name == server and f.state in ("new", "persisting", "waiver-expired")}


def _outcome_lines(outcomes: Sequence[ServerOutcome]) -> Iterator[str]:
    for outcome in outcomes:
        if outcome.result is None:
            yield f"  {outcome.server}: not reached: {outcome.error}"
            continue
        for c in outcome.result.changes:
            line = f"  {outcome.server}/{c.protocol}: {c.status}"
            if c.backup:
                line += f", the scanned file kept as {c.backup}"
            if c.restart != "none":
                line += f", service {c.restart}"
            yield line + (f": {c.message}" if c.message else "")


def _fix_loop(store: Store, lab: Lab, inventory: Inventory, policy: Policy, run_id: int, out_dir: Path,
              db_url: str) -> Iterator[str]:
    """fix plan of `run_id` -> check and apply on UPGRADED_SERVER -> a scan that verifies ->
    the rollback checked; one line per step (the lab's writing account, ticket DEMO_TICKET)."""
    folder = out_dir / PLAN_FOLDER
    _clear_plan(folder)
    plan = build_plan(gather(store, run_id), policy, datetime.now(UTC))
    write_plan(plan, folder)
    yield ""
    yield (f"fix plan: the findings of run {run_id} became {len(plan.changes)} change(s) on "
           f"{len(plan.scripts)} server(s) ({len(plan.refused)} refused), written to {folder}: plan.json "
           "and per server a PowerShell script and its rollback twin; nothing was changed")
    for c in plan.changes:
        what = ("restart only" if c["kind"] == "restart" else
                f"AllowCrossSiteSessions {str(c['before_value']).lower()} -> {str(c['after_value']).lower()}, "
                "then a restart")
        yield f"  {c['server']}/{c['protocol']} ({', '.join(c['rules'])}): {what}"
    for r in plan.refused:
        yield f"  refused {r['server']}/{r['protocol']}: {r['reason']}"
    yield (f"review: read each change's diff in {folder / 'plan.json'} and the scripts; "
           f"the demo goes on with {UPGRADED_SERVER} only, whose edits are these lines:")
    for c in plan.changes:
        if c["server"] == UPGRADED_SERVER:
            for line in str(c.get("diff", "")).splitlines()[2:]:
                shown = line.strip().removesuffix(r"\x0d")[:160]  # the diff shows a CRLF line's CR as \x0d
                if line[:1] in "+-":
                    yield f"  {c['protocol']} {shown}"
    admin = lab.fleet.lab.admin_username
    targets = {t.name.casefold(): t for t in inventory.targets}

    def run(kind: Kind, apply: bool) -> list[ServerOutcome]:
        """The plan's `kind` script of UPGRADED_SERVER as `fix apply`/`fix rollback` runs it."""
        scripts = {name: s for name, s in load_scripts(folder, kind).items() if name == UPGRADED_SERVER}
        return run_scripts(scripts, targets, lab.fleet.lab.admin_password, username=admin, apply=apply,
                           restart=apply, ticket=DEMO_TICKET, timeout_s=20, concurrency=1)

    checked = run("apply", False)
    ready = all(o.ok for o in checked)
    yield (f"check: {UPGRADED_SERVER}'s script ran without --yes: "
           + ("every prerequisite met (the file is still the one planned), nothing changed" if ready
              else "not ready, so the demo does not apply it"))
    yield from _outcome_lines(checked)
    if not ready:
        return
    applied = run("apply", True)
    operator = f"{getpass.getuser()} as {admin}"
    record_changes(store, change_records(applied, kind="apply", ticket=DEMO_TICKET, operator=operator))
    yield (f"apply: {UPGRADED_SERVER}'s script ran with ticket {DEMO_TICKET} as the lab's writing account "
           f"{admin} (the scan account only reads), the services restarted; each change is recorded in the "
           "history under the ticket:")
    yield from _outcome_lines(applied)
    before = _active(store, run_id, UPGRADED_SERVER)
    outcome = run_scan(inventory, store=store, password=lab.fleet.lab.password, policy=policy,
                       catalog=load_catalog(), concurrency=4, timeout_s=20)
    yield _scan_line("third scan, to verify", outcome)
    after = _active(store, outcome.run_id, UPGRADED_SERVER)
    # the reports' own matching of resolved findings to recorded changes (report/applied.py)
    why = {(r.rule, r.protocol or ""): f"resolved by change {r.change.ticket}" if r.change else "resolved"
           for r in build_report(store, outcome.run_id, lang="en").resolved if r.server == UPGRADED_SERVER}
    gone = sorted(before - after)
    yield (f"  {UPGRADED_SERVER}: " + ("; ".join(f"{rule}/{protocol} {why.get((rule, protocol), 'resolved')}"
                                                 for rule, protocol in gone) if gone else "no finding resolved")
           + (f"; active: {', '.join(f'{r}/{p}' for r, p in sorted(after))}" if after else ""))
    yield (f"  the reports of run {outcome.run_id} say so in every format, and list the run's changes: "
           f"cas-audit report --db {db_url} --run {outcome.run_id} --format html --out run-{outcome.run_id}.html")
    checked = run("rollback", False)
    state = "ready" if all(o.ok for o in checked) else "NOT ready"
    yield (f"rollback: checked on {UPGRADED_SERVER}, {state}; run with --yes it puts back the scanned bytes "
           "exactly, and only while the file is still the one apply wrote")
    others = sorted(set(plan.scripts) - {UPGRADED_SERVER}, key=str.casefold)
    yield (f"the demo's lab stops with the demo and the rest of the plan ({', '.join(others)}) stays unapplied; "
           "on your own organisation, with its inventory, the same steps are:")
    yield "  cas-audit fix plan --run latest --out chg-1234"
    yield "  cas-audit fix apply chg-1234 --inventory inventory.toml"
    yield f"  cas-audit fix apply chg-1234 --inventory inventory.toml --yes --ticket CHG-1234 --username {admin}"
    yield f"  cas-audit fix rollback chg-1234 --inventory inventory.toml --ticket CHG-1234 --yes --username {admin}"


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
                yield _scan_line(label, outcome)
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
            yield from _fix_loop(store, lab, inventory, policy, run_id, out_dir, f"sqlite:///{db_path}")
        checked = store.verify_chain()  # the last step: the history's seal chain (cas-audit verify)
        yield ""
        yield (f"verify: the history's seal chain is intact ({checked.links} runs sealed, newest seal "
               f"{checked.head})" if checked.broken is None else f"verify: BROKEN: {checked.broken.reason}")
        yield f"next: cas-audit history --db sqlite:///{db_path} --server {UPGRADED_SERVER}"

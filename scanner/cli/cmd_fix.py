"""`cas-audit fix`: reviewed, reversible remediation. This module holds the group and
`fix plan`; `fix apply` and `fix rollback` attach to the same `fix` group."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from scanner.cli.app import _open_store, cli, db_option, handle_errors
from scanner.cli.cmd_report import _resolve_run
from scanner.cli.output import output
from scanner.errors import ConfigError, ExitCode
from scanner.facts import RULE_IDS


@cli.group()
def fix() -> None:
    """Reviewed remediation: plan the minimal edits for a run's findings, check and apply
    them with a ticket, roll them back (docs/remediation.md).

    \b
    Example:
      cas-audit fix plan --run latest --out change-plan
    """


@fix.command("plan")
@db_option
@click.option("--run", "run", default="latest", show_default=True, help="Run id, or 'latest'.")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Policy file giving the baseline (default: the policy stored with the run).")
@click.option("--rule", "rules", multiple=True, metavar="ID",
              help="Only findings of this rule (XS-001, XS-002, XS-003, XS-005); repeatable.")
@click.option("--server", "servers", multiple=True, metavar="GLOB",
              help="Only servers whose name matches (fnmatch, any case); repeatable.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for plan.json, <server>.ps1 and <server>-rollback.ps1 (an existing plan.json is "
                   "never overwritten).")
@handle_errors
def plan(db_url: str | None, run: str, policy_path: Path | None, rules: tuple[str, ...],
         servers: tuple[str, ...], out: Path) -> None:
    """Turn the findings of a run into a change plan for review: per server and protocol
    the minimal edit of the config file (or a restart for XS-005), with hashes, values and
    a diff, or the reason it is refused; and per server a PowerShell 1.0 script that
    only checks unless run with -Apply, and its rollback twin. Changes nothing anywhere.
    Exit 0 plan written with every finding planned, 3 some refused, 2 usage.

    \b
    Examples:
      cas-audit fix plan --run latest --out change-plan
      cas-audit fix plan --run 7 --rule XS-001 --server 'CAS0*' --out chg-1234
    """
    from scanner.judge.policy import Policy, load_policy
    from scanner.remedy.plan import PLAN_RULES, build_plan, clean_text, gather, write_plan

    for rule in rules:
        if rule not in RULE_IDS:
            raise ConfigError(f"--rule {rule!r} is not a rule id")
        if rule not in PLAN_RULES:
            raise ConfigError(f"--rule {rule} has no fix; fix plan acts on {', '.join(PLAN_RULES)}")
    if (out / "plan.json").exists():
        raise ConfigError(f"{out / 'plan.json'} already exists; a reviewed plan is never overwritten",
                          hint="choose another --out")
    store = _open_store(db_url, read_only=True)
    run_id = _resolve_run(store, run)
    if policy_path is not None:
        policy = load_policy(policy_path)
    else:
        text = store.run(run_id).policy_text
        policy = Policy.default() if text is None else Policy.from_text(text, source="<policy stored with the run>")
    result = build_plan(gather(store, run_id), policy, datetime.now(UTC), rules=rules, servers=servers)
    write_plan(result, out)
    for refused in result.refused:
        output.warning(f"refused {clean_text(refused['server'])} {refused['protocol']}: {refused['reason']}", event="fix_refused",
                       server=refused["server"], protocol=refused["protocol"])
    output.result("fix_plan", f"plan of run {run_id} written to {out}: {len(result.changes)} change(s), "
                  f"{len(result.refused)} refused, {len(result.unchanged)} without change",
                  run_id=run_id, out=str(out), changes=len(result.changes), refused=len(result.refused),
                  unchanged=len(result.unchanged))
    if result.refused:
        sys.exit(int(ExitCode.UNSCANNED))

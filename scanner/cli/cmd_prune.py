"""`cas-audit prune`: remove old runs, keeping what kept runs and the organisation view need."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from scanner.cli.app import _open_store, cli, db_option, handle_errors
from scanner.cli.output import output
from scanner.errors import ConfigError

DEFAULT_WAIT_MINUTES = 60


def _parse_before(value: str) -> datetime:
    """DATE (runs started before its 00:00 UTC) or an ISO 8601 time (UTC unless an offset is given)."""
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--before must be a date such as 2025-11-01, not {value!r}") from None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before the year 1 in UTC
        raise ConfigError(f"--before {value} lies outside the years 1 to 9999 in UTC") from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@cli.command()
@db_option
@click.option("--before", "before", required=True, metavar="DATE",
              help="Remove runs that started before this date (00:00 UTC) or ISO 8601 time.")
@click.option("--apply", "apply", is_flag=True, default=False,
              help="Remove them; without it, only list what would be removed (a dry run).")
@click.option("--wait", "wait_minutes", type=click.IntRange(min=0, max=24 * 60), default=DEFAULT_WAIT_MINUTES,
              show_default=True, metavar="MINUTES",
              help="With --apply: how long to wait for scans running on the history to finish; "
                   "then prune refuses (exit 4) and removes nothing. 0: refuse at once.")
@handle_errors
def prune(db_url: str | None, before: str, apply: bool, wait_minutes: int) -> None:
    """Remove scan runs that started before DATE, keeping every run the organisation view
    still draws on (a server's latest observation or current findings), every document
    and config file a kept run refers to, and what a kept run's reports read from removed
    runs (their Changes and trend), so they regenerate unchanged. Without --apply it only
    lists what it would do. --apply removes nothing while a scan runs: it waits for it.

    \b
    Examples:
      cas-audit prune --before 2025-11-01
      cas-audit prune --before 2025-11-01 --apply
      cas-audit prune --before 2025-11-01 --apply --wait 0
    """
    from scanner.report.context import evidence_to_keep
    from scanner.store.retention import prune as run_prune

    moment = _parse_before(before)
    # a dry run never creates or upgrades; --apply upgrades an older history, never creates one
    store = _open_store(db_url, read_only=not apply, create=False)
    result = run_prune(store, moment, apply=apply, now=datetime.now(UTC), wait_s=wait_minutes * 60.0,
                       on_wait=output.warning, keep_evidence=lambda removed: evidence_to_keep(store, removed))
    verb = "removed" if apply else "would remove"
    if not apply:
        click.echo("dry run: nothing is removed without --apply")
    for run in result.removed:
        click.echo(f"{verb} run {run.id}  started {_iso(run.started_at)}  {run.status}  "
                   f"{run.servers_planned} server(s)")
    for run, reason in result.kept:
        click.echo(f"keeping run {run.id}  started {_iso(run.started_at)}: {reason}")
    c = result.counts
    click.echo(
        f"{verb} {len(result.removed)} run(s) started before {_iso(moment)}: {c.get('server_scans', 0)} server "
        f"scan(s), {c.get('observations', 0)} observation(s), {c.get('findings', 0)} finding(s), "
        f"{c.get('documents', 0)} unreferenced document(s), {c.get('config_files', 0)} config file(s); "
        f"kept {len(result.kept)} older run(s) still needed, and what {c.get('contexts', 0)} kept run(s)' "
        "reports read from the removed ones"
    )

"""`cas-audit prune`: remove old runs, keeping what kept runs and the organisation view need."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from scanner.cli.app import _open_store, cli, db_option, handle_errors
from scanner.cli.output import output
from scanner.errors import ConfigError
from scanner.util.timefmt import iso_utc

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
    # stdout: lines of text, or with --log-format json one JSON object per line (the same
    # message, and its facts as fields)
    verb = "removed" if apply else "would remove"
    if not apply:
        output.result("prune-dry-run", "dry run: nothing is removed without --apply")
    for run in result.removed:
        output.result("prune-remove", f"{verb} run {run.id}  started {iso_utc(run.started_at)}  {run.status}  "
                                      f"{run.servers_planned} server(s)",
                      run_id=run.id, started_at=iso_utc(run.started_at), status=run.status,
                      servers_planned=run.servers_planned, applied=apply)
    for run, reason in result.kept:
        output.result("prune-keep", f"keeping run {run.id}  started {iso_utc(run.started_at)}: {reason}",
                      run_id=run.id, started_at=iso_utc(run.started_at), reason=reason)
    c = result.counts
    counts = {key: c.get(key, 0) for key in ("server_scans", "observations", "findings", "documents",
                                             "config_files", "contexts")}
    output.result(
        "prune-summary",
        f"{verb} {len(result.removed)} run(s) started before {iso_utc(moment)}: {counts['server_scans']} server "
        f"scan(s), {counts['observations']} observation(s), {counts['findings']} finding(s), "
        f"{counts['documents']} unreferenced document(s), {counts['config_files']} config file(s); "
        f"kept {len(result.kept)} older run(s) still needed, and what {counts['contexts']} kept run(s)' "
        "reports read from the removed ones",
        before=iso_utc(moment), applied=apply, runs_removed=len(result.removed), runs_kept=len(result.kept),
        **counts,
    )

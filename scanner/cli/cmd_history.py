"""`cas-audit history` and `cas-audit diff`: the history read back."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from scanner.cli.app import (
    _open_store,
    _text,
    cli,
    db_option,
    handle_errors,
    out_console,
)
from scanner.cli.output import output
from scanner.errors import ConfigError
from scanner.facts import PROTOCOLS, Protocol
from scanner.util.timefmt import display_utc


@cli.command()
@db_option
@click.option("--server", default=None, help="Server name as in the inventory (default: list the runs).")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=None)
@handle_errors
def history(db_url: str | None, server: str | None, protocol: Protocol | None) -> None:
    """Show the timeline of one server (value, build, service state, changes marked),
    or without --server the list of scan runs.

    \b
    Example:
      cas-audit history --server CAS01 --protocol pop3
    """
    from scanner.report.history import timeline

    store = _open_store(db_url, read_only=True)
    if server is None:
        if protocol is not None:
            raise ConfigError("--protocol needs --server")
        _print_runs(store)
        return
    rows = timeline(store, server, protocol)
    if not rows:
        raise ConfigError(f"no observation of server {server!r} in the history")
    table = Table(title=f"{server} history")
    columns = list(rows[0].as_dict().keys())
    for column in columns:
        table.add_column(column)
    for row in rows:
        values = row.as_dict()
        table.add_row(*[
            (f"[bold yellow]{_text(values[c])} *[/]" if c in row.changed else _text(values[c])) for c in columns
        ])
    out_console.print(table)


def _print_runs(store: Any) -> None:
    runs = store.runs()
    if not runs:
        raise ConfigError("the history holds no scan yet", hint="run `cas-audit scan` first")
    table = Table(title=f"scan runs in {store.url_display}")
    for column in ("run", "started (UTC)", "status", "planned", "scanned", "failed", "active findings",
                   "site", "operator"):
        table.add_column(column)
    active_findings = store.active_finding_counts()  # one query, not one read per run
    for run in runs:
        active = active_findings.get(run.id, 0)
        table.add_row(str(run.id), display_utc(run.started_at), run.status,
                      str(run.servers_planned), str(run.servers_scanned), str(run.servers_failed),
                      str(active), _text(run.site_filter), _text(run.operator))
    out_console.print(table)



@cli.command()
@db_option
@click.argument("run_a", type=int)
@click.argument("run_b", type=int)
@handle_errors
def diff(db_url: str | None, run_a: int, run_b: int) -> None:
    """Show what changed between two runs, server by server.

    \b
    Example:
      cas-audit diff 6 7
    """
    from scanner.report.history import diff as diff_runs

    store = _open_store(db_url, read_only=True)
    entries = diff_runs(store, run_a, run_b)
    status = {run_id: store.run(run_id).status for run_id in (run_a, run_b)}
    shown = {run_id: f"run {run_id}" + ("" if status[run_id] == "complete" else f" ({status[run_id]})")
             for run_id in (run_a, run_b)}
    for run_id in (run_a, run_b):
        if status[run_id] in ("aborted", "running"):
            output.warning(f"run {run_id} is {status[run_id]}: servers it did not reach show as absent")
    if not entries:
        out_console.print(f"no change between {shown[run_a]} and {shown[run_b]}")
        return
    table = Table(title=f"{shown[run_a]} -> {shown[run_b]}")
    columns = list(entries[0].as_dict().keys())
    for column in columns:
        table.add_column(column)
    for entry in entries:
        table.add_row(*[_text(v) for v in entry.as_dict().values()])
    out_console.print(table)

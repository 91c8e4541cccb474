"""The command line: each command opens what it needs, calls one library function and
turns library errors into a message and an exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scanner import __version__
from scanner.errors import CasAuditError, ConfigError, ExitCode

F = TypeVar("F", bound=Callable[..., Any])
SEVERITIES = ("critical", "high", "medium", "low", "info")
err_console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)
if not out_console.is_terminal:  # a pipe or a file: wide enough that tables do not fold
    out_console = Console(soft_wrap=True, width=200)


def handle_errors(func: F) -> F:
    """Print a CasAuditError as one clean message and exit with its code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CasAuditError as exc:
            # messages quote files such as "[lab]" and "[[server]]": never read them as markup
            err_console.print(Text.assemble(("error: ", "bold red"), exc.message))
            if exc.hint:
                err_console.print(Text.assemble(("hint: ", "yellow"), exc.hint))
            sys.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(int(ExitCode.INTERNAL))

    return wrapper  # type: ignore[return-value]


db_option = click.option(
    "--db", "db_url", envvar="CAS_AUDIT_DB", default=None, metavar="URL",
    help="SQLAlchemy URL of the history database (env CAS_AUDIT_DB; default: a SQLite file "
         "in the user's data folder).",
)


def _open_store(db_url: str | None) -> Any:
    from scanner.store.repo import open_store

    return open_store(db_url)


def _password(username: str) -> str:
    """CAS_AUDIT_PASSWORD, then the OS keyring (service 'cas-audit'), then a prompt.

    The environment variable serves every account of the inventory; the keyring and the
    prompt are asked once per account."""
    value = os.environ.get("CAS_AUDIT_PASSWORD")
    if value:
        return value
    try:
        import keyring

        stored = keyring.get_password("cas-audit", username)
        if stored:
            return stored
    except Exception:  # noqa: BLE001 - no usable keyring backend: fall through to the prompt
        pass
    if sys.stdin.isatty():
        return str(click.prompt(f"Password for {username}", hide_input=True, err=True))
    raise ConfigError(
        f"no password for {username}",
        hint="set CAS_AUDIT_PASSWORD, store it with `keyring set cas-audit <user>`, or run on a terminal",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cas-audit")
def cli() -> None:
    """Audit AllowCrossSiteSessions on Exchange 2007 Client Access Servers.

    \b
    Quick start with the built-in lab organisation:
      cas-audit demo
    """


@cli.command()
@click.option("--inventory", "inventory_path", required=True, type=click.Path(path_type=Path),
              help="TOML inventory of the CAS servers to scan.")
@db_option
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), default=None,
              help="TOML policy: baseline, overrides, waivers, severities (default: rules/baseline.toml).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Servers scanned at once.")
@click.option("--site", default=None, help="Scan only the servers of this AD site.")
@click.option("--fail-on", type=click.Choice(SEVERITIES), default="high", show_default=True,
              help="Exit 1 when an active finding has this severity or a higher one.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=120.0, show_default=True,
              help="Wall-clock limit per server, in seconds.")
@handle_errors
def scan(inventory_path: Path, db_url: str | None, policy_path: Path | None, concurrency: int,
         site: str | None, fail_on: str, timeout_s: float) -> None:
    """Scan every CAS in the inventory and record what it does.

    \b
    Example:
      CAS_AUDIT_PASSWORD=... cas-audit scan --inventory cas.toml --fail-on medium
    Exit codes: 0 clean, 1 findings at or above --fail-on, 3 a server could not be
    scanned, 2 usage or configuration error, 4 internal or storage error.
    """
    from scanner.catalog import load_catalog
    from scanner.inventory import load_inventory
    from scanner.policy import Policy, load_policy

    inventory = load_inventory(inventory_path)
    if site:
        inventory = inventory.only_site(site)
    catalog = load_catalog()
    policy = load_policy(policy_path) if policy_path else Policy.default()
    store = _open_store(db_url)
    accounts = dict.fromkeys(t.username for t in inventory.targets if t.auth != "certificate")
    password = {account: _password(account) for account in accounts}
    outcome = _run_scan_with_progress(inventory, store=store, password=password, policy=policy,
                                      catalog=catalog, concurrency=concurrency, timeout_s=timeout_s,
                                      fail_on=fail_on, site_filter=site)
    err_console.print(
        f"run {outcome.run_id} {outcome.status}: {outcome.scanned} scanned, {outcome.failed} failed, "
        f"{outcome.active_at_or_above} active finding(s) at or above {fail_on}", highlight=False)
    sys.exit(int(outcome.exit_code))


def _run_scan_with_progress(inventory: Any, **kwargs: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from scanner.scan import run_scan

    progress = Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err_console,
                        disable=not err_console.is_terminal, transient=True)
    with progress:
        task = progress.add_task("", total=len(inventory.targets))

        done = 0

        def advance(observation: Any) -> None:
            nonlocal done
            done += 1
            mark = "ok" if observation.scan_status == "ok" else f"failed ({observation.error_kind})"
            progress.update(task, advance=1, description=f"{observation.name}: {mark}")
            if observation.scan_status == "ok" and err_console.is_terminal:
                return  # the bar shows it; a log (cron) gets one line per server
            line = Text(f"[{done}/{len(inventory.targets)}] ")
            line.append(observation.name, "red" if observation.scan_status != "ok" else "")
            line.append(f": {mark}" + (f": {observation.error}" if observation.error else ""))
            progress.console.print(line)

        return run_scan(inventory, on_result=advance, **kwargs)


def _resolve_run(store: Any, run: str) -> int:
    if run == "latest":
        run_id = store.latest_run_id()
        if run_id is None:
            raise ConfigError("the history holds no scan yet", hint="run `cas-audit scan` first")
        return int(run_id)
    try:
        return int(run)
    except ValueError:
        raise ConfigError(f"--run must be a run id or 'latest', not {run!r}") from None


@cli.command()
@db_option
@click.option("--run", "run", default="latest", show_default=True, help="Run id, or 'latest'.")
@click.option("--format", "fmt", type=click.Choice(["xlsx", "json", "csv"]), default="xlsx", show_default=True)
@click.option("--out", "out", default=None,
              help="Output file, or - for stdout (default: reports/cas-audit-run-<id>-<lang>.xlsx for "
                   "xlsx, stdout for json and csv).")
@click.option("--lang", type=click.Choice(["en", "de"]), default="en", show_default=True)
@handle_errors
def report(db_url: str | None, run: str, fmt: str, out: str | None, lang: str) -> None:
    """Write the report of one run (findings with evidence) as xlsx, json or csv.

    \b
    Example:
      cas-audit report --format xlsx --lang de --out audit.xlsx
    """
    from scanner.report_build import build_report
    from scanner.report_write import write_report

    store = _open_store(db_url)
    run_id = _resolve_run(store, run)
    model = build_report(store, run_id, lang=lang)
    target = write_report(model, fmt, out)
    if target is not None:
        err_console.print(f"wrote {target}", highlight=False)


@cli.command()
@db_option
@click.option("--server", default=None, help="Server name as in the inventory (default: list the runs).")
@click.option("--protocol", type=click.Choice(["pop3", "imap4"]), default=None)
@handle_errors
def history(db_url: str | None, server: str | None, protocol: str | None) -> None:
    """Show the timeline of one server (value, build, service state, changes marked),
    or without --server the list of scan runs.

    \b
    Example:
      cas-audit history --server CAS01 --protocol pop3
    """
    from scanner.history import timeline

    store = _open_store(db_url)
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
        changed = set(getattr(row, "changed", ()) or ())
        table.add_row(*[
            (f"[bold yellow]{_text(values[c])} *[/]" if c in changed else _text(values[c])) for c in columns
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
    for run in runs:
        active = sum(1 for f in store.findings(run.id) if f.state != "waived")
        table.add_row(str(run.id), run.started_at.strftime("%Y-%m-%d %H:%M:%S"), run.status,
                      str(run.servers_planned), str(run.servers_scanned), str(run.servers_failed),
                      str(active), _text(run.site_filter), _text(run.operator))
    out_console.print(table)


def _text(value: Any) -> str:
    from rich.markup import escape

    return "" if value is None else escape(str(value))


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
    from scanner.history import diff as diff_runs

    store = _open_store(db_url)
    entries = diff_runs(store, run_a, run_b)
    if not entries:
        out_console.print(f"no change between run {run_a} and run {run_b}")
        return
    table = Table(title=f"run {run_a} -> run {run_b}")
    columns = list(entries[0].as_dict().keys())
    for column in columns:
        table.add_column(column)
    for entry in entries:
        table.add_row(*[_text(v) for v in entry.as_dict().values()])
    out_console.print(table)


@cli.command()
@db_option
@click.option("--server", required=True)
@click.option("--protocol", type=click.Choice(["pop3", "imap4"]), required=True)
@click.option("--run", "run", default=None,
              help="Run id, or 'latest' (default: the latest run that scanned the server successfully).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@handle_errors
def evidence(db_url: str | None, server: str, protocol: str, run: str | None, out: Path) -> None:
    """Write a config file exactly as it was collected (the backup to restore after an SP reset).

    \b
    Example:
      cas-audit evidence --server CAS03 --protocol pop3 --run 1 --out Microsoft.Exchange.Pop3.exe.Config
    """
    from scanner.evidence_file import write_evidence

    store = _open_store(db_url)
    run_id = None if run is None else _resolve_run(store, run)
    digest, size = write_evidence(store, server, protocol, run_id, out)
    err_console.print(f"wrote {out} ({size} bytes, sha256 {digest})", highlight=False)


@cli.group()
def inventory() -> None:
    """Build inventories."""


@inventory.command("discover")
@click.option("--from", "host", required=True, help="Exchange management host (name or address).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--username", required=True, help="Account, e.g. 'CONTOSO\\auditor'.")
@click.option("--auth", type=click.Choice(["ntlm", "kerberos", "basic"]), default="ntlm", show_default=True)
@click.option("--scheme", type=click.Choice(["http", "https"]), default="https", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None)
@click.option("--allow-insecure", is_flag=True, help="Permit Basic over plain http (labs only).")
@click.option("--no-verify-tls", is_flag=True, help="Do not validate the server certificate (labs only).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=120.0, show_default=True)
@handle_errors
def inventory_discover(host: str, out: Path, username: str, auth: str, scheme: str, port: int | None,
                       allow_insecure: bool, no_verify_tls: bool, timeout_s: float) -> None:
    """Ask one Exchange management host for every CAS and its AD site (Get-ExchangeServer).

    \b
    Example:
      cas-audit inventory discover --from exmgmt01.contoso.local --username 'CONTOSO\\auditor' --out cas.toml
    """
    from scanner.discovery import discover_inventory

    count = discover_inventory(host, out, username=username, auth=auth, scheme=scheme, port=port,
                               allow_insecure=allow_insecure, verify_tls=not no_verify_tls,
                               password=_password(username), timeout_s=timeout_s)
    err_console.print(f"wrote {out} with {count} Client Access Server(s)", highlight=False)


@cli.command("rules")
@click.option("--lang", type=click.Choice(["en", "de"]), default="en", show_default=True)
@handle_errors
def rules_cmd(lang: str) -> None:
    """List the rule catalog."""
    from scanner.catalog import load_catalog

    catalog = load_catalog()
    table = Table(title=f"cas-audit rule catalog {catalog.version}")
    for column in ("id", "severity", "title"):
        table.add_column(column)
    for rule in catalog.rules:
        table.add_row(rule.id, rule.severity, _text(rule.title[lang] if isinstance(rule.title, dict) else rule.title))
    out_console.print(table)


@cli.group()
def db() -> None:
    """Manage the history database."""


@db.command("upgrade")
@db_option
@handle_errors
def db_upgrade(db_url: str | None) -> None:
    """Create or upgrade the history database to the current schema."""
    from scanner.store.repo import upgrade_database

    shown = upgrade_database(db_url)
    err_console.print(f"{shown} is at the current schema", highlight=False)


@cli.group()
def lab() -> None:
    """The simulated Exchange organisation (real WinRM on loopback)."""


@lab.command("serve")
@click.argument("fleet", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--inventory-out", "inventory_out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@handle_errors
def lab_serve(fleet: Path, inventory_out: Path) -> None:
    """Run the organisation of FLEET on loopback until stopped; write its inventory.

    \b
    Example:
      cas-audit lab serve fleet.toml --inventory-out lab-inventory.toml
    """
    from scanner.lab.serve import serve

    serve(fleet, inventory_out)


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("reports"),
              show_default=True, help="Folder for the demo's history database and reports.")
@click.option("--lang", type=click.Choice(["en", "de"]), default="en", show_default=True)
@handle_errors
def demo(out_dir: Path, lang: str) -> None:
    """Lab organisation + two scans with a service pack upgrade between them + reports."""
    from scanner.demo import run_demo

    for line in run_demo(out_dir, lang=lang):
        err_console.print(line, highlight=False)


def main() -> None:
    """Entry point of the `cas-audit` console script."""
    cli(prog_name="cas-audit")

"""Setting up: `inventory discover`, `rules`, `db upgrade`, `lab serve` and `demo`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from scanner.cli.app import (
    _password,
    _text,
    cli,
    db_option,
    err_console,
    handle_errors,
    out_console,
)


@cli.group()
def inventory() -> None:
    """Build inventories.

    \b
    Example:
      cas-audit inventory discover --from exmgmt01.contoso.local --username 'CONTOSO\\auditor' --out cas.toml
    """


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
@click.option("--force", is_flag=True, help="Replace the --out file if it exists.")
@handle_errors
def inventory_discover(host: str, out: Path, username: str, auth: str, scheme: str, port: int | None,
                       allow_insecure: bool, no_verify_tls: bool, timeout_s: float, force: bool) -> None:
    """Ask one Exchange management host for every CAS and its AD site (Get-ExchangeServer).

    \b
    Example:
      cas-audit inventory discover --from exmgmt01.contoso.local --username 'CONTOSO\\auditor' --out cas.toml
    """
    from scanner.collect.discovery import discover_inventory

    count = discover_inventory(host, out, username=username, auth=auth, scheme=scheme, port=port,
                               allow_insecure=allow_insecure, verify_tls=not no_verify_tls,
                               password=_password(username, kerberos=auth == "kerberos"), timeout_s=timeout_s,
                               force=force)
    err_console.print(f"wrote {out} with {count} Client Access Server(s)", highlight=False)


@cli.command("rules")
@click.option("--lang", type=click.Choice(["en", "de"]), default="en", show_default=True)
@handle_errors
def rules_cmd(lang: str) -> None:
    """List the rule catalog: id, default severity and title of each rule.

    A policy file (scan --policy) waives rules or changes their severity by these ids.

    \b
    Example:
      cas-audit rules --lang de
    """
    from scanner.judge.catalog import load_catalog

    catalog = load_catalog()
    table = Table(title=f"cas-audit rule catalog {catalog.version}")
    for column in ("id", "severity", "title"):
        table.add_column(column)
    for rule in catalog.rules:
        table.add_row(rule.id, rule.severity, _text(rule.text(lang).title))
    out_console.print(table)


@cli.group()
def db() -> None:
    """Manage the history database.

    \b
    Example:
      cas-audit db upgrade --db postgresql+psycopg://cas_audit@db01.contoso.local/cas_audit
    """


@db.command("upgrade")
@db_option
@handle_errors
def db_upgrade(db_url: str | None) -> None:
    """Create or upgrade the history database to the current schema.

    Every command upgrades on first use; run this explicitly after installing a new
    version, e.g. before the scheduled scans of several scanners sharing one database.

    \b
    Example:
      cas-audit db upgrade --db sqlite:///C:/ProgramData/cas-audit/history.db
    """
    from scanner.store.repo import upgrade_database

    shown = upgrade_database(db_url)
    err_console.print(f"{shown} is at the current schema", highlight=False)


@cli.group()
def lab() -> None:
    """The simulated Exchange organisation (real WinRM on loopback).

    \b
    Example:
      cas-audit lab serve fleet.toml --inventory-out lab-inventory.toml
    """


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
    """Lab organisation + two scans with a service pack upgrade between them + reports.

    Writes OUT/demo-history.db and the workbook and JSON report of the second scan.

    \b
    Example:
      cas-audit demo --out reports --lang de
    """
    from scanner.demo import run_demo

    for line in run_demo(out_dir, lang=lang):
        err_console.print(line, highlight=False)

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
from scanner.cli.output import output
from scanner.collect.ldapclient import BINDS, TRANSPORTS
from scanner.facts import LANGUAGES, Language
from scanner.inventory import LOGON_AUTHS, SCHEMES


@cli.group()
def inventory() -> None:
    """Build inventories.

    \b
    Example:
      cas-audit inventory discover --ldap dc01.contoso.local --username 'CONTOSO\\auditor' --out cas.toml
    """


@inventory.command("discover")
@click.option("--ldap", "ldap_host", default=None, metavar="DC",
              help="Domain controller to read the Exchange servers from (LDAPS, from this host: no second hop).")
@click.option("--base", default=None, metavar="DN",
              help="With --ldap: the DN to search under (default: CN=Microsoft Exchange,CN=Services of the "
                   "configuration partition).")
@click.option("--from", "host", default=None,
              help="Exchange management host to run Get-ExchangeServer on (needs --auth kerberos --delegate).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--username", required=True, help="Account, e.g. 'CONTOSO\\auditor' or auditor@CONTOSO.COM.")
@click.option("--auth", type=click.Choice(LOGON_AUTHS), default="ntlm", show_default=True,
              help="How the scan logs on to each CAS (written to the inventory; also --from's logon).")
@click.option("--scheme", type=click.Choice(SCHEMES), default="https", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="WinRM port of the CAS (default: try 5986/5985, then 443/80).")
@click.option("--allow-insecure", is_flag=True, help="Permit Basic over plain http (labs only).")
@click.option("--no-verify-tls", is_flag=True, help="Do not validate the WinRM certificates (labs only).")
@click.option("--ldap-auth", type=click.Choice(BINDS), default=None,
              help="Bind to the directory with (default: kerberos for --auth kerberos, simple for basic, else ntlm).")
@click.option("--ldap-transport", type=click.Choice(TRANSPORTS), default="ldaps", show_default=True,
              help="TLS from the first byte (port 636) or StartTLS (port 389); the certificate is always checked.")
@click.option("--ldap-port", type=click.IntRange(1, 65535), default=None, help="Default: 636 (ldaps), 389 (starttls).")
@click.option("--ldap-ca-bundle", type=click.Path(dir_okay=False), default=None,
              help="PEM file of the CAs that issue the domain controllers' certificates (default: the system's).")
@click.option("--delegate", is_flag=True, help="With --from and --auth kerberos: delegate the ticket to the host.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=120.0, show_default=True)
@click.option("--force", is_flag=True, help="Replace the --out file if it exists.")
@handle_errors
def inventory_discover(ldap_host: str | None, base: str | None, host: str | None, out: Path, username: str,
                       auth: str, scheme: str, port: int | None, allow_insecure: bool, no_verify_tls: bool,
                       ldap_auth: str | None, ldap_transport: str, ldap_port: int | None,
                       ldap_ca_bundle: str | None, delegate: bool, timeout_s: float, force: bool) -> None:
    """Write an inventory of every Client Access Server and its AD site.

    --ldap DC reads the Exchange server objects (msExchExchangeServer with the Client
    Access role) and their sites from the directory, from this host. --from HOST asks
    Get-ExchangeServer on a management host over WinRM, which then needs a delegated
    Kerberos ticket to reach the directory (the second hop). The password comes from
    CAS_AUDIT_PASSWORD, the keyring or a prompt.

    \b
    Example:
      cas-audit inventory discover --ldap dc01.contoso.local --username 'CONTOSO\\auditor' --out cas.toml
      cas-audit inventory discover --ldap dc01.contoso.local --username auditor@CONTOSO.LOCAL --auth kerberos --ldap-ca-bundle contoso-ca.pem --out cas.toml
      cas-audit inventory discover --from exmgmt01.contoso.local --username auditor@CONTOSO.LOCAL --auth kerberos --delegate --out cas.toml
    """
    from scanner.collect.discovery import InventorySettings, discover_inventory, discover_inventory_ldap
    from scanner.collect.ldapclient import DEFAULT_PORTS, DirectoryAccess
    from scanner.errors import CollectionError, ConfigError

    if bool(ldap_host) == bool(host):
        raise ConfigError("give either --ldap DC (read the directory from here) or --from HOST",
                          hint="--ldap needs no second hop: cas-audit inventory discover --ldap DC --username USER --out FILE")
    if ldap_host is None:
        if base or ldap_auth or ldap_port or ldap_ca_bundle:
            raise ConfigError("--base and the --ldap-* options go with --ldap, not --from")
        assert host is not None
        count = discover_inventory(host, out, username=username, auth=auth, scheme=scheme, port=port,
                                   allow_insecure=allow_insecure, verify_tls=not no_verify_tls,
                                   password=_password(username, kerberos=auth == "kerberos"), timeout_s=timeout_s,
                                   force=force, delegate=delegate)
        err_console.print(f"wrote {out} with {count} Client Access Server(s)", highlight=False)
        return
    if delegate:
        raise ConfigError("--delegate goes with --from: --ldap reads the directory from this host")
    if ldap_ca_bundle and not Path(ldap_ca_bundle).is_file():
        raise ConfigError(f"--ldap-ca-bundle {ldap_ca_bundle}: no such file", hint="a PEM file of CA certificates")
    bind = ldap_auth or {"kerberos": "kerberos", "basic": "simple"}.get(auth, "ntlm")
    access = DirectoryAccess(host=ldap_host, port=ldap_port or DEFAULT_PORTS[ldap_transport],
                             transport=ldap_transport, bind=bind, username=username, ca_bundle=ldap_ca_bundle)
    settings = InventorySettings(username, auth, scheme, port, allow_insecure, not no_verify_tls)
    from scanner.inventory import refuse_basic_over_http

    refuse_basic_over_http(auth, scheme, allow_insecure, "the inventory written", "pass --allow-insecure")
    from scanner.collect.ldapclient import check_access, check_base

    check_access(access)
    if base is not None:
        check_base(base)
    result = discover_inventory_ldap(access, out, settings=settings,
                                     password=_password(username, kerberos=bind == "kerberos"), base=base,
                                     timeout_s=timeout_s, force=force)
    for note in result.notes:
        output.warning(f"unknown: {note}", event="discover-unknown")
    for skipped in result.skipped:
        output.warning(f"left out: {skipped}", event="discover-left-out")
    output.info(f"wrote {out} with {result.count} Client Access Server(s)", event="discover-written")
    if result.skipped:
        raise CollectionError("output", f"{len(result.skipped)} Client Access Server entr"
                                        f"{'y was' if len(result.skipped) == 1 else 'ies were'} left out of {out}",
                              hint="each is named above with the reason; fix the directory or add them by hand")


@cli.command("rules")
@click.option("--lang", type=click.Choice(LANGUAGES), default="en", show_default=True)
@handle_errors
def rules_cmd(lang: Language) -> None:
    """List the rule catalog: id, default severity, title and the controls each rule serves.

    A policy file (scan --policy) waives rules or changes their severity by these ids. The
    controls (NIST SP 800-53, CIS Controls v8, ISO/IEC 27001:2022, DISA STIG) are marked
    exact or closest; rules/catalog.toml names each one's source.

    \b
    Example:
      cas-audit rules --lang de
    """
    from scanner.judge.catalog import load_catalog
    from scanner.report.controls import controls_text
    from scanner.report.labels import Labels

    catalog = load_catalog()
    labels = Labels(lang)
    table = Table(title=f"cas-audit rule catalog {catalog.version}")
    for column in ("id", "severity", "title", labels("col.controls").lower()):
        table.add_column(column)
    for rule in catalog.rules:
        controls = (controls_text(labels, rule.controls) or "").replace("; ", "\n")
        table.add_row(rule.id, rule.severity, _text(rule.text(lang).title), _text(controls))
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
@click.option("--lang", type=click.Choice(LANGUAGES), default="en", show_default=True)
@handle_errors
def demo(out_dir: Path, lang: Language) -> None:
    """Lab organisation + two scans with a service pack upgrade between them + reports,
    then the change workflow once: the fix plan, applied to the upgraded server, verified
    by a third scan, the rollback checked.

    Writes OUT/demo-history.db, the workbook, JSON and HTML reports of the second scan,
    and its fix plan in OUT/fix-plan/ (applied to CAS05 only, ticket DEMO-0001).

    \b
    Example:
      cas-audit demo --out reports --lang de
    """
    from scanner.demo import run_demo

    for line in run_demo(out_dir, lang=lang):
        err_console.print(line, highlight=False)

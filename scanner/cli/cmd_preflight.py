"""`cas-audit preflight`: is every server of the inventory ready for a scan?"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from scanner.cli.app import _text, account_passwords, cli, handle_errors, out_console, warn_unverified_tls
from scanner.cli.cmd_scan import Interrupts, _exit_now
from scanner.cli.output import output
from scanner.errors import ExitCode
from scanner.facts import PREFLIGHT_FORMATS, PreflightFormat


@cli.command()
@click.option("--inventory", "inventory_path", required=True, type=click.Path(path_type=Path),
              help="TOML inventory of the CAS servers to check.")
@click.option("--format", "fmt", type=click.Choice(PREFLIGHT_FORMATS), default="table", show_default=True,
              help="A table for people, or the JSON document for scripts.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Wall-clock limit per server, in seconds.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Servers checked at once.")
@handle_errors
def preflight(inventory_path: Path, fmt: PreflightFormat, timeout_s: float, concurrency: int) -> None:
    """Check every server before the first scan, without running the collector:
    reachable (and on which port), WinRM stack and OS version (WS-Management Identify),
    authentication schemes offered, TLS certificate, can the account open a shell,
    PowerShell version. Each problem comes with one remediation hint.

    \b
    Example:
      CAS_AUDIT_PASSWORD=... cas-audit preflight --inventory cas.toml
    Example (for a script):
      cas-audit preflight --inventory cas.toml --format json --timeout 30
    Exit codes: 0 every server ready, 3 some server not ready, 2 usage or
    configuration error, 4 internal error (every server is still reported),
    130 / 143 interrupted by SIGINT / SIGTERM (nothing is printed on stdout).
    """
    from scanner.collect.preflight import check_inventory
    from scanner.inventory import load_inventory
    from scanner.util import gcpolicy

    gcpolicy.settle()  # the checks' modules are loaded (util/gcpolicy.py)
    inventory = load_inventory(inventory_path)
    passwords = account_passwords(inventory.targets)
    warn_unverified_tls(inventory.targets)
    with Interrupts() as interrupts:
        results = check_inventory(inventory.targets, lambda t: passwords.get(t.username),
                                  timeout_s=timeout_s, concurrency=concurrency, stop=interrupts.stop)
        if interrupts.code is not None:
            output.error(f"preflight {interrupts.reason()}: {len(results)} of {len(inventory.targets)} "
                         "server(s) checked; no report", exit_code=interrupts.code)
            _exit_now(interrupts.code)  # without waiting for checks stuck in a server
    if fmt == "json":
        json.dump({"servers": [r.as_dict() for r in results]}, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(results)
    internal = [r.name for r in results if r.internal]
    if internal:
        from scanner.util import crashlog

        where = crashlog.current_path()
        output.error(f"an internal error stopped the checks of {len(internal)} server(s): {', '.join(internal)}",
                     hint=f"the traceback is in {where}" if where else None, exit_code=int(ExitCode.INTERNAL))
        sys.exit(int(ExitCode.INTERNAL))
    sys.exit(int(ExitCode.OK if all(r.ready for r in results) else ExitCode.UNSCANNED))


def _print_table(results: list[Any]) -> None:
    table = Table(title="Preflight", show_lines=True)
    for column in ("Server", "Port", "Ready", "WinRM", "Windows", "Auth offered", "PowerShell", "Problem and hint"):
        table.add_column(column)
    for r in results:
        windows = r.windows or r.os_version or ""
        if r.os_version and r.windows:
            windows = f"{r.windows} ({r.os_version})"
        problems = "\n".join(f"{_text(p.what)}\n  -> {_text(p.hint)}" for p in r.problems)
        if r.certificate is not None:
            cert = r.certificate
            state = "trusted" if cert.verified else f"NOT trusted: {cert.error}"
            problems = (problems + "\n" if problems else "") + _text(
                f"TLS certificate {state}; subject {cert.subject}; expires {cert.not_after}")
        table.add_row(
            _text(r.name), _text(f"{r.address}:{r.port}" if r.port else r.address),
            "[green]yes[/]" if r.ready else "[red]no[/]", _text(r.winrm_stack or ""), _text(windows),
            _text(", ".join(r.auth_offered)), _text(r.powershell_version or ""), problems,
        )
    out_console.print(table)

"""`cas-audit fix apply` and `fix rollback`: run a reviewed plan's scripts on their servers
over the scanner's WinRM launch; without --yes only the prerequisites are checked and
nothing changes anywhere (docs/remediation.md)."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import click

from scanner.cli.app import _open_store, _password, db_option, handle_errors
from scanner.cli.cmd_fix import fix
from scanner.cli.output import output
from scanner.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    from scanner.remedy.apply import ServerOutcome

FIX_PASSWORD_ENV = "CAS_AUDIT_FIX_PASSWORD"
#: `fix apply --restart`: restart the protocol services after the change, or leave it.
RestartChoice = Literal["now", "none"]
RESTART_CHOICES: tuple[str, ...] = get_args(RestartChoice)


def _fix_password(username: str) -> str:
    """The writing account's password: CAS_AUDIT_FIX_PASSWORD, the keyring (service
    'cas-audit'), or a prompt on a terminal; never the command line."""
    value = os.environ.get(FIX_PASSWORD_ENV)
    if value:
        output.add_secret(value)
        return value
    try:
        import keyring

        stored = keyring.get_password("cas-audit", username)
    except Exception as exc:  # keyring's errors, and whatever a backend raises
        stored = None
        output.warning(f"no password for {username} from the keyring: {type(exc).__name__}")
    if stored:
        output.add_secret(str(stored))
        return str(stored)
    if sys.stdin.isatty():
        typed = str(click.prompt(f"Password for {username}", hide_input=True, err=True))
        output.add_secret(typed)
        return typed
    raise ConfigError(f"no password for {username}",
                      hint=f"set {FIX_PASSWORD_ENV}, store it with `keyring set cas-audit {username}`, or run on a terminal")


def _run(folder: Path, inventory_path: Path, kind: str, ticket: str | None, yes: bool, restart: bool,
         username: str | None, concurrency: int, timeout: float, db_url: str | None) -> None:
    from scanner.collect.fixscript import valid_ticket
    from scanner.inventory import load_inventory
    from scanner.remedy.apply import change_records, load_scripts, run_scripts
    from scanner.store.changes import record_changes

    if yes and not ticket:
        raise ConfigError(f"fix {kind} --yes needs --ticket", hint="the ticket names the backup and the history rows")
    if ticket and not valid_ticket(ticket):
        raise ConfigError("--ticket: letters, digits, '.', '-', '_' (at most 64, starting with a letter or digit)")
    scripts = load_scripts(folder, "apply" if kind == "apply" else "rollback")
    inventory = load_inventory(inventory_path)
    targets = {t.name.casefold(): t for t in inventory.targets}
    if username:
        password: str | None = _fix_password(username)
    else:
        accounts = {targets[s.casefold()].username for s in scripts if s.casefold() in targets}
        if len(accounts) > 1:
            raise ConfigError("the plan's servers use more than one inventory account", hint="name one with --username")
        password = _password(accounts.pop()) if accounts else None
    store = _open_store(db_url) if yes else None
    outcomes = run_scripts(scripts, targets, password, username=username, apply=yes, restart=restart,
                           ticket=ticket or "", timeout_s=timeout, concurrency=concurrency)
    operator = getpass.getuser()
    account = username or ", ".join(sorted({targets[s.casefold()].username for s in scripts if s.casefold() in targets}))
    for outcome in outcomes:
        if outcome.result is None:
            output.warning(f"{outcome.server}: not changed: {outcome.error}", event="fix_unreached",
                           server=outcome.server)
            continue
        for c in outcome.result.changes:
            line = f"{outcome.server} {c.protocol}: {c.status}" + (f" (restart {c.restart})" if c.restart != "none" else "")
            if c.message:
                line += f": {c.message}"
            (output.info if c.ok else output.warning)(line, event="fix_change", server=outcome.server,
                                                      protocol=c.protocol, status=c.status, restart=c.restart)
    records = change_records(outcomes, kind=kind, ticket=ticket or "", operator=f"{operator} as {account}") \
        if yes else []
    if store is not None:
        try:
            record_changes(store, records)
        finally:
            store.close()
    bad = [o.server for o in outcomes if not o.ok]
    if not username and any(c.status == "failed" for o in outcomes if o.result for c in o.result.changes):
        output.warning(f"the scripts ran as the inventory's account ({account}); a scan account should only "
                       "read, so a write it was denied changed nothing: name the account that may write "
                       "with --username", event="fix_account")
    what = ("changed" if kind == "apply" else "rolled back") if yes else "ready (checked only; nothing changed)"
    output.result(f"fix_{kind}", f"{len(outcomes) - len(bad)} of {len(outcomes)} server(s) {what}"
                  + (f"; not: {', '.join(_not_done(o) for o in outcomes if not o.ok)}" if bad else ""), servers=len(outcomes), failed=bad, applied=yes)
    if bad:
        sys.exit(int(ExitCode.UNSCANNED))


def _not_done(outcome: ServerOutcome) -> str:
    """`CAS05 (pop3 done, restart failed)`: a server that did not end fully done, with what each
    of its changes did, so a written file whose restart failed is not read as "not changed"."""
    if outcome.result is None:
        return f"{outcome.server} (not reached)"
    parts = []
    for c in outcome.result.changes:
        if c.ok:
            continue
        parts.append(f"{c.protocol} {c.status}" + (", restart failed" if c.restart == "failed" else ""))
    return f"{outcome.server} ({'; '.join(parts)})" if parts else outcome.server


_COMMON = [
    click.argument("folder", type=click.Path(file_okay=False, path_type=Path)),
    click.option("--inventory", "inventory", type=click.Path(dir_okay=False, path_type=Path),
                 required=True, help="Inventory file (how to reach the servers)."),
    click.option("--yes", is_flag=True, help="Really change the servers (otherwise only check)."),
    click.option("--username", default=None, metavar="USER",
                 help=f"Account allowed to write (password from {FIX_PASSWORD_ENV}, the keyring or a prompt)."),
]


@fix.command("apply")
@db_option
@click.option("--ticket", default=None, metavar="ID", help="Change ticket (needed with --yes).")
@click.option("--restart", type=click.Choice(RESTART_CHOICES), default="none", show_default=True,
              help="Restart the protocol services after the change.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--timeout", type=click.FloatRange(1, 3600), default=120, show_default=True, help="Seconds per server.")
@_COMMON[3]
@_COMMON[2]
@_COMMON[1]
@_COMMON[0]
@handle_errors
def apply(folder: Path, inventory: Path, yes: bool, username: str | None, ticket: str | None, restart: str,
          concurrency: int, timeout: float, db_url: str | None) -> None:
    """Run a reviewed plan's scripts on their servers. Without --yes only the prerequisites
    are checked (nothing changes on any server nor in the history). With --yes (and
    --ticket) each file whose hash is still the plan's is replaced atomically, a backup
    kept beside it, and every change recorded in the history. Exit 0 all applied (or all
    ready), 3 some server not changed, 2 usage.

    \b
    Examples:
      cas-audit fix apply change-plan --inventory inventory.toml
      cas-audit fix apply change-plan --inventory inventory.toml --yes --ticket CHG-1234 --username fixer
    """
    _run(folder, inventory, "apply", ticket, yes, restart == "now", username, concurrency, timeout, db_url)


@fix.command("rollback")
@db_option
@click.option("--ticket", required=True, metavar="ID", help="The ticket the change was applied with.")
@_COMMON[3]
@_COMMON[2]
@_COMMON[1]
@_COMMON[0]
@handle_errors
def rollback(folder: Path, inventory: Path, yes: bool, username: str | None, ticket: str, db_url: str | None) -> None:
    """Restore the backups the plan's apply kept, only where the file is still the one
    apply wrote. Without --yes only checks. Exit 0 all restored (or ready), 3 some not.

    \b
    Examples:
      cas-audit fix rollback change-plan --inventory inventory.toml --ticket CHG-1234
      cas-audit fix rollback change-plan --inventory inventory.toml --ticket CHG-1234 --yes --username fixer
    """
    _run(folder, inventory, "rollback", ticket, yes, False, username, 8, 120, db_url)

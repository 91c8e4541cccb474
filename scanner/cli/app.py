"""The command group and what every command shares: error handling, the --db option,
the store and the password."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
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
    except Exception:
        pass
    if sys.stdin.isatty():
        return str(click.prompt(f"Password for {username}", hide_input=True, err=True))
    raise ConfigError(
        f"no password for {username}",
        hint="set CAS_AUDIT_PASSWORD, store it with `keyring set cas-audit <user>`, or run on a terminal",
    )


def _text(value: Any) -> str:
    from rich.markup import escape

    return "" if value is None else escape(str(value))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cas-audit")
def cli() -> None:
    """Audit AllowCrossSiteSessions on Exchange 2007 Client Access Servers.

    \b
    Quick start with the built-in lab organisation:
      cas-audit demo
    """


def main() -> None:
    """Entry point of the `cas-audit` console script."""
    cli(prog_name="cas-audit")

"""The command group and what every command shares: error handling, the --db option,
the store and the password."""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from scanner import __version__
from scanner.cli.output import output, stream_safe
from scanner.cli.streams import final_flush, guard_standard_streams
from scanner.errors import CasAuditError, ConfigError, ExitCode
from scanner.facts import LOG_FORMATS
from scanner.util import crashlog, gcpolicy

F = TypeVar("F", bound=Callable[..., Any])
# progress and messages on stderr; --quiet silences it, --log-format json turns it into JSON lines
err_console = output.console
out_console = Console(soft_wrap=True)
if not out_console.is_terminal:  # a pipe or a file: wide enough that tables do not fold
    out_console = Console(soft_wrap=True, width=200)


log = logging.getLogger(__name__)


def internal_error(exc: BaseException) -> int:
    """Log `exc` with its traceback to the error log; say so in one line; return exit code 4."""
    log.error("unexpected error", exc_info=exc)
    where = crashlog.current_path()
    detail = " ".join(str(exc).split())[:200]
    message = f"internal error: {type(exc).__name__}" + (f": {detail}" if detail else "")
    output.error(message, hint=f"the traceback is in {where}" if where else None,
                 exit_code=int(ExitCode.INTERNAL))
    return int(ExitCode.INTERNAL)


def handle_errors(func: F) -> F:
    """Print a CasAuditError as one clean message and exit with its code; anything else
    unexpected exits 4 with one line and the path of the log holding the traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CasAuditError as exc:
            # messages quote files such as "[lab]" and "[[server]]": never read as markup
            output.error(exc.message, hint=exc.hint, exit_code=int(exc.exit_code))
            sys.exit(int(exc.exit_code))
        except KeyboardInterrupt:  # Ctrl-C outside a scan's own handling (design: 130)
            output.error("interrupted", exit_code=int(ExitCode.INTERRUPTED))
            sys.exit(int(ExitCode.INTERRUPTED))
        except Exception as exc:
            sys.exit(internal_error(exc))

    return wrapper  # type: ignore[return-value]


db_option = click.option(
    "--db", "db_url", envvar="CAS_AUDIT_DB", default=None, metavar="URL",
    help="SQLAlchemy URL of the history database (env CAS_AUDIT_DB; default: a SQLite file "
         "in the user's data folder).",
)


def _open_store(db_url: str | None, *, read_only: bool = False, create: bool = True) -> Any:
    """The history; `read_only` commands (report, history, diff, evidence) never create or
    upgrade a database, and refuse one that is missing or not cas-audit's (exit 2); without
    `create` (prune --apply) an existing history is upgraded, a missing one refused."""
    from scanner.store.repo import open_store

    store = open_store(db_url, read_only=read_only, create=create)
    gcpolicy.settle()  # the command's modules and its history are loaded: its work starts
    return store


SYSTEMD_CREDENTIAL = "cas-audit-password"


def _systemd_credential(name: str) -> str | None:
    """A credential systemd passed with LoadCredential= (systemd.exec(5), "Credentials"):
    a file in $CREDENTIALS_DIRECTORY, readable only by the service. One trailing newline
    is dropped, as `echo secret > file` leaves one."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    try:
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            text = handle.read(64 * 1024)
    except OSError:
        return None
    return text.removesuffix("\n").removesuffix("\r") or None


def _keyring_failure(exc: Exception) -> str:
    """One sentence for a keyring that failed (locked, no backend, D-Bus unreachable)."""
    detail = " ".join(str(exc).split())[:240] or "no detail given"
    return f"the keyring failed ({type(exc).__name__}: {detail})"


def _stored_password(username: str) -> tuple[str | None, str | None]:
    """CAS_AUDIT_PASSWORD, then the systemd credential `cas-audit-password`, then the OS
    keyring (service 'cas-audit'; the Credential Manager on Windows): the password, or
    None; and why the keyring could not be read (one sentence), if it could not."""
    value = os.environ.get("CAS_AUDIT_PASSWORD")
    if value:
        output.add_secret(value)
        return value, None
    credential = _systemd_credential(SYSTEMD_CREDENTIAL)
    if credential:
        output.add_secret(credential)
        return credential, None
    try:
        import keyring

        stored = keyring.get_password("cas-audit", username)
    except Exception as exc:  # keyring's errors, and whatever a backend raises
        return None, _keyring_failure(exc)
    if stored:
        output.add_secret(stored)
        return str(stored), None
    return None, None


def _password(username: str, *, kerberos: bool = False) -> str | None:
    """A stored password (`_stored_password`), then a prompt.

    The environment variable serves every account of the inventory; the keyring and the
    prompt are asked once per account. A Kerberos account needs none of them: without a
    stored password its ticket comes from kinit's credential cache (None, no prompt).
    A keyring that fails is never taken for an empty one: its error is part of the
    "no password" message, and a warning where a ticket or a prompt takes over."""
    stored, keyring_error = _stored_password(username)
    if stored:
        return stored
    if kerberos:
        if keyring_error:
            output.warning(f"no password for {username} from the keyring: {keyring_error}; "
                           "using kinit's ticket cache")
        return None
    if sys.stdin.isatty():
        if keyring_error:
            output.warning(f"no password for {username} from the keyring: {keyring_error}")
        typed = str(click.prompt(f"Password for {username}", hide_input=True, err=True))
        output.add_secret(typed)
        return typed
    raise ConfigError(
        f"no password for {username}" + (f": {keyring_error}" if keyring_error else ""),
        hint="set CAS_AUDIT_PASSWORD, store it with `keyring set cas-audit <user>` (on Windows: in the "
             "Credential Manager of the account that runs cas-audit), or run on a terminal",
    )


def account_passwords(targets: Any) -> dict[str, str | None]:
    """One password (`_password`) per account of the targets, asked once each; a certificate
    target needs none, and an account used only for Kerberos may do with kinit's ticket."""
    accounts: dict[str, bool] = {}  # user -> Kerberos only
    for t in targets:
        if t.auth != "certificate":
            accounts[t.username] = accounts.get(t.username, True) and t.auth == "kerberos"
    return {account: _password(account, kerberos=only) for account, only in accounts.items()}


def warn_unverified_tls(targets: Any) -> None:
    """One warning, in the command line's format, naming the https servers whose certificate
    is not verified (verify_tls = false); urllib3's own warning is silenced (httpguard)."""
    names = [t.name for t in targets if t.scheme == "https" and not t.verify_tls]
    if not names:
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    output.warning(f"TLS certificates are not verified (verify_tls = false) for {len(names)} server(s): {shown}",
                   event="tls-not-verified", servers=names)


def _text(value: Any) -> str:
    from rich.markup import escape

    return "" if value is None else escape(str(value))


# Libraries whose versions matter when a scan misbehaves: WinRM, LDAP and authentication,
# history database, XML and workbook.
KEY_LIBRARIES = ("pywinrm", "pyspnego", "requests-ntlm", "ldap3", "SQLAlchemy", "alembic", "lxml", "openpyxl")


def version_text() -> str:
    """What `cas-audit --version` prints: click's first line, then what a bug report needs."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    from importlib.util import find_spec

    libraries = []
    for name in KEY_LIBRARIES:
        try:
            libraries.append(f"{name} {dist_version(name)}")
        except PackageNotFoundError:
            libraries.append(f"{name} missing")
    extras = [
        "kerberos " + ("yes" if find_spec("kerberos") or find_spec("winkerberos") else "no"),
        "postgresql " + ("yes" if find_spec("psycopg") else "no"),
    ]
    return "\n".join((
        f"cas-audit, version {__version__}",
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform(terse=True)}",
        ", ".join(libraries),
        "extras: " + ", ".join(extras),
    ))


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit()


def _json_asked(args: list[str]) -> bool:
    """Whether the command line (or else CAS_AUDIT_LOG_FORMAT) asks for JSON lines, read from
    the raw arguments: for a usage error of the group's own options, which comes before
    click has parsed any of them."""
    chosen = os.environ.get("CAS_AUDIT_LOG_FORMAT", "text")
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--log-format" and index + 1 < len(args):
            chosen = args[index + 1]
        elif arg.startswith("--log-format="):
            chosen = arg.partition("=")[2]
    return chosen == "json"


class _Group(click.Group):
    """The top-level group: with --log-format json a usage error of a command (unknown
    option, bad choice, missing argument), an unknown command or an unknown option of the
    group itself is one JSON line too, still exit 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        raw = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if not _json_asked(raw):
                raise
            output.configure(log_format="json")
            output.error(f"{ctx.command_path}: {exc.format_message()}", hint=f"see {ctx.command_path} --help",
                         event="usage-error", exit_code=exc.exit_code)
            ctx.exit(exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        # the group's own options are parsed: apply them before click resolves the command,
        # whose usage error (no such command) comes before the group's callback runs
        output.configure(quiet=bool(ctx.params.get("quiet")), log_format=str(ctx.params.get("log_format", "text")))
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if not output.json:
                raise
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            output.error(f"{where}: {exc.format_message()}", hint=f"see {where} --help",
                         event="usage-error", exit_code=exc.exit_code)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version, with Python's and the key libraries', and exit.")
@click.option("--quiet", "-q", is_flag=True,
              help="Print only warnings and errors on stderr (results on stdout stay).")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), envvar="CAS_AUDIT_LOG_FORMAT", default="text",
              show_default=True,
              help="stderr as text, or as one JSON object per line for schedulers and SIEMs "
                   "(env CAS_AUDIT_LOG_FORMAT).")
def cli(quiet: bool, log_format: str) -> None:
    """Audit AllowCrossSiteSessions on Exchange 2007 Client Access Servers.

    Colour follows the terminal; NO_COLOR=1 turns it off.

    \b
    Example (the built-in lab organisation, two scans and reports):
      cas-audit demo
    Example (a nightly run that logs JSON lines):
      cas-audit --quiet --log-format json scan --inventory cas.toml
    """
    output.configure(quiet=quiet, log_format=log_format)


def main() -> None:
    """Entry point of the `cas-audit` console script."""
    gcpolicy.start_up()  # no collections while the command imports its modules (util/gcpolicy.py)
    stream_safe(sys.stderr)
    stream_safe(sys.stdout)
    guard_standard_streams()
    crashlog.install(output.redact)
    code: int | str | None = 0
    try:
        cli(prog_name="cas-audit")
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # raised outside a command (e.g. while parsing options)
        code = internal_error(exc)
    final_flush()
    sys.exit(code)

"""The command line: each command opens what it needs, calls one library function and
turns library errors into a message and an exit code. One module per group of commands;
importing this package registers them all on `cli`."""

from scanner.cli import (  # noqa: F401 - registers the commands
    cmd_admin,
    cmd_fix,
    cmd_fix_apply,
    cmd_history,
    cmd_preflight,
    cmd_prune,
    cmd_report,
    cmd_scan,
    cmd_verify,
)
from scanner.cli.app import cli, main

__all__ = ["cli", "main"]

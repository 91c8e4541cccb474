"""One error hierarchy; the command line translates it to a message and an exit code."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scanner.facts import ErrorKind


class ExitCode(IntEnum):
    """Exit codes of `cas-audit scan` (docs/contracts.md); other commands use OK, USAGE and INTERNAL."""

    OK = 0
    FINDINGS = 1
    USAGE = 2
    UNSCANNED = 3
    INTERNAL = 4
    INTERRUPTED = 130  # SIGINT (128 + 2); the run is recorded aborted
    TERMINATED = 143  # SIGTERM (128 + 15); the run is recorded aborted


class CasAuditError(Exception):
    """Base error: a message for the user and an optional hint on what to do."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class ConfigError(CasAuditError):
    """Bad usage or configuration (inventory, policy, fleet file, arguments)."""

    exit_code = ExitCode.USAGE


class StoreError(CasAuditError):
    """The history database could not be opened, migrated, read or written."""

    exit_code = ExitCode.INTERNAL


class TamperedError(CasAuditError):
    """`verify` or `verify-report` found that what it checks changed (exit 1: broken)."""

    exit_code = ExitCode.FINDINGS


class OutputError(CasAuditError):
    """An output (file, stdout) could not be written: closed pipe, full disk, no permission."""

    exit_code = ExitCode.INTERNAL


class CollectionError(CasAuditError):
    """One server could not be scanned; `kind` names why in one word.

    Kinds: refused, timeout, reset, auth, tls, soap-fault, protocol, output, script-error,
    internal. As a command's error (e.g. `inventory discover`) it exits with 3, like a
    scan that could not reach a server.
    """

    exit_code = ExitCode.UNSCANNED

    def __init__(self, kind: ErrorKind, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind: ErrorKind = kind


class CollectorOutputError(CollectionError):
    """The collector's output could not be trusted (too large, truncated, not the schema)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__("output", message, hint=hint)

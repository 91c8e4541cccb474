"""Reading the TOML files users hand us (inventory, policy, fleet) with errors that name file and line."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scanner.errors import ConfigError

MAX_TOML_BYTES = 4 * 1024 * 1024


def read_text(path: Path, what: str, max_bytes: int = MAX_TOML_BYTES) -> str:
    """A user's UTF-8 file, size-capped before it is read (a device such as /dev/zero or
    an endless pipe stops at the cap); a leading byte order mark is dropped, as editors on
    Windows write one. Errors are ConfigError naming the file."""
    try:
        if path.is_dir():
            raise ConfigError(f"{what} file {path} is a folder")
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise ConfigError(f"{what} file {path} is larger than {max_bytes // 1024} KiB")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {path} is not UTF-8 (byte {exc.start})") from None


def load_toml(path: Path, what: str) -> tuple[dict[str, Any], str]:
    """Parse `path`; return the table and the source text. Errors are ConfigError naming the file."""
    text = read_text(path, what)
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} file {path}: {exc}") from None


class SourceLines:
    """The lines of a TOML text, searched to name the line of a problem in error messages.

    Line numbers are 1-based, as editors show them. Every TOML reader of cas-audit (inventory,
    policy, fleet, rule catalog) finds its lines here.
    """

    def __init__(self, text: str) -> None:
        self.lines: Sequence[str] = text.splitlines()

    def find(self, pattern: str, start: int = 1, stop: int | None = None) -> int | None:
        """The first line from `start` to `stop` (inclusive) that the regex `pattern` matches."""
        regex = re.compile(pattern)
        last = len(self.lines) if stop is None else min(stop, len(self.lines))
        for number in range(max(start, 1), last + 1):
            if regex.search(self.lines[number - 1]):
                return number
        return None

    def table(self, header: str, index: int | None) -> tuple[int, int] | None:
        """(first, last) lines of the index-th `[[header]]` table, or of `[header]` when index is None."""
        name = re.escape(header).replace(r"\.", r"\s*\.\s*")
        if index is None:
            pattern = r"^\s*\[\s*" + name + r"\s*\]\s*(#.*)?$"
        else:
            pattern = r"^\s*\[\[\s*" + name + r"\s*\]\]\s*(#.*)?$"
        first = 0
        for _ in range((index or 0) + 1):
            found = self.find(pattern, first + 1)
            if found is None:
                return None
            first = found
        following = self.find(r"^\s*\[", first + 1)
        return first, (following - 1 if following is not None else len(self.lines))

    def key(self, header: str, index: int | None, key: str | None = None) -> int | None:
        """The line of `key` in that table (the table's first line when the key is not written)."""
        span = self.table(header, index)
        if span is None:
            return None
        first, last = span
        if key is None:
            return first
        found = self.find(r"""^\s*(?:"|')?""" + re.escape(key) + r"""(?:"|')?\s*=""", first + 1, last)
        return found or first


def line_of(text: str, needle: str) -> int | None:
    """The first line containing `needle` literally, for error messages."""
    return SourceLines(text).find(re.escape(needle))


def server_location(path: Path, text: str, name: str | None, index: int) -> str:
    """Where a [[server]] entry is, for error messages: "<file>:<line>: server 'CAS01'"."""
    if name is None:
        return f"{path}: server #{index + 1}"
    line = line_of(text, f'"{name}"') or line_of(text, f"'{name}'")
    shown = repr(name) if len(name) <= 80 else f"{name[:40]!r}... ({len(name)} characters)"
    return f"{path}:{line}: server {shown}" if line else f"{path}: server {shown}"


def check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    """Refuse keys we do not know: a typo must not silently fall back to a default."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {', '.join(repr(k) for k in unknown)}",
            hint=f"allowed keys: {', '.join(sorted(allowed))}",
        )

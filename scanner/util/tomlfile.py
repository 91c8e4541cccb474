"""Reading the TOML files users hand us (inventory, policy, fleet) with errors that name file and line."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from scanner.errors import ConfigError

MAX_TOML_BYTES = 4 * 1024 * 1024


def read_text(path: Path, what: str, max_bytes: int = MAX_TOML_BYTES) -> str:
    """A user's UTF-8 file, size-capped; errors are ConfigError naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise ConfigError(f"{what} file {path} is larger than {max_bytes // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {path} is not UTF-8 (byte {exc.start})") from None


def load_toml(path: Path, what: str) -> tuple[dict[str, Any], str]:
    """Parse `path`; return the table and the source text. Errors are ConfigError naming the file."""
    text = read_text(path, what)
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} file {path}: {exc}") from None


def line_of(text: str, needle: str) -> int | None:
    """1-based line of the first line containing `needle`, for error messages."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return None


def check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    """Refuse keys we do not know: a typo must not silently fall back to a default."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {', '.join(repr(k) for k in unknown)}",
            hint=f"allowed keys: {', '.join(sorted(allowed))}",
        )

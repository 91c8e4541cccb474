"""Where cas-audit's files live on disk: the data folders shipped with it (migrations,
rules) and the per-user folders it writes to (history database), by each platform's
convention (platformdirs)."""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

from platformdirs.api import PlatformDirsABC

APP_NAME = "cas-audit"


def platform_dirs() -> PlatformDirsABC:
    """The platform's folders for cas-audit, chosen by `sys.platform` when called.

    Windows: %LOCALAPPDATA%\\cas-audit (not roaming: a history database does not belong in a
    roaming profile); macOS: ~/Library/Application Support/cas-audit; Linux and other Unix:
    $XDG_DATA_HOME/cas-audit, by default ~/.local/share/cas-audit.
    """
    dirs: type[PlatformDirsABC]
    if sys.platform == "win32":
        from platformdirs.windows import Windows as dirs
    elif sys.platform == "darwin":
        from platformdirs.macos import MacOS as dirs
    else:
        from platformdirs.unix import Unix as dirs
    # appauthor=False: %LOCALAPPDATA%\cas-audit rather than %LOCALAPPDATA%\cas-audit\cas-audit
    return dirs(APP_NAME, appauthor=False, roaming=False)


def user_data_folder() -> Path:
    """The folder of the default history database (`history.db`)."""
    return Path(platform_dirs().user_data_dir)


def log_folder() -> Path:
    """The folder of cas-audit's error logs (tracebacks of internal errors).

    Linux: $XDG_STATE_HOME/cas-audit/log, by default ~/.local/state/cas-audit/log;
    Windows: %LOCALAPPDATA%\\cas-audit\\Logs; macOS: ~/Library/Logs/cas-audit.
    """
    return Path(platform_dirs().user_log_dir)


def data_dir(name: str) -> Path:
    """The folder `name` (e.g. "migrations", "rules") as shipped with this installation.

    A wheel carries it as `scanner/_data/<name>`; a source checkout or editable install
    has it at the top of the repository, next to the `scanner` package.
    """
    packaged = importlib.resources.files("scanner") / "_data" / name
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    in_checkout = Path(__file__).resolve().parents[2] / name
    if in_checkout.is_dir():
        return in_checkout
    raise FileNotFoundError(
        f"the {name!r} data folder is missing from this installation "
        f"(looked for {packaged} and {in_checkout})"
    )

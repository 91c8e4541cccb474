"""The PowerShell collector sent to each CAS, and how it is started.

The script travels in a shell environment variable (CASAUDIT_PS, set with
`Protocol.open_shell(env_vars=...)`): a command line could carry at most about 3,000
characters through cmd.exe. The command itself is a short bootstrap that runs that
variable as a script block; it is sent with `skip_cmd_shell=True`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.resources
from datetime import UTC, datetime
from importlib.resources.abc import Traversable

SCRIPT_ENV_VAR = "CASAUDIT_PS"
SINCE_ENV_VAR = "CASAUDIT_SINCE"
MAX_EVENTS_ENV_VAR = "CASAUDIT_MAX_EVENTS"
END_MARKER = "##CASAUDIT-END##"
SHELL_CODEPAGE = 65001

#: Windows limit on one environment variable's value, in UTF-16 code units.
ENV_VALUE_LIMIT = 32_767
#: Largest count of events the collector may be asked to list.
MAX_EVENTS_LIMIT = 10_000

#: The command text behind -EncodedCommand: runs $env:CASAUDIT_PS on PowerShell 1.0
#: ([ScriptBlock]::Create is 2.0).
BOOTSTRAP = f"& $ExecutionContext.InvokeCommand.NewScriptBlock($env:{SCRIPT_ENV_VAR})"
_PROGRAM = "powershell.exe"
_FLAGS = ("-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand")


def _resource(name: str) -> Traversable:
    return importlib.resources.files(__name__).joinpath(name)


def strip_script(text: str) -> str:
    """The script without comment lines, blank lines and indentation (PowerShell 1.0
    has no block comments, so only whole `#` lines are comments)."""
    lines = []
    for raw in text.lstrip("\ufeff").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return "\n".join(lines) + "\n"


@functools.cache
def collector_script() -> str:
    """collect.ps1 as sent: comments and blank lines stripped."""
    return strip_script(_resource("collect.ps1").read_text(encoding="utf-8"))


@functools.cache
def discover_script() -> str:
    """discover.ps1 as sent: comments and blank lines stripped."""
    return strip_script(_resource("discover.ps1").read_text(encoding="utf-8"))


def _encode(text: str) -> str:
    return base64.b64encode(text.encode("utf-16-le")).decode("ascii")


def bootstrap_command() -> tuple[str, list[str]]:
    """Program and arguments that run the script in $env:CASAUDIT_PS (skip_cmd_shell=True)."""
    return _PROGRAM, [*_FLAGS, _encode(BOOTSTRAP)]


def format_utc(moment: datetime) -> str:
    """yyyy-MM-ddTHH:mm:ssZ in UTC; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shell_environment(script: str, since: datetime, max_events: int = 200) -> dict[str, str]:
    """Environment variables for open_shell: the script, the event cut-off and the event cap."""
    if len(script.encode("utf-16-le")) // 2 > ENV_VALUE_LIMIT:
        raise ValueError(f"the script is longer than the {ENV_VALUE_LIMIT}-character limit of an environment variable")
    if not 0 <= max_events <= MAX_EVENTS_LIMIT:
        raise ValueError(f"max_events must be between 0 and {MAX_EVENTS_LIMIT}, not {max_events}")
    return {
        SCRIPT_ENV_VAR: script,
        SINCE_ENV_VAR: format_utc(since),
        MAX_EVENTS_ENV_VAR: str(max_events),
    }


def decode_bootstrap(arguments: list[str]) -> str | None:
    """The bootstrap text if `arguments` are the ones bootstrap_command() sends, else None.

    Accepts the arguments as a list or as pywinrm sends them (one space-joined string).
    """
    words = [word for argument in arguments for word in str(argument).split()]
    if len(words) != len(_FLAGS) + 1:
        return None
    if [w.lower() for w in words[:-1]] != [f.lower() for f in _FLAGS]:
        return None
    try:
        text = base64.b64decode(words[-1], validate=True).decode("utf-16-le")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return text if text == BOOTSTRAP else None


def schema_path() -> Traversable:
    """schema.xsd: the collector's output contract."""
    return _resource("schema.xsd")


def discovery_schema_path() -> Traversable:
    """discover.xsd: the discovery script's output contract."""
    return _resource("discover.xsd")


__all__ = [
    "BOOTSTRAP",
    "END_MARKER",
    "MAX_EVENTS_ENV_VAR",
    "SCRIPT_ENV_VAR",
    "SHELL_CODEPAGE",
    "SINCE_ENV_VAR",
    "bootstrap_command",
    "collector_script",
    "decode_bootstrap",
    "discover_script",
    "discovery_schema_path",
    "format_utc",
    "schema_path",
    "shell_environment",
    "strip_script",
]

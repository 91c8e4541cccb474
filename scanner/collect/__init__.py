"""The PowerShell collector sent to each CAS, and how it is started (docs/launch.md).

Common path ("env"): the script travels in a shell environment variable (CASAUDIT_PS,
set by the Create request); the Command goes through cmd.exe (no WINRS_SKIP_CMD_SHELL:
without cmd.exe Windows does no PATH search and refuses a bare `powershell.exe` with fault
2147942402) and names PowerShell by its full path under %SystemRoot%, which cmd.exe
expands (the system root is not always C:\\Windows). `< NUL` closes PowerShell's stdin:
powershell.exe 2.0 started through WinRS waits for its stdin to close. The bootstrap
checks that the variable arrived; if the server ignored the shell's environment it prints
NOENV_MARKER and exits with NOENV_EXIT_CODE.

Fallback ("stdin"): the bootstrap sets the small inputs itself and reads the script from
its standard input, which the client sends with Send (the last part End="true").

No code page is requested beyond the default 437: the scripts write raw UTF-8 bytes to
their standard output, and code page 65001 breaks cmd.exe before Windows Server 2008 R2.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib.resources
import re
from datetime import datetime
from importlib.resources.abc import Traversable

from scanner.facts import LAUNCH_METHODS, LaunchMethod
from scanner.util.timefmt import iso_utc

SCRIPT_ENV_VAR = "CASAUDIT_PS"
SINCE_ENV_VAR = "CASAUDIT_SINCE"
MAX_EVENTS_ENV_VAR = "CASAUDIT_MAX_EVENTS"
#: The fix scripts' switches when the bootstrap starts them (it passes no arguments):
#: "1" for -Apply and -Restart, the ticket for -Ticket (scanner/collect/fixscript.py).
FIX_APPLY_ENV_VAR = "CASAUDIT_FIX_APPLY"
FIX_RESTART_ENV_VAR = "CASAUDIT_FIX_RESTART"
FIX_TICKET_ENV_VAR = "CASAUDIT_FIX_TICKET"
END_MARKER = "##CASAUDIT-END##"
#: Printed by the env bootstrap when $env:CASAUDIT_PS is empty (the server ignored the
#: shell's environment variables); the process then exits with NOENV_EXIT_CODE.
NOENV_MARKER = "##CASAUDIT-NOENV##"
NOENV_EXIT_CODE = 3
#: WINRS_CODEPAGE of the shell: 437 (OEM United States) exists on every Windows; the
#: output is raw UTF-8 bytes whatever the code page.
SHELL_CODEPAGE = 437
#: How the script reaches PowerShell: in a shell environment variable, or on stdin.

#: Windows limit on one environment variable's value, in UTF-16 code units.
ENV_VALUE_LIMIT = 32_767
#: Largest count of events the collector may be asked to list.
MAX_EVENTS_LIMIT = 10_000
#: cmd.exe refuses longer command lines ("The command line is too long.").
CMD_LINE_LIMIT = 8191

#: PowerShell 1.0 and 2.0 both live here (2.0 kept the v1.0 folder); cmd.exe expands
#: %SystemRoot% to the server's own system root.
POWERSHELL_PATH = "%SystemRoot%\\system32\\WindowsPowerShell\\v1.0\\powershell.exe"
_FLAGS = ("-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand")
#: Printed by a bootstrap whose script arrived changed (its length or SHA-1 differ from
#: what was sent: a value cut short on the way, or stdin not read); exit NOENV_EXIT_CODE.
BADSCRIPT_MARKER = "##CASAUDIT-BADSCRIPT##"
#: The bootstraps' variable for the script text (a name collect.ps1 does not use).
_VAR = "$casauditScript"
_RUN = f"& $ExecutionContext.InvokeCommand.NewScriptBlock({_VAR})"
#: The stdin bootstrap reads the script: PowerShell's pipeline input (the stdin lines).
STDIN_READ = f"{_VAR} = [string]::Join([string][char]10, [string[]]@($input))"
_ASSIGN = re.compile(r"\$env:(CASAUDIT_[A-Z_]+) = '((?:[^']|'')*)'; ")
_CHECK = re.compile(r"\$casauditScript\.Length -ne (\d{1,9}) -or .*? -ne '((?:[0-9A-F]{2}-){19}[0-9A-F]{2})'\)")
#: Values the stdin bootstrap may set itself (short, from this program, never the script).
_BOOTSTRAP_VARS = (SINCE_ENV_VAR, MAX_EVENTS_ENV_VAR, FIX_APPLY_ENV_VAR, FIX_RESTART_ENV_VAR, FIX_TICKET_ENV_VAR)


def script_length(text: str) -> int:
    """The script's length as PowerShell counts it ([string].Length: UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def script_digest(text: str) -> str:
    """SHA-1 of the script's UTF-8 bytes as [BitConverter]::ToString writes it ("AB-CD-...").
    SHA1CryptoServiceProvider is in .NET 2.0 and FIPS-validated (SHA256Managed throws where
    the FIPS policy is on, SHA256CryptoServiceProvider is .NET 3.5): a check against a value
    cut short or mangled on the way, not against an attacker (who would own the server)."""
    return "-".join(f"{b:02X}" for b in hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).digest())


def script_matches(text: str, length: int, digest: str) -> bool:
    """What a bootstrap's check decides: same length and same SHA-1 (-ne ignores case)."""
    return script_length(text) == length and script_digest(text).upper() == digest.upper()


def _check(length: int, digest: str) -> str:
    return (f"if ({_VAR}.Length -ne {length} -or [System.BitConverter]::ToString((New-Object "
            f"System.Security.Cryptography.SHA1CryptoServiceProvider).ComputeHash("
            f"[System.Text.Encoding]::UTF8.GetBytes({_VAR}))) -ne '{digest}') "
            f"{{ [Console]::Out.Write('{BADSCRIPT_MARKER}'); exit {NOENV_EXIT_CODE} }}")


def _env_bootstrap(length: int, digest: str) -> str:
    return "; ".join([
        f"{_VAR} = [string]$env:{SCRIPT_ENV_VAR}",
        f"if ({_VAR} -eq '') {{ [Console]::Out.Write('{NOENV_MARKER}'); exit {NOENV_EXIT_CODE} }}",
        _check(length, digest),
        _RUN,
    ])


def env_bootstrap(script: str) -> str:
    """The env bootstrap for `script` (PowerShell 1.0 syntax; [ScriptBlock]::Create is 2.0):
    NOENV_MARKER if $env:CASAUDIT_PS is empty, BADSCRIPT_MARKER if its length or SHA-1
    differ from `script`'s (never half a script), else it runs it."""
    return _env_bootstrap(script_length(script), script_digest(script))


def stdin_text(script: str) -> str:
    """What the stdin bootstrap reads of `script`: its lines joined with "\n" ($input
    splits stdin into lines; the last newline ends a line and adds none)."""
    text = script.replace("\r\n", "\n")
    return text[:-1] if text.endswith("\n") else text


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


@functools.cache
def version_script() -> str:
    """psversion.ps1 as sent (preflight: which PowerShell runs the launch)."""
    return strip_script(_resource("psversion.ps1").read_text(encoding="utf-8"))


def _encode(text: str) -> str:
    return base64.b64encode(text.encode("utf-16-le")).decode("ascii")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def stdin_bootstrap(env: dict[str, str], script: str | None = None) -> str:
    """The stdin bootstrap: sets the collector's small inputs, reads the script from stdin,
    checks its length and SHA-1 (BADSCRIPT_MARKER if they differ), then runs it."""
    text = stdin_text(collector_script() if script is None else script)
    parts = [f"$env:{name} = {_quote(env[name])}" for name in _BOOTSTRAP_VARS if name in env]
    return "; ".join([*parts, STDIN_READ, _check(script_length(text), script_digest(text)), _RUN])


def launch_command(method: LaunchMethod, env: dict[str, str] | None = None, script: str | None = None) -> str:
    """The command line (run through cmd.exe, not WINRS_SKIP_CMD_SHELL) for `method` and
    `script` (default: the collector): "env" reads the script from $env:CASAUDIT_PS with
    stdin closed; "stdin" reads it from stdin, which the caller sends and closes."""
    script = collector_script() if script is None else script
    if method == "env":
        return f'"{POWERSHELL_PATH}" {" ".join(_FLAGS)} {_encode(env_bootstrap(script))} < NUL'
    if method == "stdin":
        line = f'"{POWERSHELL_PATH}" {" ".join(_FLAGS)} {_encode(stdin_bootstrap(env or {}, script))}'
        if len(line) > CMD_LINE_LIMIT:
            raise ValueError("the stdin bootstrap is longer than cmd.exe's command line")
        return line
    raise ValueError(f"unknown launch method {method!r}")


def shell_environment(script: str, since: datetime, max_events: int = 200) -> dict[str, str]:
    """Environment variables for open_shell: the script, the event cut-off and the event cap."""
    if len(script.encode("utf-16-le")) // 2 > ENV_VALUE_LIMIT:
        raise ValueError(f"the script is longer than the {ENV_VALUE_LIMIT}-character limit of an environment variable")
    if not 0 <= max_events <= MAX_EVENTS_LIMIT:
        raise ValueError(f"max_events must be between 0 and {MAX_EVENTS_LIMIT}, not {max_events}")
    return {
        SCRIPT_ENV_VAR: script,
        SINCE_ENV_VAR: iso_utc(since),
        MAX_EVENTS_ENV_VAR: str(max_events),
    }


def decode_bootstrap(arguments: list[str]) -> str | None:
    """The text behind `-NoLogo -NoProfile -NonInteractive -EncodedCommand X` (the words
    after the program; as a list or as one space-joined string), else None."""
    words = [word for argument in arguments for word in str(argument).split()]
    if len(words) != len(_FLAGS) + 1:
        return None
    if [w.lower() for w in words[:-1]] != [f.lower() for f in _FLAGS]:
        return None
    try:
        return base64.b64decode(words[-1], validate=True).decode("utf-16-le")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _found_check(text: str) -> tuple[int, str] | None:
    m = _CHECK.search(text)
    return (int(m.group(1)), m.group(2)) if m is not None else None


def parse_env_bootstrap(text: str) -> tuple[int, str] | None:
    """The length and SHA-1 an env bootstrap checks $env:CASAUDIT_PS against, if `text`
    is one (else None)."""
    check = _found_check(text)
    if check is None or _env_bootstrap(*check) != text:
        return None
    return check


def parse_stdin_bootstrap(text: str) -> tuple[dict[str, str], int, str] | None:
    """The variables a stdin bootstrap sets, and the length and SHA-1 it checks the script
    read from stdin against, if `text` is one (else None)."""
    head, sep, rest = text.partition(STDIN_READ + "; ")
    if not sep or not rest.endswith("; " + _RUN):
        return None
    check = _found_check(rest)
    if check is None or rest != f"{_check(*check)}; {_RUN}":
        return None
    env: dict[str, str] = {}
    consumed = 0
    for m in _ASSIGN.finditer(head):
        if m.start() != consumed or m.group(1) not in _BOOTSTRAP_VARS:
            return None
        env[m.group(1)] = m.group(2).replace("''", "'")
        consumed = m.end()
    if consumed != len(head):
        return None
    return env, check[0], check[1]


def schema_path() -> Traversable:
    """schema.xsd: the collector's output contract."""
    return _resource("schema.xsd")


def discovery_schema_path() -> Traversable:
    """discover.xsd: the discovery script's output contract."""
    return _resource("discover.xsd")


__all__ = [
    "BADSCRIPT_MARKER",
    "END_MARKER",
    "LAUNCH_METHODS",
    "MAX_EVENTS_ENV_VAR",
    "NOENV_EXIT_CODE",
    "NOENV_MARKER",
    "POWERSHELL_PATH",
    "SCRIPT_ENV_VAR",
    "SHELL_CODEPAGE",
    "SINCE_ENV_VAR",
    "collector_script",
    "decode_bootstrap",
    "env_bootstrap",
    "parse_env_bootstrap",
    "script_digest",
    "script_length",
    "script_matches",
    "stdin_text",
    "launch_command",
    "parse_stdin_bootstrap",
    "stdin_bootstrap",
    "discover_script",
    "discovery_schema_path",
    "schema_path",
    "shell_environment",
    "strip_script",
    "version_script",
]

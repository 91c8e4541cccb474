"""What a command prints on one simulated Exchange 2007 CAS.

`SimulatedHost` answers the commands the WinRM transport hands it, as the real host
would: the collector (collect.ps1, started by the bootstrap with the script in
$env:CASAUDIT_PS) gets exactly the document collect.ps1 prints on such a server
(scanner/collect/schema.xsd), the discovery script gets Get-ExchangeServer's list for
the whole fleet (discover.xsd), and anything else gets what cmd.exe or PowerShell 1.0
would say. Application-level faults (garbage, truncate, huge, script-error, stuck) are
simulated here; transport faults belong to httpserver.py.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from scanner.collect import (
    BADSCRIPT_MARKER,
    END_MARKER,
    MAX_EVENTS_ENV_VAR,
    NOENV_EXIT_CODE,
    NOENV_MARKER,
    SCRIPT_ENV_VAR,
    SINCE_ENV_VAR,
    collector_script,
    discover_script,
    parse_env_bootstrap,
    parse_stdin_bootstrap,
    script_matches,
    strip_script,
    version_script,
)
from scanner.collect.collected import CONFIG_FILE_NAMES, SERVICE_NAMES
from scanner.facts import PROTOCOLS
from scanner.lab.domain import OPERATIONS_ERROR, site_stage
from scanner.lab.eventlog import WINDOW, event_message, events_element
from scanner.lab.fleet_model import Fleet, SimProtocol, SimServer, build_numbers
from scanner.lab.simfiles import configrefs_elements
from scanner.lab.simfix import FixRun, fix_script_data
from scanner.lab.wsman import CODEPAGES, CommandResult, ShellContext, command_line
from scanner.lab.wsman_faults import file_not_found_fault
from scanner.parse.builds import release_build
from scanner.util.timefmt import iso_utc, parse_iso_utc

Clock = Callable[[], datetime]

#: What $Host.Version prints under Windows PowerShell 1.0 (a four-part System.Version).
PS_VERSION = "1.0.0.0"
#: $Host.Version of each PowerShell (2.0's ConsoleHost reports a two-part version).
PS_VERSIONS = {"1.0": PS_VERSION, "2.0": "2.0"}
#: collect.ps1 reads at most this many bytes of a config file (larger: error="too-large").
COLLECTOR_FILE_CAP = 1_048_576
DEFAULT_MAX_EVENTS = 200
#: Size of the "huge" fault's output: far above any reader's cap, small enough to hold twice.
HUGE_BYTES = 20 * 1024 * 1024
PS_BANNER = "Windows PowerShell\r\nCopyright (C) 2006 Microsoft Corporation. All rights reserved.\r\n\r\n"

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_SINCE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


# -- the text collect.ps1 builds --------------------------------------------------------


def escape(value: object) -> str:
    """X in collect.ps1: control characters to '?', then SecurityElement.Escape."""
    text = _CONTROL.sub("?", str(value))
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


def _t(name: str, value: object) -> str:
    return f' {name}="{escape(value)}"'


def _u(moment: datetime | None) -> str:
    """U in collect.ps1: yyyy-MM-ddTHH:mm:ssZ in UTC, '' for none (sub-seconds dropped)."""
    return "" if moment is None else iso_utc(moment)


def path_combine(first: str, second: str) -> str:
    """[System.IO.Path]::Combine as .NET 2.0 does it on Windows."""
    if not first:
        return second
    if not second:
        return first
    if second.startswith(("\\", "/")) or (len(second) > 1 and second[1] == ":"):
        return second
    if first.endswith(("\\", "/", ":")):
        return first + second
    return first + "\\" + second


def setup_numbers(build: str) -> tuple[int, int, int, int]:
    """MsiProductMajor/Minor and MsiBuildMajor/Minor of a server running `build`: the
    service pack's release build, as Get-ExchangeServer's AdminDisplayVersion shows it too
    (rollups raise only ExSetup's file version; unconfirmed for MsiBuildMajor/MsiBuildMinor)."""
    major, minor, build_major, build_minor = build_numbers(build)
    release = release_build(minor) if major == 8 else None
    if release is not None and (build_major, build_minor) >= release.version[2:]:
        return major, minor, release.version[2], release.version[3]
    return major, minor, build_major, build_minor


def admin_display_version(build: str) -> str:
    """Get-ExchangeServer's AdminDisplayVersion: "Version 8.3 (Build 83.6)"."""
    major, minor, build_major, build_minor = setup_numbers(build)
    return f"Version {major}.{minor} (Build {build_major}.{build_minor})"


def process_id(server: str, protocol: str) -> int:
    """A stable, Windows-like (multiple of 4) process id for a running service."""
    return 1024 + 4 * (zlib.crc32(f"{server}/{protocol}".casefold().encode()) % 2000)


@dataclass(frozen=True)
class EventWindow:
    """The collector's event inputs as the script interprets them."""

    since: datetime | None
    max_events: int
    errors: tuple[str, ...]  # trap messages of the 'events' stage


def _ps_int(text: str) -> int:
    """[int]$text as PowerShell converts a string: trims, rounds decimals to even."""
    stripped = text.strip()
    try:
        value = int(stripped)
    except ValueError:
        try:
            number = float(stripped)
        except ValueError:
            raise ValueError("Input string was not in a correct format.") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("Value was either too large or too small for an Int32.") from None
        value = round(number)
    if not -2**31 <= value < 2**31:
        raise ValueError("Value was either too large or too small for an Int32.")
    return value


def event_window(env: dict[str, str]) -> EventWindow:
    """CASAUDIT_SINCE and CASAUDIT_MAX_EVENTS as collect.ps1 reads them (a bad value is
    trapped: the default stays and an error is recorded)."""
    errors: list[str] = []
    max_events = DEFAULT_MAX_EVENTS
    max_text = env.get(MAX_EVENTS_ENV_VAR, "")
    if max_text != "":
        try:
            max_events = _ps_int(max_text)
        except ValueError as exc:
            errors.append(f'Cannot convert value "{max_text}" to type "System.Int32". Error: "{exc}"')
    since: datetime | None = None
    since_text = env.get(SINCE_ENV_VAR, "")
    if since_text != "":
        try:
            if not _SINCE.match(since_text):
                raise ValueError
            since = parse_iso_utc(since_text)
        except ValueError:
            errors.append('Exception calling "ParseExact" with "4" argument(s): '
                          '"String was not recognized as a valid DateTime."')
    return EventWindow(since, max_events, tuple(errors))


def _events(server: SimServer, window: EventWindow) -> tuple[str, tuple[str, ...]]:
    """The <events> element and the trap messages of reading the log (eventlog.py)."""
    return events_element(server, window.since, window.max_events, _t, escape, _u)


def _config(protocol: str, proto: SimProtocol, install_path: str) -> str:
    path = length = modified = error = content = ""
    exists = "false"
    if install_path:
        path = path_combine(install_path, "ClientAccess\\PopImap\\" + CONFIG_FILE_NAMES[protocol])
    if path and proto.config_bytes is not None:
        exists = "true"
        length = str(len(proto.config_bytes))
        modified = _u(proto.modified)
        if len(proto.config_bytes) > COLLECTOR_FILE_CAP:
            error = "too-large"
        else:
            content = base64.b64encode(proto.config_bytes).decode("ascii")
    return ("<config" + _t("protocol", protocol) + _t("path", path) + _t("exists", exists) + _t("length", length)
            + _t("modified", modified) + _t("error", error) + ">" + content + "</config>")


#: What the collector's trap records when Get-WmiObject Win32_Service is refused (`wmi =
#: "denied"`): the COM access-denied text (UNCONFIRMED wording, docs/lab.md).
WMI_DENIED_MESSAGE = "Access is denied. (Exception from HRESULT: 0x80070005 (E_ACCESSDENIED))"


def _service(server: SimServer, protocol: str, proto: SimProtocol) -> str:
    exists, status, mode, pid, started = "false", "", "", "", ""
    if proto.service != "absent":
        exists, status, mode = "true", proto.service, proto.start_mode
        if server.wmi == "denied":
            mode = ""  # Get-Service still answers; the start mode and the process come from WMI
        elif proto.has_process:
            pid = str(process_id(server.name, protocol))
            started = _u(proto.started)
    return ("<service" + _t("protocol", protocol) + _t("name", SERVICE_NAMES[protocol]) + _t("exists", exists)
            + _t("status", status) + _t("startmode", mode) + _t("processid", pid) + _t("started", started) + "/>")


def host_element(server: SimServer, script: str, delegated: bool) -> tuple[str, list[str]]:
    """The <host> element `script` prints on `server` and its 'site' stage errors
    (scanner/lab/domain.py: Netlogon read locally, or a domain controller asked)."""
    site, source, errors = site_stage(server, script, delegated)
    attrs = _t("computer", server.computer or server.name) + _t("site", site)
    if source is not None:  # a collector that reads Netlogon says which value gave the site
        attrs += _t("sitesource", source)
    return "<host" + attrs + "/>", errors


def collector_document(server: SimServer, env: dict[str, str], now: datetime, *,
                       script: str | None = None, delegated: bool = False) -> str:
    """Everything collect.ps1 (or `script`, a version of it) prints on `server`: the
    document, then the end marker line. `delegated`: the session holds delegated
    credentials (only then does a domain-controller lookup succeed)."""
    install_path = server.install_path if server.registry_key else ""
    ps_version = PS_VERSIONS.get(server.powershell, PS_VERSION)
    parts = ["<casaudit", _t("version", "1"), _t("psversion", ps_version), _t("collected", _u(now)), ">"]
    host, site_errors = host_element(server, collector_script() if script is None else script, delegated)
    parts.append(host)
    if server.registry_key:
        numbers = [str(n) for n in setup_numbers(server.build)]
    else:
        numbers = ["", "", "", ""]
    parts.append("<setup" + _t("key", server.registry_key) + _t("installpath", install_path)
                 + "".join(_t(n, v) for n, v in zip(("productmajor", "productminor", "buildmajor", "buildminor"),
                                                    numbers, strict=True)) + "/>")
    exsetup = path_combine(install_path, "bin\\ExSetup.exe") if install_path else ""
    parts.append("<exsetup" + _t("path", exsetup) + _t("exists", "true" if exsetup else "false")
                 + _t("version", server.build if exsetup else "") + "/>")
    parts.extend("<rollup" + _t("name", r.name) + _t("installed", r.installed) + "/>" for r in server.rollups)
    parts.extend(_config(p, server.protocols[p], install_path) for p in PROTOCOLS)
    parts.append(configrefs_elements(server, install_path))
    parts.extend(_service(server, p, server.protocols[p]) for p in PROTOCOLS)
    window = event_window(env)
    events, log_errors = _events(server, window)
    parts.append(events)
    parts.extend("<error" + _t("stage", "site") + _t("message", m) + "/>" for m in site_errors)
    if server.wmi == "denied":  # one trapped error per protocol's Get-WmiObject
        parts.extend("<error" + _t("stage", "service") + _t("message", WMI_DENIED_MESSAGE) + "/>" for _ in PROTOCOLS)
    parts.extend("<error" + _t("stage", "events") + _t("message", m) + "/>" for m in window.errors + log_errors)
    parts.append("<end/></casaudit>\n" + END_MARKER + "\n")
    return "".join(parts)


def discovery_document(fleet: Fleet, *, delegated: bool) -> str:
    """Everything discover.ps1 prints: every CAS of the fleet, then the end marker line.
    Get-ExchangeServer reads Active Directory: in a session without delegated credentials
    it fails with the operations error, which the script's trap records for stage
    'servers', and lists nothing."""
    if not delegated:
        return ("<casdiscovery>" + "<error" + _t("stage", "servers") + _t("message", OPERATIONS_ERROR) + "/>"
                + "<end/></casdiscovery>\n" + END_MARKER + "\n")
    parts = ["<casdiscovery>"]
    for server in fleet.servers:
        parts.append("<server" + _t("name", server.name) + _t("fqdn", server.fqdn) + _t("site", server.site)
                     + _t("role", ", ".join(server.roles)) + _t("version", admin_display_version(server.build))
                     + "/>")
    parts.append("<end/></casdiscovery>\n" + END_MARKER + "\n")
    return "".join(parts)


# -- faults -------------------------------------------------------------------------------


def huge_document(server: SimServer, now: datetime, size: int = HUGE_BYTES) -> str:
    """A schema-valid collector document of about `size` bytes (a flood of events): only a
    size cap can refuse it."""
    head, tail = collector_document(server, {}, now).split("<events", 1)
    tail = tail.split("</events>", 1)[1]
    cas = server.computer or server.name
    user = "CONTOSO\\flood"
    one = ("<event" + _t("source", "MSExchangePOP3") + _t("id", "1008") + _t("at", _u(now)) + ">"
           + "".join(f"<insertion>{escape(s)}</insertion>" for s in (user, "Hamburg", cas))
           + "<message>" + escape(event_message(user, "Hamburg", cas, server.language)) + "</message></event>")
    count = max(1, size // len(one.encode("utf-8")))
    return (head + '<events since="" max="' + str(count) + '" truncated="false" window="' + str(WINDOW)
            + '" full="false" error="">' + one * count
            + "</events>" + tail)


def garbage_output(server: SimServer) -> str:
    """Text that is not the collector's document at all (exit code 0)."""
    return (PS_BANNER + f"PS C:\\Documents and Settings\\{server.name}> \r\n"
            "\x1b[0m\u00b7\u00b7\u00b7 \u2591\u2592\u2593 Ausgabe umgeleitet \u2593\u2592\u2591 \u00b7\u00b7\u00b7\r\n"
            "Der Befehl wurde erfolgreich ausgef\u00fchrt.\r\n" + "0xDEADBEEF " * 40 + "\r\n")


def script_error(line: str, text: str, column: int, before: str, after: str) -> str:
    """A PowerShell 1.0 error record as it appears on stderr."""
    return f"{text}\r\nAt line:{line} char:{column}\r\n+ {before} <<<< {after}\r\n"


COLLECTOR_SCRIPT_ERROR = script_error(
    "1",
    "Get-ItemProperty : Cannot find path 'HKLM:\\SOFTWARE\\Microsoft\\Exchange\\Setup' because it does not exist.",
    17, "Get-ItemProperty", " 'HKLM:\\SOFTWARE\\Microsoft\\Exchange\\Setup'",
)
DISCOVERY_SCRIPT_ERROR = script_error(
    "1",
    "Add-PSSnapin : No snap-ins have been registered for Windows PowerShell version 1.",
    13, "Add-PSSnapin", " Microsoft.Exchange.Management.PowerShell.Admin",
)


def _raw_utf8(text: str, codepage: int) -> str:
    """The scripts write raw UTF-8 bytes whatever the console code page: return the text
    that the transport's code-page encoding turns back into exactly those bytes. Code
    pages with undefined bytes (1250-1252) cannot carry every byte; there non-ASCII
    output is left as text."""
    if codepage == 65001 or text.isascii():
        return text
    try:
        return text.encode("utf-8").decode(CODEPAGES[codepage])
    except (KeyError, UnicodeDecodeError):
        return text


# -- the command dispatcher ------------------------------------------------------------

#: Programs the lab knows, as paths below %SystemRoot% (lower case) -> program name.
_SYSTEM_PROGRAMS = {
    "system32\\cmd.exe": "cmd",
    "system32\\hostname.exe": "hostname",
    "system32\\whoami.exe": "whoami",
    "system32\\windowspowershell\\v1.0\\powershell.exe": "powershell",
}
#: Folders of the default PATH (below %SystemRoot%) where cmd.exe finds a bare name.
_PATH_PROGRAMS = {"cmd", "hostname", "whoami", "powershell"}
_REDIRECT_NUL = re.compile(r"\s*<\s*nul\s*$", re.IGNORECASE)
_VARIABLE = re.compile(r"%([^%\s]+)%")
#: ver's text per platform ("Microsoft Windows [Version ...]").
_VER = {"2003r2": "5.2.3790", "2008": "6.0.6002", "2008r2": "6.1.7601"}
PS_BANNER_2 = "Windows PowerShell\r\nCopyright (C) 2009 Microsoft Corporation. All rights reserved.\r\n\r\n"


def split_program(line: str) -> tuple[str, str]:
    """The program (quotes removed) and the rest of a command line."""
    line = line.strip()
    if line.startswith('"'):
        program, _, rest = line[1:].partition('"')
    else:
        program, _, rest = line.partition(" ")
    return program, rest.strip()


def _program(command: str, arguments: list[str]) -> tuple[str, list[str]]:
    """The program's base name (lower case, no .exe) and its arguments."""
    program, rest = split_program(command)
    words = rest.split() + [w for a in arguments for w in str(a).split()]
    name = re.split(r"[\\/]", program)[-1].lower()
    return (name[:-4] if name.endswith(".exe") else name), words


def _not_recognized(term: str) -> CommandResult:
    return CommandResult("", script_error(
        "1", f"The term '{term}' is not recognized as a cmdlet, function, operable program, or script file. "
             "Verify the term and try again.", len(term) + 1, term, ""), 1)


def _not_a_command(shown: str) -> CommandResult:
    return CommandResult("", f"'{shown}' is not recognized as an internal or external command,\r\n"
                             "operable program or batch file.\r\n", 1)


def system_environment(server: SimServer) -> dict[str, str]:
    """The variables every process on `server` inherits (names as Windows spells them)."""
    root = server.sysroot
    return {
        "SystemRoot": root, "windir": root, "ComSpec": root + "\\system32\\cmd.exe",
        "PATH": f"{root}\\system32;{root};{root}\\System32\\Wbem;{root}\\system32\\WindowsPowerShell\\v1.0\\",
        "COMPUTERNAME": (server.computer or server.name).upper(),
    }


def expand_variables(text: str, env: dict[str, str]) -> str:
    """%NAME% as cmd.exe expands it: case-insensitive; an unknown name stays as written."""
    folded = {k.casefold(): v for k, v in env.items()}
    return _VARIABLE.sub(lambda m: folded.get(m.group(1).casefold(), m.group(0)), text)


class SimulatedHost:
    """The command runner of one simulated CAS (CommandRunner for scanner.lab.wsman).

    How a command line is started follows Windows (docs/lab.md, "Starting a program"):
    with WINRS_SKIP_CMD_SHELL the program must be a full path that exists (no PATH search,
    no %VARIABLE% expansion; otherwise WinRS answers fault 2147942402); without it the
    line goes through cmd.exe, which expands %VARIABLES%, applies `< NUL`, and searches
    PATH for a bare name; under code page 65001 cmd.exe before 2008 R2 prints nothing and
    exits 0. PowerShell 2.0 waits for its stdin to close unless `< NUL` or
    `-InputFormat None` closes it.
    """

    def __init__(self, server: SimServer, fleet: Fleet, *, clock: Clock | None = None) -> None:
        self._lock = threading.Lock()
        self._server, self._fleet = server, fleet
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def server(self) -> SimServer:
        with self._lock:
            return self._server

    def replace(self, server: SimServer, fleet: Fleet) -> None:
        """Answer from now on as `server` of `fleet` (e.g. after a service pack upgrade)."""
        with self._lock:
            self._server, self._fleet = server, fleet

    def _resolve(self, server: SimServer, path: str) -> str | None:
        """The program a full path names on this host, or None if no such file exists."""
        root = server.sysroot.casefold().rstrip("\\") + "\\"
        folded = path.replace("/", "\\").casefold()
        if not folded.startswith(root):
            return None
        return _SYSTEM_PROGRAMS.get(folded[len(root):])

    def run(self, shell: ShellContext, command: str, arguments: list[str], skip_cmd_shell: bool) -> CommandResult:
        """What `command arguments` prints in `shell` on this host."""
        with self._lock:
            server, fleet = self._server, self._fleet
        if server.env_value_limit:  # UNCONFIRMED switch (docs/lab.md): values arrive cut short
            limit = server.env_value_limit
            shell = dataclasses.replace(shell, env={name: value[:limit] for name, value in shell.env.items()})
        line = command_line(command, arguments)
        if skip_cmd_shell:
            # CreateProcess with the program as written: no PATH search, no expansion.
            path, rest = split_program(line)
            program = self._resolve(server, path)
            if program is None:
                raise file_not_found_fault()
            return self._start(server, fleet, shell, program, rest.split(), stdin_closed=False)
        return self._cmd(server, fleet, shell, line)

    def _cmd(self, server: SimServer, fleet: Fleet, shell: ShellContext, line: str) -> CommandResult:
        """`cmd.exe /c line` in the shell."""
        if shell.codepage == 65001 and server.windows.cmd_breaks_on_utf8:
            return CommandResult("", "", 0)  # docs/lab.md, [CP65001]
        env = {**system_environment(server), **shell.env}
        line = expand_variables(line, env)
        stdin_closed = bool(_REDIRECT_NUL.search(line))
        line = _REDIRECT_NUL.sub("", line)
        path, rest = split_program(line)
        if not path:
            return CommandResult("", "", 0)
        name = path.lower()
        if name == "echo":
            return CommandResult(rest + "\r\n" if rest else "ECHO is on.\r\n", "", 0)
        if name == "ver":
            return CommandResult(f"\r\nMicrosoft Windows [Version {_VER[server.platform]}]\r\n", "", 0)
        if "\\" in path or "/" in path or ":" in path:
            program = self._resolve(server, path)
            if program is None:
                return CommandResult("", "The system cannot find the path specified.\r\n", 1)
        else:
            base = name[:-4] if name.endswith(".exe") else name
            if base not in _PATH_PROGRAMS:
                return _not_a_command(path)
            program = base
        return self._start(server, fleet, shell, program, rest.split(), stdin_closed=stdin_closed)

    def _start(self, server: SimServer, fleet: Fleet, shell: ShellContext, program: str, words: list[str], *,
               stdin_closed: bool) -> CommandResult:
        if program == "powershell":
            return self._powershell(server, fleet, shell, words, stdin_closed)
        if program == "hostname":
            return CommandResult((server.computer or server.name) + "\r\n", "", 0)
        if program == "whoami":
            lab = fleet.lab
            return CommandResult(f"{(lab.domain or server.computer or server.name).lower()}\\{lab.username.lower()}\r\n",
                                 "", 0)
        # cmd
        if words and words[0].lower() in ("/c", "/k"):
            return self._cmd(server, fleet, shell, " ".join(words[1:]))
        return CommandResult("", "", 0)

    def _powershell(self, server: SimServer, fleet: Fleet, shell: ShellContext, words: list[str],
                    stdin_closed: bool) -> CommandResult:
        flags = [w.lower() for w in words]
        if "-inputformat" in flags:
            index = flags.index("-inputformat")
            if index + 1 < len(words) and flags[index + 1] == "none":
                # 2.0 then leaves stdin alone; whether 1.0 accepts it is unconfirmed (docs/lab.md).
                stdin_closed = True
                del words[index:index + 2]
        result = self._powershell_result(server, fleet, shell, words, stdin_closed)
        if result.stdin is None and not stdin_closed and server.powershell == "2.0":
            # powershell.exe 2.0 through WinRS waits for its stdin to close (docs/lab.md, [PS2-STDIN]).
            done = result
            return CommandResult("", "", 0, stdin=lambda _data: done)
        return result

    def _powershell_result(self, server: SimServer, fleet: Fleet, shell: ShellContext, words: list[str],
                           stdin_closed: bool) -> CommandResult:
        flags = [w.lower() for w in words]
        text: str | None = None
        for flag in ("-encodedcommand", "-enc", "-e", "-ec"):
            if flag in flags:
                index = flags.index(flag)
                value = words[index + 1] if index + 1 < len(words) else ""
                try:
                    text = base64.b64decode(value, validate=True).decode("utf-16-le")
                except ValueError:
                    return CommandResult("", "Cannot process the command because the value specified with "
                                             "-EncodedCommand is not properly encoded. The value must be Base64 "
                                             "encoded.\r\n", 1)
                break
        env_check = parse_env_bootstrap(text) if text is not None else None
        if env_check is not None:
            script = shell.env.get(SCRIPT_ENV_VAR, "")
            if script == "":
                return CommandResult(NOENV_MARKER, "", NOENV_EXIT_CODE)
            if not script_matches(script, *env_check):  # the bootstrap's length and SHA-1 check
                return CommandResult(BADSCRIPT_MARKER, "", NOENV_EXIT_CODE)
            return self._run_script(server, fleet, shell, script, shell.env)
        stdin_bootstrap = parse_stdin_bootstrap(text) if text is not None else None
        if stdin_bootstrap is not None:
            inputs, length, digest = stdin_bootstrap
            env = {**shell.env, **inputs}

            def on_stdin(data: bytes) -> CommandResult:
                # $input: stdin lines in the console code page, joined with "\n".
                lines = data.decode("cp437").replace("\r\n", "\n").split("\n")
                if lines and lines[-1] == "":
                    lines.pop()
                if server.stdin_ignored:  # UNCONFIRMED switch (docs/lab.md)
                    lines = []
                script = "\n".join(lines)
                if not script_matches(script, length, digest):
                    return CommandResult(BADSCRIPT_MARKER, "", NOENV_EXIT_CODE)
                return self._run_script(server, fleet, shell, script, env)
            if stdin_closed:
                return on_stdin(b"")
            return CommandResult("", "", 0, stdin=on_stdin)
        if text is not None:
            return _not_recognized((text.split() or [""])[0])
        if not words:
            banner = PS_BANNER_2 if server.powershell == "2.0" else PS_BANNER
            return CommandResult(banner + "PS C:\\Documents and Settings> ", "", 0)
        plain = " ".join(w for w in words if not w.startswith("-")) or words[-1]
        return _not_recognized(plain.split()[0])

    def _run_script(self, server: SimServer, fleet: Fleet, shell: ShellContext, script: str,
                    env: dict[str, str]) -> CommandResult:
        """What a script run by a bootstrap prints: the lab runs only the shipped scripts
        (as PowerShell runs them: comment lines, blank lines and indentation change nothing)."""
        script = strip_script(script)
        if script.rstrip("\n") == collector_script().rstrip("\n"):
            return self._script(server, shell, "collector", lambda: collector_document(
                server, env, self._clock(), script=script, delegated=shell.delegated))
        if script.rstrip("\n") == discover_script().rstrip("\n"):
            return self._script(server, shell, "discovery", lambda: discovery_document(fleet, delegated=shell.delegated))
        if script.rstrip("\n") == version_script().rstrip("\n"):  # preflight: $Host.Version, the end marker
            return CommandResult(f"{PS_VERSIONS.get(server.powershell, server.powershell)}\r\n{END_MARKER}\r\n", "", 0)
        fix = fix_script_data(script)
        if fix is not None:  # a fix script of `fix plan` (scanner/lab/simfix.py)
            with self._lock:
                paths: dict[str, str] = {p: path_combine(self._server.install_path, "ClientAccess\\PopImap\\" + CONFIG_FILE_NAMES[p])
                         for p in PROTOCOLS}
                run = FixRun(self._server, fix, env, admin=shell.admin, now=self._clock, config_paths=paths)
                text, code = run.result()
                self._server = run.server
            return CommandResult(_raw_utf8(text, shell.codepage), "", code)
        if not script.strip():
            return CommandResult("", "", 0)
        return _not_recognized((script.split() or [""])[0])

    def _script(self, server: SimServer, shell: ShellContext, kind: str, document: Callable[[], str]) -> CommandResult:
        fault = server.fault
        if fault == "script-error":
            return CommandResult("", COLLECTOR_SCRIPT_ERROR if kind == "collector" else DISCOVERY_SCRIPT_ERROR, 1)
        if fault == "garbage":
            return CommandResult(garbage_output(server), "", 0)
        if fault == "stuck":  # a collector that never finishes (e.g. a hung event log query)
            return CommandResult("", "", 0, delay_s=float("inf"))
        if fault == "huge":
            return CommandResult(_raw_utf8(huge_document(server, self._clock()), shell.codepage), "", 0)
        text = document()
        if fault == "truncate":
            text = text[: len(text) // 2]
        return CommandResult(_raw_utf8(text, shell.codepage), "", 0)

"""The lab's WS-Management shell service: SOAP in, SOAP out, as WinRM 1.1 or 2.0
answers it (the platform's stack, scanner/lab/platforms.py).

Transport-free: `WSManService.handle()` takes a decrypted SOAP request body and returns
the SOAP response body and HTTP status. `scanner.lab.httpserver` carries it over HTTP.
References: [MS-WSMV] (WS-Management Protocol Extensions for Windows Vista) and
DSP0226 (WS-Management 1.0); per-platform behaviour and its sources: docs/lab.md.
Modelled: CreateResponse framing per stack; a request larger than MaxEnvelopeSizekb gets
HTTP 413; MaxShellsPerUser (QuotaLimit fault) counting shells not deleted until their
idle timeout; Send to a command's stdin (a command that reads stdin runs only once stdin
is closed with End="true"); the shell's environment dropped when the server ignores it
(an unconfirmed switch).
Split by job: faults in wsman_faults.py, SOAP parsing in wsman_soap.py, envelopes in
wsman_envelope.py, Identify in wsman_identify.py; this module is the shell state machine.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from lxml import etree

from scanner.lab.platforms import DEFAULT_PLATFORM, Platform, platform
from scanner.lab.wsman_envelope import RESPONSE_ACTIONS, envelope, fault_body
from scanner.lab.wsman_faults import (
    ERROR_ACCESS_DENIED,
    ERROR_BAD_ARGUMENTS,
    ERROR_FILENAME_EXCED_RANGE,
    ERROR_INTERNAL_ERROR,
    ERROR_INVALID_PARAMETER,
    ERROR_WSMAN_OPERATION_TIMEDOUT,
    ERROR_WSMAN_OPTIONS_INVALID_VALUE,
    MSG_TIMEOUT,
    WSManFault,
    plugin_invalid_parameter,
    quota_fault,
    schema_fault,
    shell_not_found,
    unknown_command,
)
from scanner.lab.wsman_soap import (
    ACTIONS,
    ANONYMOUS,
    MAX_SOAP_BYTES,
    NS,
    SHELL_NS,
    SHELL_RESOURCE_URI,
    Request,
    el_text,
    nested,
    option_values,
    parse_request,
    q,
)

log = logging.getLogger(__name__)

STATE_DONE = SHELL_NS + "CommandState/Done"
STATE_RUNNING = SHELL_NS + "CommandState/Running"
SIGNAL_TERMINATE = SHELL_NS + "signal/terminate"
SIGNAL_CTRL_C = SHELL_NS + "signal/ctrl_c"

STREAM_CHUNK_BYTES = 4096             # stream bytes per rsp:Stream element (one pipe read)
CMD_EXE_LIMIT = 8191                  # cmd.exe: "The command line is too long."
CREATE_PROCESS_LIMIT = 32767          # CreateProcess lpCommandLine, in characters
_STREAM_ELEMENT_OVERHEAD = 128        # <rsp:Stream Name=".." CommandId=".." End="true"></rsp:Stream>

# Code pages a WinRS shell accepts here (WINRS_CODEPAGE) and their Python codecs.
CODEPAGES: dict[int, str] = {
    437: "cp437", 850: "cp850", 852: "cp852", 858: "cp858",
    1250: "cp1250", 1251: "cp1251", 1252: "cp1252", 65001: "utf-8",
}
ENV_VARIABLE_LIMIT = 32_767  # characters of one environment variable, name=value


@dataclass(frozen=True)
class ShellContext:
    """What a command sees of the shell it runs in."""

    server: str                 # lab server name, e.g. "CAS01"
    env: dict[str, str]         # rsp:Environment variables from Create
    codepage: int               # WINRS_CODEPAGE option from Create (default 437)
    working_directory: str | None
    #: The shell's logon carried delegated credentials (Kerberos with a forwarded ticket):
    #: only then may its commands reach a domain controller (scanner/lab/domain.py).
    delegated: bool = False
    #: The shell's logon is the lab's admin account ([lab] admin_username): the only one
    #: allowed to write (scanner/lab/simfix.py).
    admin: bool = False


@dataclass(frozen=True)
class CommandResult:
    """What a simulated command prints and returns."""

    stdout: str                 # text; the server encodes it in the shell's code page
    stderr: str
    exit_code: int
    delay_s: float = 0.0        # simulated run time before the command is Done
    #: A command that reads its stdin: it runs only once stdin is closed (Send End="true"),
    #: and this gives its result from everything sent. None: it does not wait for stdin.
    stdin: Callable[[bytes], CommandResult] | None = None


class CommandRunner(typing.Protocol):
    """Runs one command of a simulated host (the simulated hosts implement this)."""

    def run(self, shell: ShellContext, command: str, arguments: list[str],
            skip_cmd_shell: bool) -> CommandResult: ...


@dataclass(frozen=True)
class Reply:
    """A SOAP response: HTTP status, body, the request's action short name, success."""

    status: int
    body: bytes
    action: str                 # Create | Command | Receive | Signal | Delete | unknown
    ok: bool


@dataclass
class _Command:
    stdout: bytes
    stderr: bytes
    exit_code: int
    ready_at: float
    out_pos: int = 0
    err_pos: int = 0
    waiting: Callable[[bytes], CommandResult] | None = None  # runs when stdin closes
    stdin: bytearray = field(default_factory=bytearray)


@dataclass
class _Shell:
    context: ShellContext
    touched: float              # last request on the shell (monotonic): its idle timeout counts from here
    commands: dict[str, _Command] = field(default_factory=dict)


def encode_output(text: str, codepage: int) -> bytes:
    """Text as the shell's code page encodes it; unencodable characters become '?'."""
    return text.encode(CODEPAGES[codepage], errors="replace")


def command_line(command: str, arguments: list[str]) -> str:
    """The full command line a shell builds from rsp:Command and rsp:Arguments."""
    return " ".join([command, *arguments]) if arguments else command


class WSManService:
    """The WinRS shell endpoint of one simulated host: shells, commands, their output."""

    def __init__(self, server: str, runner: CommandRunner, endpoint: str, *,
                 stopping: threading.Event | None = None, deny_create: bool = False,
                 windows: Platform | None = None, env_ignored: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.runner = runner
        self.endpoint = endpoint
        self.deny_create = deny_create      # lab fault "soap-fault": Create -> access denied
        self.platform = windows or platform(DEFAULT_PLATFORM)
        self.env_ignored = env_ignored      # UNCONFIRMED switch (docs/lab.md)
        self._clock = clock                 # idle timeouts (tests may move it)
        self._stopping = stopping or threading.Event()
        self._lock = threading.Lock()
        self._shells: dict[str, _Shell] = {}

    @property
    def max_envelope(self) -> int:
        """MaxEnvelopeSizekb * 1024 of this platform: the largest request and response."""
        return min(self.platform.max_envelope_kb * 1024, MAX_SOAP_BYTES)

    @property
    def open_shells(self) -> int:
        """Number of shells created and neither deleted nor expired by their idle timeout."""
        with self._lock:
            self._expire()
            return len(self._shells)

    def _expire(self) -> None:
        """Drop shells idle longer than the platform's IdleTimeout (call with the lock)."""
        cutoff = self._clock() - self.platform.idle_timeout_s
        for shell_id in [k for k, v in self._shells.items() if v.touched < cutoff]:
            del self._shells[shell_id]

    # -- entry point -------------------------------------------------------------------

    def handle(self, body: bytes, *, delegated: bool = False, admin: bool = False) -> Reply:
        """Answer one SOAP request (already decrypted); never raises for bad input.
        `delegated`: the transport's logon carried delegated credentials."""
        action_name, relates_to = "unknown", None
        if len(body) > self.max_envelope:
            # MaxEnvelopeSizekb also limits the request ([MS-WSMV] 2.2.4.10); the service
            # answers HTTP 413, which Windows' own client reports as "the request size
            # exceeded the configured MaxEnvelopeSize quota" (docs/lab.md, [ENVELOPE-413]).
            return Reply(413, b"", action_name, False)
        try:
            req = replace(parse_request(body, self.max_envelope), delegated=delegated, admin=admin)
            relates_to = req.message_id
            action_name = ACTIONS[req.action]
            handler = getattr(self, f"_op_{action_name.lower()}")
            payload: list[etree._Element] = handler(req)
            return Reply(200, self._envelope(RESPONSE_ACTIONS[action_name], relates_to, payload),
                         action_name, True)
        except WSManFault as fault:
            return Reply(fault.http_status, self.fault_body(fault, relates_to), action_name, False)
        except Exception:  # a runner bug or ours: a fault, never a dead server
            log.exception("lab %s: internal error while answering a WS-Man request", self.server)
            internal = WSManFault("s:Receiver", "w:InternalError", "An internal error occurred. ",
                                  ERROR_INTERNAL_ERROR)
            return Reply(500, self.fault_body(internal, relates_to), action_name, False)

    def _shell_of(self, req: Request) -> tuple[str, _Shell]:
        shell_id = ""
        selector_set = req.header.find("w:SelectorSet", NS)
        if selector_set is not None:
            for selector in selector_set.findall("w:Selector", NS):
                if selector.get("Name") == "ShellId":
                    shell_id = el_text(selector)
        with self._lock:
            self._expire()
            shell = self._shells.get(shell_id.upper())
            if shell is not None:
                shell.touched = self._clock()
        if shell is None:
            raise shell_not_found(shell_id)
        return shell_id.upper(), shell

    # -- operations ([MS-WSMV] 3.1.4.x) --------------------------------------------------

    def _op_create(self, req: Request) -> list[etree._Element]:
        if self.deny_create:
            raise WSManFault("s:Sender", "w:AccessDenied", "Access is denied. ", ERROR_ACCESS_DENIED)
        options = option_values(req.header)
        codepage_text = options.get("WINRS_CODEPAGE", "437").strip()
        if not codepage_text.isdigit() or int(codepage_text) not in CODEPAGES:
            raise WSManFault("s:Sender", "w:InvalidOptions",
                             "The WS-Management service cannot process the request because the "
                             f"value of option WINRS_CODEPAGE is not valid: {codepage_text[:20]}. ",
                             ERROR_WSMAN_OPTIONS_INVALID_VALUE)
        noprofile = options.get("WINRS_NOPROFILE", "FALSE").strip().upper()
        if noprofile not in ("TRUE", "FALSE"):
            raise schema_fault("WINRS_NOPROFILE must be TRUE or FALSE.")
        shell_el = req.body.find("rsp:Shell", NS)
        if shell_el is None:
            raise schema_fault("The Create request has no rsp:Shell element.")
        env: dict[str, str] = {}
        environment = shell_el.find("rsp:Environment", NS)
        if environment is not None:
            for variable in environment.findall("rsp:Variable", NS):
                name = variable.get("Name")
                if not name:
                    raise schema_fault("An rsp:Variable has no Name.")
                env[name] = el_text(variable, strip=False)
                if "%" in env[name]:
                    # WinRM refuses a Create whose environment value holds a %: fault 87,
                    # s:Sender / w:InvalidParameter, "The parameter is incorrect." (docs/lab.md, [ENV-PERCENT])
                    raise WSManFault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ",
                                     ERROR_INVALID_PARAMETER)
                if len(name) + 1 + len(env[name]) > ENV_VARIABLE_LIMIT:
                    # Windows caps one environment variable (name=value) at 32,767 characters;
                    # the shell cannot be created with it (exact WinRM fault unconfirmed).
                    raise WSManFault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ",
                                     ERROR_INVALID_PARAMETER)
        if self.env_ignored:
            env = {}
        workdir_el = shell_el.find("rsp:WorkingDirectory", NS)
        workdir = el_text(workdir_el) if workdir_el is not None else None
        in_streams = el_text(shell_el.find("rsp:InputStreams", NS)) or "stdin"
        out_streams = el_text(shell_el.find("rsp:OutputStreams", NS)) or "stdout stderr"
        context = ShellContext(server=self.server, env=env, codepage=int(codepage_text),
                               working_directory=workdir or None, delegated=req.delegated, admin=req.admin)
        del in_streams, out_streams  # WinRM 1.1 and 2.0 do not echo the shell back
        windows = self.platform
        shell_id = windows.shell_id_prefix + str(uuid.uuid4()).upper()
        with self._lock:
            self._expire()
            if len(self._shells) >= windows.max_shells_per_user:
                raise quota_fault(windows.max_shells_per_user)
            self._shells[shell_id.upper()] = _Shell(context, touched=self._clock())

        # WinRM 1.1 and 2.0 answer with x:ResourceCreated only (no rsp:Shell, which is
        # newer); 1.1 gives the anonymous address and a `uuid:` ShellId (docs/lab.md,
        # [WINRB-STUBS]).
        created = etree.Element(q("x", "ResourceCreated"), nsmap=NS)
        etree.SubElement(created, q("a", "Address")).text = ANONYMOUS if windows.anonymous_address else self.endpoint
        ref = etree.SubElement(created, q("a", "ReferenceParameters"))
        etree.SubElement(ref, q("w", "ResourceURI")).text = SHELL_RESOURCE_URI
        selectors = etree.SubElement(ref, q("w", "SelectorSet"))
        selector = etree.SubElement(selectors, q("w", "Selector"), Name="ShellId")
        selector.text = shell_id
        return [created]

    def _op_command(self, req: Request) -> list[etree._Element]:
        _, shell = self._shell_of(req)
        options = option_values(req.header)
        skip = options.get("WINRS_SKIP_CMD_SHELL", "FALSE").strip().upper() == "TRUE"
        cmd_line_el = req.body.find("rsp:CommandLine", NS)
        if cmd_line_el is None:
            raise schema_fault("The Command request has no rsp:CommandLine element.")
        command = el_text(cmd_line_el.find("rsp:Command", NS), strip=False).strip()
        if not command:
            raise schema_fault("The Command request has an empty rsp:Command.")
        arguments = [el_text(a, strip=False) for a in cmd_line_el.findall("rsp:Arguments", NS)]
        full = command_line(command, arguments)
        codepage = shell.context.codepage
        if skip and len(full) > CREATE_PROCESS_LIMIT:
            # CreateProcess fails before any process exists: WinRS reports it as a fault.
            raise WSManFault("s:Receiver", "w:InternalError",
                             "The filename or extension is too long. ", ERROR_FILENAME_EXCED_RANGE)
        if not skip and len(full) > CMD_EXE_LIMIT:
            result = CommandResult("", "The command line is too long.\r\n", 1)
        else:
            result = self.runner.run(shell.context, command, arguments, skip)
            if not isinstance(result, CommandResult):
                raise TypeError(f"runner returned {type(result).__name__}, not CommandResult")
        command_id = str(uuid.uuid4()).upper()
        cmd = _Command(encode_output(result.stdout, codepage), encode_output(result.stderr, codepage),
                       int(result.exit_code), time.monotonic() + max(0.0, float(result.delay_s)))
        if result.stdin is not None:  # runs when its stdin is closed; until then it is Running
            cmd.waiting, cmd.ready_at = result.stdin, float("inf")
        with self._lock:
            shell.commands[command_id] = cmd
        response = etree.Element(q("rsp", "CommandResponse"), nsmap=NS)
        etree.SubElement(response, q("rsp", "CommandId")).text = command_id
        return [response]

    def _op_receive(self, req: Request) -> list[etree._Element]:
        _, shell = self._shell_of(req)
        desired = nested(req.body, "Receive", "DesiredStream")
        if not desired.get("CommandId"):
            raise plugin_invalid_parameter()
        command_id = (desired.get("CommandId") or "").upper()
        wanted = set(el_text(desired).split()) or {"stdout", "stderr"}
        with self._lock:
            cmd = shell.commands.get(command_id)
        if cmd is None:
            raise unknown_command(command_id)
        remaining = cmd.ready_at - time.monotonic()
        if remaining > 0:
            self._stopping.wait(min(remaining, req.operation_timeout_s))
            if time.monotonic() < cmd.ready_at:
                raise WSManFault("s:Receiver", "w:TimedOut", MSG_TIMEOUT,
                                 ERROR_WSMAN_OPERATION_TIMEDOUT)
        return [self._receive_response(command_id, cmd, wanted, req.max_envelope, req.message_id)]

    def _receive_response(self, command_id: str, cmd: _Command, wanted: set[str],
                          max_envelope: int, message_id: str) -> etree._Element:
        # Budget: the client's MaxEnvelopeSize minus the envelope without any stream data
        # (measured with the longest CommandState) and room for two empty End elements.
        skeleton = etree.Element(q("rsp", "ReceiveResponse"), nsmap=NS)
        state = etree.SubElement(skeleton, q("rsp", "CommandState"), CommandId=command_id,
                                 State=STATE_DONE)
        etree.SubElement(state, q("rsp", "ExitCode")).text = "-2147483648"
        budget = (max_envelope - len(self._envelope(RESPONSE_ACTIONS["Receive"], message_id, [skeleton]))
                  - 2 * _STREAM_ELEMENT_OVERHEAD)
        chunks: list[tuple[str, bytes]] = []
        with self._lock:
            for name in ("stdout", "stderr"):
                data = cmd.stdout if name == "stdout" else cmd.stderr
                pos = cmd.out_pos if name == "stdout" else cmd.err_pos
                if name not in wanted:
                    pos = len(data)
                while pos < len(data):
                    piece = data[pos:pos + STREAM_CHUNK_BYTES]
                    cost = _STREAM_ELEMENT_OVERHEAD + 4 * ((len(piece) + 2) // 3)
                    if cost > budget:
                        fit = (budget - _STREAM_ELEMENT_OVERHEAD) // 4 * 3
                        if fit <= 0:
                            break
                        piece = piece[:fit]
                        cost = _STREAM_ELEMENT_OVERHEAD + 4 * ((len(piece) + 2) // 3)
                    chunks.append((name, piece))
                    budget -= cost
                    pos += len(piece)
                if name == "stdout":
                    cmd.out_pos = pos
                else:
                    cmd.err_pos = pos
            done = cmd.out_pos >= len(cmd.stdout) and cmd.err_pos >= len(cmd.stderr)

        response = etree.Element(q("rsp", "ReceiveResponse"), nsmap=NS)
        for name, piece in chunks:
            el = etree.SubElement(response, q("rsp", "Stream"), Name=name, CommandId=command_id)
            el.text = base64.b64encode(piece).decode("ascii")
        if done:
            # Windows ends each stream with an empty element of its own after the data
            # (every Receive recorded in tests/replay/winrs_*.toml).
            for name in ("stdout", "stderr"):
                etree.SubElement(response, q("rsp", "Stream"), Name=name, CommandId=command_id,
                                 End="true")
            state = etree.SubElement(response, q("rsp", "CommandState"), CommandId=command_id,
                                     State=STATE_DONE)
            etree.SubElement(state, q("rsp", "ExitCode")).text = str(cmd.exit_code)
        else:
            etree.SubElement(response, q("rsp", "CommandState"), CommandId=command_id,
                             State=STATE_RUNNING)
        return response

    def _op_send(self, req: Request) -> list[etree._Element]:
        _, shell = self._shell_of(req)
        stream = nested(req.body, "Send", "Stream")
        command_id = (stream.get("CommandId") or "").upper()
        try:
            data = base64.b64decode(el_text(stream), validate=True)
        except ValueError:
            raise schema_fault("The rsp:Stream of a Send request is not base64.") from None
        end = (stream.get("End") or "").lower() == "true"
        with self._lock:
            cmd = shell.commands.get(command_id)
            if cmd is None:
                raise unknown_command(command_id)
            waiting = cmd.waiting
            if waiting is not None:
                cmd.stdin.extend(data)
                if end:
                    cmd.waiting = None
            received = bytes(cmd.stdin)
        if waiting is not None and end:
            result = waiting(received)
            codepage = shell.context.codepage
            with self._lock:
                cmd.stdout = encode_output(result.stdout, codepage)
                cmd.stderr = encode_output(result.stderr, codepage)
                cmd.exit_code = int(result.exit_code)
                cmd.ready_at = time.monotonic() + max(0.0, float(result.delay_s))
        return [etree.Element(q("rsp", "SendResponse"), nsmap=NS)]

    def _op_signal(self, req: Request) -> list[etree._Element]:
        _, shell = self._shell_of(req)
        signal = req.body.find("rsp:Signal", NS)
        if signal is None:
            raise schema_fault("The Signal request has no rsp:Signal element.")
        command_id = (signal.get("CommandId") or "").upper()
        code = el_text(signal.find("rsp:Code", NS))
        if code not in (SIGNAL_TERMINATE, SIGNAL_CTRL_C):
            raise WSManFault("s:Sender", "w:InvalidParameter",
                             "The WS-Management service cannot process the request because the "
                             "signal code is not valid. ", ERROR_BAD_ARGUMENTS)
        with self._lock:
            if command_id not in shell.commands:
                raise unknown_command(command_id)
            if code == SIGNAL_TERMINATE:
                del shell.commands[command_id]
            else:  # ctrl_c: the command ends now, what it printed so far stays readable
                shell.commands[command_id].ready_at = 0.0
        return [etree.Element(q("rsp", "SignalResponse"), nsmap=NS)]

    def _op_delete(self, req: Request) -> list[etree._Element]:
        shell_id, _ = self._shell_of(req)
        with self._lock:
            if self._shells.pop(shell_id, None) is None:  # deleted meanwhile by another request
                raise shell_not_found(shell_id)
        return []

    # -- serialisation (scanner/lab/wsman_envelope.py) ------------------------------------

    def _envelope(self, action: str, relates_to: str | None, payload: list[etree._Element]) -> bytes:
        return envelope(self.platform, action, relates_to, payload)

    def fault_body(self, fault: WSManFault, relates_to: str | None = None) -> bytes:
        """The SOAP envelope of a fault, as WinRM writes it."""
        # Machine: the host name the client addressed (the recordings show the address used).
        machine = urlsplit(self.endpoint).hostname or self.server
        return fault_body(self.platform, machine, fault, relates_to)

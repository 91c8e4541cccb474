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
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lxml import etree

from scanner.lab.platforms import DEFAULT_PLATFORM, Platform, platform
from scanner.util.xmlsafe import hardened_parser

log = logging.getLogger(__name__)

# Namespaces exactly as Windows writes them (prefixes included).
NS: dict[str, str] = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
}
NS_FAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_EVENTING = "http://schemas.xmlsoap.org/ws/2004/08/eventing"
NS_ENUMERATION = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
_ALL_NS: dict[str, str] = {**NS, "e": NS_EVENTING, "n": NS_ENUMERATION}
# Envelope namespace declarations per answer, in Windows' order (tests/replay/winrs_*.toml).
_DECLARED: dict[str, tuple[str, ...]] = {
    "Create": ("s", "a", "x", "w", "rsp", "p"),
    "Command": ("s", "a", "x", "w", "rsp", "p"),
    "Send": ("s", "a", "x", "w", "rsp", "p"),
    "Signal": ("s", "a", "x", "w", "rsp", "p"),
    "Receive": ("s", "a", "w", "rsp", "p"),
    "Delete": ("s", "a", "w", "p"),
    "fault": ("s", "a", "x", "e", "n", "w", "p"),
}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

SHELL_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTIONS: dict[str, str] = {
    _TRANSFER + "Create": "Create",
    _SHELL + "Command": "Command",
    _SHELL + "Receive": "Receive",
    _SHELL + "Send": "Send",
    _SHELL + "Signal": "Signal",
    _TRANSFER + "Delete": "Delete",
}
_RESPONSE_ACTIONS: dict[str, str] = {
    "Create": _TRANSFER + "CreateResponse",
    "Command": _SHELL + "CommandResponse",
    "Receive": _SHELL + "ReceiveResponse",
    "Send": _SHELL + "SendResponse",
    "Signal": _SHELL + "SignalResponse",
    "Delete": _TRANSFER + "DeleteResponse",
}
WSMAN_FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
_FAULT_DETAIL = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/"
ADDRESSING_FAULT_ACTION = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"
STATE_DONE = _SHELL + "CommandState/Done"
STATE_RUNNING = _SHELL + "CommandState/Running"
SIGNAL_TERMINATE = _SHELL + "signal/terminate"
SIGNAL_CTRL_C = _SHELL + "signal/ctrl_c"

MAX_SOAP_BYTES = 512 * 1024           # decrypted request body cap
DEFAULT_MAX_ENVELOPE = 153600         # WinRM 2.0 MaxEnvelopeSizekb = 150
MIN_MAX_ENVELOPE = 8192
DEFAULT_OPERATION_TIMEOUT_S = 60.0    # WinRM's default when the header is absent
MAX_OPERATION_TIMEOUT_S = 600.0
STREAM_CHUNK_BYTES = 4096             # stream bytes per rsp:Stream element (one pipe read)
CMD_EXE_LIMIT = 8191                  # cmd.exe: "The command line is too long."
CREATE_PROCESS_LIMIT = 32767          # CreateProcess lpCommandLine, in characters
_STREAM_ELEMENT_OVERHEAD = 128        # <rsp:Stream Name=".." CommandId=".." End="true"></rsp:Stream>

# Code pages a WinRS shell accepts here (WINRS_CODEPAGE) and their Python codecs.
CODEPAGES: dict[int, str] = {
    437: "cp437", 850: "cp850", 852: "cp852", 858: "cp858",
    1250: "cp1250", 1251: "cp1251", 1252: "cp1252", 65001: "utf-8",
}

# Windows error codes used in f:WSManFault/@Code.
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
ENV_VARIABLE_LIMIT = 32_767  # characters of one environment variable, name=value
ERROR_BAD_ARGUMENTS = 160
ERROR_FILENAME_EXCED_RANGE = 206
ERROR_INTERNAL_ERROR = 1359
ERROR_WSMAN_DESTINATION_UNREACHABLE = 2150858770
ERROR_WSMAN_ACTION_NOT_SUPPORTED = 2150858771
ERROR_WSMAN_MESSAGE_INFORMATION_HEADER_REQUIRED = 2150858769
ERROR_WSMAN_OPERATION_TIMEDOUT = 2150858793
ERROR_WSMAN_OPTIONS_INVALID_VALUE = 2150858835
ERROR_WSMAN_SCHEMA_VALIDATION_ERROR = 2150858817
ERROR_WSMAN_INVALID_XML = 2150858819
ERROR_WSMAN_SERVER_ENVELOPE_LIMIT = 2150858825
ERROR_WSMAN_SHELL_NOT_FOUND = 2150858843   # reported with subcode w:InvalidSelectors
ERROR_WSMAN_QUOTA_MAX_SHELLS = 2150859173  # w:QuotaLimit on Create (docs/lab.md, [QUOTA-FAULT])
ERROR_FILE_NOT_FOUND_HRESULT = 2147942402  # 0x80070002 from the "Shell cmd plugin"
#: The provider a WinRS command fault names (pypsrp tests/responses/test_winrs_no_cmd_shell.yml).
SHELL_CMD_PLUGIN = ("Shell cmd plugin", "%systemroot%\\system32\\winrscmd.dll")

_MSG_TIMEOUT = ("The WS-Management service cannot complete the operation within the time "
                "specified in OperationTimeout.  ")
_MSG_INVALID_SELECTORS = ("The WS-Management service cannot process the request because the "
                          "request contained invalid selectors for the resource. ")


@dataclass(frozen=True)
class ShellContext:
    """What a command sees of the shell it runs in."""

    server: str                 # lab server name, e.g. "CAS01"
    env: dict[str, str]         # rsp:Environment variables from Create
    codepage: int               # WINRS_CODEPAGE option from Create (default 437)
    working_directory: str | None


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


class WSManFault(Exception):
    """A SOAP fault as WinRM sends it: s:Code/s:Subcode, s:Reason, f:WSManFault Code/Message."""

    def __init__(self, code: str, subcode: str, reason: str, wsman_code: int,
                 message: str | None = None, *, action: str = WSMAN_FAULT_ACTION,
                 http_status: int = 500, provider: tuple[str, str] | None = None,
                 detail: str | None = None) -> None:
        super().__init__(reason)
        self.code = code                # "s:Sender" | "s:Receiver"
        self.subcode = subcode          # e.g. "w:InvalidSelectors"
        self.reason = reason
        self.wsman_code = wsman_code
        self.message = reason if message is None else message
        self.action = action
        self.http_status = http_status
        self.provider = provider        # (provider, path): the message is an f:ProviderFault
        self.detail = detail            # w:FaultDetail URI (before f:WSManFault), if Windows sends one


def file_not_found_fault() -> WSManFault:
    """What WinRS answers a Command whose program CreateProcess cannot find (no PATH search
    under WINRS_SKIP_CMD_SHELL): recorded in pypsrp tests/responses/test_winrs_no_cmd_shell.yml."""
    text = "The system cannot find the file specified. "
    return WSManFault("s:Receiver", "w:InternalError", text, ERROR_FILE_NOT_FOUND_HRESULT,
                      provider=SHELL_CMD_PLUGIN)


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


@dataclass(frozen=True)
class _Request:
    action: str
    message_id: str
    header: etree._Element
    body: etree._Element
    max_envelope: int
    operation_timeout_s: float


def _q(prefix: str, local: str) -> str:
    return f"{{{NS[prefix]}}}{local}"


_DURATION = re.compile(r"^P(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?)?$")


def parse_duration(text: str) -> float | None:
    """Seconds of an xs:duration like PT20.000S (days and larger units not accepted)."""
    m = _DURATION.match(text.strip())
    if m is None or text.strip() in ("P", "PT"):
        return None
    hours, minutes, seconds = m.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


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

    def handle(self, body: bytes) -> Reply:
        """Answer one SOAP request (already decrypted); never raises for bad input."""
        action_name, relates_to = "unknown", None
        if len(body) > self.max_envelope:
            # MaxEnvelopeSizekb also limits the request ([MS-WSMV] 2.2.4.10); the service
            # answers HTTP 413, which Windows' own client reports as "the request size
            # exceeded the configured MaxEnvelopeSize quota" (docs/lab.md, [ENVELOPE-413]).
            return Reply(413, b"", action_name, False)
        try:
            req = self._parse(body)
            relates_to = req.message_id
            action_name = ACTIONS[req.action]
            handler = getattr(self, f"_op_{action_name.lower()}")
            payload: list[etree._Element] = handler(req)
            return Reply(200, self._envelope(_RESPONSE_ACTIONS[action_name], relates_to, payload),
                         action_name, True)
        except WSManFault as fault:
            return Reply(fault.http_status, self.fault_body(fault, relates_to), action_name, False)
        except Exception:  # a runner bug or ours: a fault, never a dead server
            log.exception("lab %s: internal error while answering a WS-Man request", self.server)
            internal = WSManFault("s:Receiver", "w:InternalError", "An internal error occurred. ",
                                  ERROR_INTERNAL_ERROR)
            return Reply(500, self.fault_body(internal, relates_to), action_name, False)

    # -- parsing -----------------------------------------------------------------------

    def _parse(self, body: bytes) -> _Request:
        try:
            root = etree.fromstring(body, hardened_parser())
        except etree.XMLSyntaxError:
            raise WSManFault("s:Sender", "w:SchemaValidationError",
                             "The WS-Management service cannot process the request because the "
                             "XML is invalid. ", ERROR_WSMAN_INVALID_XML) from None
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None:
            # SOAP 1.2 part 1, 5: a SOAP message MUST NOT contain a document type declaration.
            raise WSManFault("s:Sender", "w:SchemaValidationError",
                             "The WS-Management service cannot process the request because the "
                             "XML contains a document type declaration. ", ERROR_WSMAN_INVALID_XML)
        if root.tag != _q("s", "Envelope"):
            raise _schema_fault("The SOAP envelope is missing or has the wrong namespace.")
        header = root.find("s:Header", NS)
        soap_body = root.find("s:Body", NS)
        if header is None or soap_body is None:
            raise _schema_fault("The SOAP envelope has no Header or no Body.")
        message_id = _text(header.find("a:MessageID", NS))
        if not message_id:
            raise WSManFault("s:Sender", "a:MessageInformationHeaderRequired",
                             "A required header representing a Message Addressing Property is "
                             "not present ", ERROR_WSMAN_MESSAGE_INFORMATION_HEADER_REQUIRED,
                             action=ADDRESSING_FAULT_ACTION)
        action = _text(header.find("a:Action", NS))
        if action not in ACTIONS:
            raise WSManFault("s:Sender", "a:ActionNotSupported",
                             "The action is not supported by the service. ",
                             ERROR_WSMAN_ACTION_NOT_SUPPORTED, action=ADDRESSING_FAULT_ACTION)
        resource_uri = _text(header.find("w:ResourceURI", NS))
        if resource_uri.lower() != SHELL_RESOURCE_URI:
            raise WSManFault("s:Sender", "a:DestinationUnreachable",
                             "The WS-Management service cannot process the request because the "
                             "resource URI is not valid. ", ERROR_WSMAN_DESTINATION_UNREACHABLE,
                             action=ADDRESSING_FAULT_ACTION)
        max_env = self.max_envelope
        max_env_text = _text(header.find("w:MaxEnvelopeSize", NS))
        if max_env_text:
            if not max_env_text.isdigit() or len(max_env_text) > 9:
                raise _schema_fault("MaxEnvelopeSize is not a number.")
            # The server caps the client's value at its own MaxEnvelopeSizekb ([MS-WSMV] 3.1.4.1.7).
            max_env = min(max(int(max_env_text), MIN_MAX_ENVELOPE), self.max_envelope)
        timeout = DEFAULT_OPERATION_TIMEOUT_S
        timeout_text = _text(header.find("w:OperationTimeout", NS))
        if timeout_text:
            parsed = parse_duration(timeout_text)
            if parsed is None:
                raise WSManFault("s:Sender", "w:InvalidHeader",
                                 "The WS-Management service cannot process the request because the "
                                 "OperationTimeout header is not valid. ",
                                 ERROR_WSMAN_SCHEMA_VALIDATION_ERROR)
            timeout = min(parsed, MAX_OPERATION_TIMEOUT_S)
        return _Request(action, message_id, header, soap_body, max_env, timeout)

    def _shell_of(self, req: _Request) -> tuple[str, _Shell]:
        shell_id = ""
        selector_set = req.header.find("w:SelectorSet", NS)
        if selector_set is not None:
            for selector in selector_set.findall("w:Selector", NS):
                if selector.get("Name") == "ShellId":
                    shell_id = _text(selector)
        with self._lock:
            self._expire()
            shell = self._shells.get(shell_id.upper())
            if shell is not None:
                shell.touched = self._clock()
        if shell is None:
            raise _shell_not_found(shell_id)
        return shell_id.upper(), shell

    # -- operations ([MS-WSMV] 3.1.4.x) --------------------------------------------------

    def _op_create(self, req: _Request) -> list[etree._Element]:
        if self.deny_create:
            raise WSManFault("s:Sender", "w:AccessDenied", "Access is denied. ", ERROR_ACCESS_DENIED)
        options = _options(req.header)
        codepage_text = options.get("WINRS_CODEPAGE", "437").strip()
        if not codepage_text.isdigit() or int(codepage_text) not in CODEPAGES:
            raise WSManFault("s:Sender", "w:InvalidOptions",
                             "The WS-Management service cannot process the request because the "
                             f"value of option WINRS_CODEPAGE is not valid: {codepage_text[:20]}. ",
                             ERROR_WSMAN_OPTIONS_INVALID_VALUE)
        noprofile = options.get("WINRS_NOPROFILE", "FALSE").strip().upper()
        if noprofile not in ("TRUE", "FALSE"):
            raise _schema_fault("WINRS_NOPROFILE must be TRUE or FALSE.")
        shell_el = req.body.find("rsp:Shell", NS)
        if shell_el is None:
            raise _schema_fault("The Create request has no rsp:Shell element.")
        env: dict[str, str] = {}
        environment = shell_el.find("rsp:Environment", NS)
        if environment is not None:
            for variable in environment.findall("rsp:Variable", NS):
                name = variable.get("Name")
                if not name:
                    raise _schema_fault("An rsp:Variable has no Name.")
                env[name] = _text(variable, strip=False)
                if len(name) + 1 + len(env[name]) > ENV_VARIABLE_LIMIT:
                    # Windows caps one environment variable (name=value) at 32,767 characters;
                    # the shell cannot be created with it (exact WinRM fault unconfirmed).
                    raise WSManFault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ",
                                     ERROR_INVALID_PARAMETER)
        if self.env_ignored:
            env = {}
        workdir_el = shell_el.find("rsp:WorkingDirectory", NS)
        workdir = _text(workdir_el) if workdir_el is not None else None
        in_streams = _text(shell_el.find("rsp:InputStreams", NS)) or "stdin"
        out_streams = _text(shell_el.find("rsp:OutputStreams", NS)) or "stdout stderr"
        context = ShellContext(server=self.server, env=env, codepage=int(codepage_text),
                               working_directory=workdir or None)
        del in_streams, out_streams  # WinRM 1.1 and 2.0 do not echo the shell back
        windows = self.platform
        shell_id = windows.shell_id_prefix + str(uuid.uuid4()).upper()
        with self._lock:
            self._expire()
            if len(self._shells) >= windows.max_shells_per_user:
                raise _quota_fault(windows.max_shells_per_user)
            self._shells[shell_id.upper()] = _Shell(context, touched=self._clock())

        # WinRM 1.1 and 2.0 answer with x:ResourceCreated only (no rsp:Shell, which is
        # newer); 1.1 gives the anonymous address and a `uuid:` ShellId (docs/lab.md,
        # [WINRB-STUBS]).
        created = etree.Element(_q("x", "ResourceCreated"), nsmap=NS)
        etree.SubElement(created, _q("a", "Address")).text = ANONYMOUS if windows.anonymous_address else self.endpoint
        ref = etree.SubElement(created, _q("a", "ReferenceParameters"))
        etree.SubElement(ref, _q("w", "ResourceURI")).text = SHELL_RESOURCE_URI
        selectors = etree.SubElement(ref, _q("w", "SelectorSet"))
        selector = etree.SubElement(selectors, _q("w", "Selector"), Name="ShellId")
        selector.text = shell_id
        return [created]

    def _op_command(self, req: _Request) -> list[etree._Element]:
        _, shell = self._shell_of(req)
        options = _options(req.header)
        skip = options.get("WINRS_SKIP_CMD_SHELL", "FALSE").strip().upper() == "TRUE"
        cmd_line_el = req.body.find("rsp:CommandLine", NS)
        if cmd_line_el is None:
            raise _schema_fault("The Command request has no rsp:CommandLine element.")
        command = _text(cmd_line_el.find("rsp:Command", NS), strip=False).strip()
        if not command:
            raise _schema_fault("The Command request has an empty rsp:Command.")
        arguments = [_text(a, strip=False) for a in cmd_line_el.findall("rsp:Arguments", NS)]
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
        response = etree.Element(_q("rsp", "CommandResponse"), nsmap=NS)
        etree.SubElement(response, _q("rsp", "CommandId")).text = command_id
        return [response]

    def _op_receive(self, req: _Request) -> list[etree._Element]:
        _, shell = self._shell_of(req)
        desired = _nested(req.body, "Receive", "DesiredStream")
        if not desired.get("CommandId"):
            raise _plugin_invalid_parameter()
        command_id = (desired.get("CommandId") or "").upper()
        wanted = set(_text(desired).split()) or {"stdout", "stderr"}
        with self._lock:
            cmd = shell.commands.get(command_id)
        if cmd is None:
            raise _unknown_command(command_id)
        remaining = cmd.ready_at - time.monotonic()
        if remaining > 0:
            self._stopping.wait(min(remaining, req.operation_timeout_s))
            if time.monotonic() < cmd.ready_at:
                raise WSManFault("s:Receiver", "w:TimedOut", _MSG_TIMEOUT,
                                 ERROR_WSMAN_OPERATION_TIMEDOUT)
        return [self._receive_response(command_id, cmd, wanted, req.max_envelope, req.message_id)]

    def _receive_response(self, command_id: str, cmd: _Command, wanted: set[str],
                          max_envelope: int, message_id: str) -> etree._Element:
        # Budget: the client's MaxEnvelopeSize minus the envelope without any stream data
        # (measured with the longest CommandState) and room for two empty End elements.
        skeleton = etree.Element(_q("rsp", "ReceiveResponse"), nsmap=NS)
        state = etree.SubElement(skeleton, _q("rsp", "CommandState"), CommandId=command_id,
                                 State=STATE_DONE)
        etree.SubElement(state, _q("rsp", "ExitCode")).text = "-2147483648"
        budget = (max_envelope - len(self._envelope(_RESPONSE_ACTIONS["Receive"], message_id, [skeleton]))
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

        response = etree.Element(_q("rsp", "ReceiveResponse"), nsmap=NS)
        for name, piece in chunks:
            el = etree.SubElement(response, _q("rsp", "Stream"), Name=name, CommandId=command_id)
            el.text = base64.b64encode(piece).decode("ascii")
        if done:
            # Windows ends each stream with an empty element of its own after the data
            # (every Receive recorded in tests/replay/winrs_*.toml).
            for name in ("stdout", "stderr"):
                etree.SubElement(response, _q("rsp", "Stream"), Name=name, CommandId=command_id,
                                 End="true")
            state = etree.SubElement(response, _q("rsp", "CommandState"), CommandId=command_id,
                                     State=STATE_DONE)
            etree.SubElement(state, _q("rsp", "ExitCode")).text = str(cmd.exit_code)
        else:
            etree.SubElement(response, _q("rsp", "CommandState"), CommandId=command_id,
                             State=STATE_RUNNING)
        return response

    def _op_send(self, req: _Request) -> list[etree._Element]:
        _, shell = self._shell_of(req)
        stream = _nested(req.body, "Send", "Stream")
        command_id = (stream.get("CommandId") or "").upper()
        try:
            data = base64.b64decode(_text(stream), validate=True)
        except ValueError:
            raise _schema_fault("The rsp:Stream of a Send request is not base64.") from None
        end = (stream.get("End") or "").lower() == "true"
        with self._lock:
            cmd = shell.commands.get(command_id)
            if cmd is None:
                raise _unknown_command(command_id)
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
        return [etree.Element(_q("rsp", "SendResponse"), nsmap=NS)]

    def _op_signal(self, req: _Request) -> list[etree._Element]:
        _, shell = self._shell_of(req)
        signal = req.body.find("rsp:Signal", NS)
        if signal is None:
            raise _schema_fault("The Signal request has no rsp:Signal element.")
        command_id = (signal.get("CommandId") or "").upper()
        code = _text(signal.find("rsp:Code", NS))
        if code not in (SIGNAL_TERMINATE, SIGNAL_CTRL_C):
            raise WSManFault("s:Sender", "w:InvalidParameter",
                             "The WS-Management service cannot process the request because the "
                             "signal code is not valid. ", ERROR_BAD_ARGUMENTS)
        with self._lock:
            if command_id not in shell.commands:
                raise _unknown_command(command_id)
            if code == SIGNAL_TERMINATE:
                del shell.commands[command_id]
            else:  # ctrl_c: the command ends now, what it printed so far stays readable
                shell.commands[command_id].ready_at = 0.0
        return [etree.Element(_q("rsp", "SignalResponse"), nsmap=NS)]

    def _op_delete(self, req: _Request) -> list[etree._Element]:
        shell_id, _ = self._shell_of(req)
        with self._lock:
            if self._shells.pop(shell_id, None) is None:  # deleted meanwhile by another request
                raise _shell_not_found(shell_id)
        return []

    # -- serialisation -----------------------------------------------------------------

    def _envelope(self, action: str, relates_to: str | None, payload: list[etree._Element],
                  kind: str = "") -> bytes:
        declared = self._declared(kind or action.rsplit("/", 1)[-1].removesuffix("Response"))
        envelope = etree.Element(_q("s", "Envelope"), nsmap=declared)
        envelope.set(XML_LANG, "en-US")
        header = etree.SubElement(envelope, _q("s", "Header"))
        etree.SubElement(header, _q("a", "Action")).text = action
        etree.SubElement(header, _q("a", "MessageID")).text = f"uuid:{str(uuid.uuid4()).upper()}"
        etree.SubElement(header, _q("a", "To")).text = ANONYMOUS
        if relates_to:
            etree.SubElement(header, _q("a", "RelatesTo")).text = relates_to
        body = etree.SubElement(envelope, _q("s", "Body"))
        body.extend(payload)
        etree.cleanup_namespaces(envelope, top_nsmap=declared, keep_ns_prefixes=list(declared))
        return typing.cast(bytes, etree.tostring(envelope, encoding="utf-8", xml_declaration=False))

    def _declared(self, kind: str) -> dict[str, str]:
        """The namespaces Windows declares on the Envelope of an answer of `kind`
        (an operation's short name, or "fault"), as recorded: tests/replay/ and
        docs/lab-differences.md. WinRM 1.1 declares no `p` (WinRb's v1 stubs) and its
        CreateResponse declares x and rsp on x:ResourceCreated instead."""
        prefixes = _DECLARED.get(kind, _DECLARED["Create"])
        if self.platform.winrm == "1.1":
            prefixes = tuple(p for p in prefixes if p != "p" and not (kind == "Create" and p in ("x", "rsp")))
        return {p: _ALL_NS[p] for p in prefixes}

    def fault_body(self, fault: WSManFault, relates_to: str | None = None) -> bytes:
        """The SOAP envelope of a fault, as WinRM writes it."""
        fault_el = etree.Element(_q("s", "Fault"), nsmap=NS)
        code = etree.SubElement(fault_el, _q("s", "Code"))
        etree.SubElement(code, _q("s", "Value")).text = fault.code
        sub = etree.SubElement(code, _q("s", "Subcode"))
        etree.SubElement(sub, _q("s", "Value")).text = fault.subcode
        reason = etree.SubElement(fault_el, _q("s", "Reason"))
        text = etree.SubElement(reason, _q("s", "Text"))
        text.set(XML_LANG, "en-US")
        text.text = fault.reason
        detail = etree.SubElement(fault_el, _q("s", "Detail"))
        if fault.detail:
            etree.SubElement(detail, _q("w", "FaultDetail")).text = fault.detail
        # Machine: the host name the client addressed (the recordings show the address used).
        machine = urlsplit(self.endpoint).hostname or self.server
        wsman_fault = etree.SubElement(detail, f"{{{NS_FAULT}}}WSManFault", nsmap={"f": NS_FAULT},
                                       Code=str(fault.wsman_code), Machine=machine)
        message = etree.SubElement(wsman_fault, f"{{{NS_FAULT}}}Message")
        if fault.provider is not None:
            name, path = fault.provider
            etree.SubElement(message, f"{{{NS_FAULT}}}ProviderFault", provider=name, path=path).text = fault.message
        else:
            message.text = fault.message
        return self._envelope(fault.action, relates_to, [fault_el], kind="fault")


def _text(el: etree._Element | None, *, strip: bool = True) -> str:
    if el is None or el.text is None:
        return ""
    text = str(el.text)
    return text.strip() if strip else text


def _nested(body: etree._Element, operation: str, child: str) -> etree._Element:
    """rsp:<operation>/rsp:<child> of a request body; a schema fault if it is missing."""
    outer = body.find(f"rsp:{operation}", NS)
    inner = outer.find(f"rsp:{child}", NS) if outer is not None else None
    if inner is None:
        raise _schema_fault(f"The {operation} request has no rsp:{child} element.")
    return inner


def _options(header: etree._Element) -> dict[str, str]:
    options: dict[str, str] = {}
    option_set = header.find("w:OptionSet", NS)
    if option_set is not None:
        for option in option_set.findall("w:Option", NS):
            name = option.get("Name")
            if name:
                options[name.upper()] = _text(option)
    return options


def _schema_fault(detail: str) -> WSManFault:
    return WSManFault("s:Sender", "w:SchemaValidationError",
                      "The SOAP XML in the message does not match the corresponding XML schema "
                      "definition. Change the XML and retry. ", ERROR_WSMAN_SCHEMA_VALIDATION_ERROR,
                      detail)


def _quota_fault(limit: int) -> WSManFault:
    """MaxShellsPerUser exceeded (docs/lab.md, [QUOTA-FAULT])."""
    return WSManFault(
        "s:Sender", "w:QuotaLimit",
        "The WS-Management service cannot process the request. The maximum number of concurrent "
        "shells for this user has been exceeded. Close existing shells or raise the quota for this user. ",
        ERROR_WSMAN_QUOTA_MAX_SHELLS,
        f"The WS-Management service cannot process the request. This user is allowed a maximum number "
        f"of {limit} concurrent shells, which has been exceeded. Close existing shells or raise the "
        "quota for this user. ")


def _shell_not_found(shell_id: str) -> WSManFault:
    return WSManFault(
        "s:Sender", "w:InvalidSelectors", _MSG_INVALID_SELECTORS, ERROR_WSMAN_SHELL_NOT_FOUND,
        f"The request for the Windows Remote Shell with ShellId {shell_id[:40]} failed because the "
        "shell was not found on the server. Possible causes are: the specified ShellId is "
        "incorrect or the shell no longer exists on the server. Provide the correct ShellId "
        "or create a new shell and retry the operation. ")


def _unknown_command(command_id: str) -> WSManFault:
    """A CommandId the shell does not have: tests/replay/winrs_bad_cmd_id.toml (the id
    is not in Windows' text)."""
    del command_id
    return WSManFault(
        "s:Sender", "w:InvalidSelectors", _MSG_INVALID_SELECTORS, ERROR_WSMAN_SHELL_NOT_FOUND,
        "The Windows Remote Shell received a request to perform an operation on a command "
        "identifier that does not exist. Either the command has completed execution or the "
        "client specified an invalid command identifier. ",
        detail=_FAULT_DETAIL + "UnexpectedSelectors")


def _plugin_invalid_parameter() -> WSManFault:
    """A Receive naming no CommandId, answered by the shell plugin:
    tests/replay/winrs_fail_poll_process.toml (recorded for a shell without commands)."""
    text = "The parameter is incorrect. "
    return WSManFault("s:Sender", "w:InvalidParameter", text, ERROR_INVALID_PARAMETER,
                      provider=SHELL_CMD_PLUGIN, detail=_FAULT_DETAIL + "InvalidValue")


# -- WS-Management Identify ([DMTF DSP0226] 11; docs/lab.md, "Identify") -------------------

NS_WSMID = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"
IDENTIFY_PROTOCOL_VERSION = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
IDENTIFY_VENDOR = "Microsoft Corporation"
#: The HTTP header that asks WinRM to answer Identify without authentication.
IDENTIFY_HEADER = "WSMANIDENTIFY"


def is_identify(body: bytes) -> bool:
    """Whether `body` is an Identify request: a SOAP 1.2 envelope whose Body holds exactly
    one wsmid:Identify element (it carries no WS-Addressing headers)."""
    try:
        root = etree.fromstring(body, hardened_parser())
    except etree.XMLSyntaxError:
        return False
    soap_body = root.find("s:Body", NS) if root.tag == _q("s", "Envelope") else None
    return soap_body is not None and len(soap_body) == 1 and soap_body[0].tag == f"{{{NS_WSMID}}}Identify"


def anonymous_product_version(stack: str) -> str:
    """ProductVersion of an unauthenticated Identify: the OS zeroed, the stack shown."""
    return f"OS: 0.0.0 SP: 0.0 Stack: {stack}"


def identify_response(product_version: str) -> bytes:
    """The IdentifyResponse envelope as WinRM writes it."""
    envelope = etree.Element(_q("s", "Envelope"), nsmap={"s": NS["s"]})
    envelope.set(XML_LANG, "en-US")
    etree.SubElement(envelope, _q("s", "Header"))
    body = etree.SubElement(envelope, _q("s", "Body"))
    response = etree.SubElement(body, f"{{{NS_WSMID}}}IdentifyResponse", nsmap={"wsmid": NS_WSMID})
    for name, value in (("ProtocolVersion", IDENTIFY_PROTOCOL_VERSION), ("ProductVendor", IDENTIFY_VENDOR),
                        ("ProductVersion", product_version)):
        etree.SubElement(response, f"{{{NS_WSMID}}}{name}").text = value
    return typing.cast(bytes, etree.tostring(envelope, encoding="utf-8", xml_declaration=False))

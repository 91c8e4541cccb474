"""pywinrm's WS-Management requests, written as strings: the same bytes, without xmltodict.

pywinrm 0.5 builds each request as a dict (its public `Protocol.build_wsman_header` plus
the body of the operation) and writes it with `xmltodict.unparse`, whose per-name checks
and SAX writer cost 0.15-0.2 ms a message, four or five messages per server (bench/README.md,
"CPU per server"). The writers here join each request from pieces fixed once (the envelope,
the header's constant elements, each element's tags) and the variable values, escaped with
xmltodict 1.0's rules (`&<>` in text; `&<>\\n\\r\\t` and a quote in attributes, quoted as
`xml.sax.saxutils.quoteattr` quotes them), with the order, the elements and the emptiness
rules (`<a></a>`, an element left out) of what pywinrm 0.5.0 makes for Create, Command,
Send, Receive and Delete. `envelope` writes the header of `build_wsman_header` (the same
fields, the message id from `uuid.uuid4()` when none is given, `int(operation_timeout_sec)`);
an environment variable's element is kept per name and value, as a scan sends the same
script to every server (bench/README.md, "WS-Management messages").
tests/test_wsman_messages.py compares every message byte for byte with what pywinrm itself
sends for the same arguments, hostile values in every variable place, and the header alone
with pywinrm's for hostile ids.

The readers take an answer apart exactly as pywinrm's methods do: ElementTree's parser
(expat, as pywinrm's `ET.fromstring`), then the same first match in document order over
every element below the root. Only winrm_client.py, through its Protocol subclass, uses
this module.
"""

from __future__ import annotations

import base64
import functools
import uuid
import xml.etree.ElementTree as ET
from typing import cast

SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
COMMAND = SHELL_NS + "/Command"
SEND = SHELL_NS + "/Send"
RECEIVE = SHELL_NS + "/Receive"


def _string(value: object) -> str:
    """xmltodict's `_convert_value_to_string`."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _text(data: str) -> str:
    """xml.sax.saxutils.escape: & < > in character data."""
    if "&" in data:
        data = data.replace("&", "&amp;")
    if ">" in data:
        data = data.replace(">", "&gt;")
    if "<" in data:
        data = data.replace("<", "&lt;")
    return data


def _attribute(data: str) -> str:
    """xml.sax.saxutils.quoteattr: the value escaped and quoted."""
    data = _text(data)
    if "\n" in data or "\r" in data or "\t" in data:
        data = data.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    if '"' in data:
        if "'" in data:
            return '"' + data.replace('"', "&quot;") + '"'
        return "'" + data + "'"
    return '"' + data + '"'


def _content(value: object) -> str:
    """An element's text as xmltodict writes a value or a "#text": none for None or ""."""
    return "" if value is None else _text(value if type(value) is str else _string(value))


def _quoted(value: object) -> str:
    """An attribute's value, quoted, as xmltodict writes an "@name" (None: empty)."""
    return _attribute("" if value is None else _string(value))


# -- the envelope and header of pywinrm 0.5.0's build_wsman_header (winrm/protocol.py) --------

_ENVELOPE = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"'
    ' xmlns:b="http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd"'
    ' xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer"'
    ' xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"'
    ' xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"'
    ' xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config">'
    "<env:Header><a:To>http://windows-host:5985/wsman</a:To><a:ReplyTo>"
    '<a:Address mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address>'
    '</a:ReplyTo><w:MaxEnvelopeSize mustUnderstand="true">153600</w:MaxEnvelopeSize><a:MessageID>'
)
_TIMEOUT = ('</a:MessageID><w:Locale mustUnderstand="false" xml:lang="en-US"></w:Locale>'
            '<p:DataLocale mustUnderstand="false" xml:lang="en-US"></p:DataLocale><w:OperationTimeout>PT')
_RESOURCE = 'S</w:OperationTimeout><w:ResourceURI mustUnderstand="true">'
_ACTION = '</w:ResourceURI><a:Action mustUnderstand="true">'
_SELECTOR = '</a:Action><w:SelectorSet><w:Selector Name="ShellId">'
_BODY = "</env:Header><env:Body>"
_END = "</env:Body></env:Envelope>"


def envelope(action: str, operation_timeout_sec: float, shell_id: str | None = None,
             message_id: str | uuid.UUID | None = None, *, resource_uri: str = SHELL_URI, options: str = "",
             body: str = "") -> str:
    """A request: `build_wsman_header(action, resource_uri, shell_id, message_id)` of a
    Protocol whose operation_timeout_sec is the one given, `options` (written) at the end of
    the header, `body` (written) in env:Body."""
    if not message_id:
        message_id = uuid.uuid4()
    if shell_id:
        selector = _SELECTOR + _content(shell_id) + "</w:Selector></w:SelectorSet>"
    else:
        selector = "</a:Action>"
    return "".join((_ENVELOPE, _text(f"uuid:{message_id}"), _TIMEOUT, str(int(operation_timeout_sec)),
                    _RESOURCE, _text(resource_uri), _ACTION, _text(action), selector, options, _BODY, body, _END))


def _variable(key: object, value: object) -> str:
    return f"<rsp:Variable Name={_quoted(key)}>{_content(value)}</rsp:Variable>"


#: The environment is the same for every server of a scan (the script: 9 KB to escape).
_cached_variable = functools.lru_cache(maxsize=16)(_variable)


def _options(first: str, first_value: str, second: str, second_value: str) -> str:
    return (f'<w:OptionSet><w:Option Name="{first}">{_content(first_value)}</w:Option>'
            f'<w:Option Name="{second}">{_content(second_value)}</w:Option></w:OptionSet>')


# -- the bodies of pywinrm 0.5.0's requests (winrm/protocol.py) ------------------------------


def create(operation_timeout_sec: float, *, i_stream: str, o_stream: str, working_directory: str | None,
           env_vars: dict[str, str] | None, noprofile: bool, codepage: int, idle_timeout: str | int | None) -> str:
    """`Protocol.open_shell`'s request."""
    body = ["<rsp:Shell><rsp:InputStreams>", _content(i_stream), "</rsp:InputStreams><rsp:OutputStreams>",
            _content(o_stream), "</rsp:OutputStreams>"]
    if working_directory:
        body += ("<rsp:WorkingDirectory>", _content(working_directory), "</rsp:WorkingDirectory>")
    if idle_timeout:
        body += ("<rsp:IdleTimeOut>", _content(idle_timeout), "</rsp:IdleTimeOut>")
    if env_vars:
        body.append("<rsp:Environment>")
        for key, value in env_vars.items():
            body.append(_cached_variable(key, value) if type(key) is str and type(value) is str
                        else _variable(key, value))
        body.append("</rsp:Environment>")
    body.append("</rsp:Shell>")
    return envelope(CREATE, operation_timeout_sec, body="".join(body), options=_options(
        "WINRS_NOPROFILE", str(noprofile).upper(), "WINRS_CODEPAGE", str(codepage)))


def command(operation_timeout_sec: float, shell_id: str, command_line: str, arguments: list[str] | None, *,
            console_mode_stdin: bool, skip_cmd_shell: bool) -> str:
    """`Protocol.run_command`'s request (`arguments` None: no rsp:Arguments)."""
    options = _options("WINRS_CONSOLEMODE_STDIN", str(console_mode_stdin).upper(),
                       "WINRS_SKIP_CMD_SHELL", str(skip_cmd_shell).upper())
    words = f"<rsp:Arguments>{_content(' '.join(arguments))}</rsp:Arguments>" if arguments is not None else ""
    return envelope(COMMAND, operation_timeout_sec, shell_id, options=options, body=(
        f"<rsp:CommandLine><rsp:Command>{_content(command_line)}</rsp:Command>{words}</rsp:CommandLine>"))


def send(operation_timeout_sec: float, shell_id: str, command_id: str, data: bytes, *, end: bool) -> str:
    """`Protocol.send_command_input`'s request."""
    return envelope(SEND, operation_timeout_sec, shell_id, body=(
        f'<rsp:Send><rsp:Stream CommandId={_quoted(command_id)} Name="stdin" End="{"true" if end else "false"}" '
        f'xmlns:rsp="{SHELL_NS}">{base64.b64encode(data).decode("ascii")}</rsp:Stream></rsp:Send>'))


def receive(operation_timeout_sec: float, shell_id: str, command_id: str) -> str:
    """`Protocol.get_command_output_raw`'s request."""
    return envelope(RECEIVE, operation_timeout_sec, shell_id, body=(
        f"<rsp:Receive><rsp:DesiredStream CommandId={_quoted(command_id)}>stdout stderr</rsp:DesiredStream>"
        "</rsp:Receive>"))


def delete(operation_timeout_sec: float, shell_id: str, message_id: uuid.UUID) -> str:
    """`Protocol.close_shell`'s request."""
    return envelope(DELETE, operation_timeout_sec, shell_id, message_id)


# -- reading the answers, as pywinrm 0.5.0 does ---------------------------------------------------


def _below_root(answer: bytes) -> list[ET.Element]:
    """`ET.fromstring(answer).findall(".//*")`: every element below the root, in document
    order (the tree holds only elements: ElementTree's builder keeps no comments)."""
    nodes = list(ET.fromstring(answer).iter())
    del nodes[0]
    return nodes


def shell_id(answer: bytes) -> str:
    return cast(str, next(node for node in _below_root(answer) if node.get("Name") == "ShellId").text)


def command_id(answer: bytes) -> str:
    return cast(str, next(node for node in _below_root(answer) if node.tag.endswith("CommandId")).text)


def relates_to(answer: bytes) -> str:
    return cast(str, next(node for node in _below_root(answer) if node.tag.endswith("RelatesTo")).text)


def output(answer: bytes) -> tuple[bytes, bytes, int, bool]:
    """stdout, stderr, exit code (-1 while running) and whether the command is done."""
    nodes = _below_root(answer)
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    done = 0
    for node in nodes:
        if node.tag.endswith("Stream") and node.text:
            if node.attrib["Name"] == "stdout":
                stdout.append(base64.b64decode(node.text.encode("ascii")))
            elif node.attrib["Name"] == "stderr":
                stderr.append(base64.b64decode(node.text.encode("ascii")))
    for node in nodes:
        if node.get("State", "").endswith("CommandState/Done"):
            done += 1
    return_code = -1
    if done == 1:
        return_code = int(next(node for node in nodes if node.tag.endswith("ExitCode")).text or -1)
    return b"".join(stdout), b"".join(stderr), return_code, done == 1

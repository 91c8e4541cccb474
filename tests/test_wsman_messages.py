"""The scanner's WS-Management requests are the bytes pywinrm itself sends.

winrm_client's Protocol writes pywinrm's requests with scanner/collect/wsman_messages.py
instead of xmltodict (bench/README.md, "CPU per server"). Each operation is run through
pywinrm's own Protocol and through ours with the same arguments and the same message ids,
on a pywinrm transport whose send_message records the request and answers it; the two
requests must be equal byte for byte, and the answers read alike. Shell and command ids
come from the server, so they are hostile here (quotes, markup, line breaks), and so is every
other value a request carries; the header alone is compared with pywinrm's
build_wsman_header for hostile ids, and hostile answers must read as pywinrm reads them
(the same result, or the same exception).
"""

from __future__ import annotations

import base64
import itertools
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import spnego
import xmltodict
from winrm.protocol import Protocol

from scanner.collect import winrm_client, wsman_messages
from scanner.inventory import Target

HOSTILE_ID = "11A'\"<&>\n\t\r]]>é"
#: Each quoting of an attribute (xml.sax.saxutils.quoteattr): double quotes, single quotes
#: around a value with a double quote, &quot; when it has both; line breaks and tabs as
#: character references.
HOSTILE = ["plain", "it's", 'say "hi"', "both ' and \"", "a\r\nb\tc", "&amp; <x/> &#10; ]]>", "ünï€ \x7f", " "]

ANSWERS = {
    "transfer/Create": '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
                       'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Body><w:SelectorSet>'
                       '<w:Selector Name="ShellId">SHELL-1</w:Selector></w:SelectorSet></s:Body></s:Envelope>',
    "shell/Command": '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
                     'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Body>'
                     '<rsp:CommandResponse><rsp:CommandId>CMD-1</rsp:CommandId></rsp:CommandResponse>'
                     '</s:Body></s:Envelope>',
    "shell/Send": '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>',
    "shell/Receive": '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
                     'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Body>'
                     '<rsp:ReceiveResponse>'
                     f'<rsp:Stream Name="stdout" CommandId="C">{base64.b64encode(b"out 1").decode()}</rsp:Stream>'
                     f'<rsp:Stream Name="stderr" CommandId="C">{base64.b64encode(b"err").decode()}</rsp:Stream>'
                     '<rsp:Stream Name="stdout" CommandId="C"></rsp:Stream>'
                     f'<rsp:Stream Name="stdout" CommandId="C">{base64.b64encode(b" out 2").decode()}</rsp:Stream>'
                     '<rsp:CommandState CommandId="C" '
                     'State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done">'
                     '<rsp:ExitCode>7</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse></s:Body></s:Envelope>',
    "shell/Receive-running": '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
                             'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Body>'
                             '<rsp:ReceiveResponse><rsp:CommandState CommandId="C" State="http://schemas.'
                             'microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"/>'
                             '</rsp:ReceiveResponse></s:Body></s:Envelope>',
}


def _answer(message: str, running: bool) -> bytes:
    action = re.search(r'<a:Action mustUnderstand="true">[^<]*/([^/<]+/[^/<]+)</a:Action>', message)
    assert action is not None, message
    if action.group(1) == "transfer/Delete":
        message_id = re.search(r"<a:MessageID>([^<]*)</a:MessageID>", message)
        assert message_id is not None
        return ('<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
                'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header>'
                f"<a:RelatesTo>{message_id.group(1)}</a:RelatesTo></s:Header><s:Body/></s:Envelope>").encode()
    key = action.group(1) + ("-running" if running and action.group(1) == "shell/Receive" else "")
    return ANSWERS[key].encode()


def _exchange(cls: type[Protocol], operation: Callable[[Protocol], Any], monkeypatch: pytest.MonkeyPatch,
              running: bool = False, operation_timeout: float = 19,
              answer: Callable[[str], bytes] | None = None) -> tuple[list[str], Any]:
    """The requests `operation` sends through a Protocol of `cls`, and what it returns."""
    counter = itertools.count(1)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(counter)))
    protocol = cls("http://cas01.contoso.com:5985/wsman", transport="plaintext", username="auditor",
                   password="secret", operation_timeout_sec=operation_timeout, read_timeout_sec=24)  # type: ignore[arg-type]
    sent: list[str] = []

    def send_message(message: str | bytes) -> bytes:
        assert isinstance(message, str)
        sent.append(message)
        return answer(message) if answer is not None else _answer(message, running)

    protocol.transport.send_message = send_message  # type: ignore[method-assign]
    return sent, operation(protocol)


OPERATIONS: dict[str, Callable[[Protocol], Any]] = {
    "create, the script in the environment": lambda p: p.open_shell(
        env_vars={"CASAUDIT_PS": "$a = \"<b>\" & 'c' %PATH%\r\n\tGrüße € \x7f", "CASAUDIT_SINCE": "2026-12-06T00:00:00Z",
                  "EMPTY": ""}, codepage=65001, noprofile=True),
    "create, no environment": lambda p: p.open_shell(codepage=437),
    "create, every option": lambda p: p.open_shell(i_stream="stdin", o_stream="stdout", working_directory="C:\\a&b",
                                                   idle_timeout="PT60S", noprofile=False, codepage=850),
    "command through cmd.exe": lambda p: p.run_command(HOSTILE_ID, 'cmd /c "%SystemRoot%\\powershell.exe" <&>'),
    "command, stdin a pipe, arguments": lambda p: p.run_command(
        "SHELL-1", "powershell.exe", ["-NoProfile", b"-Command", "'-'"], console_mode_stdin=False,
        skip_cmd_shell=True),
    "send, not the end": lambda p: p.send_command_input(HOSTILE_ID, HOSTILE_ID, b"\x00\xff script <&>", end=False),
    "send, the end, text": lambda p: p.send_command_input("SHELL-1", "CMD-1", "Write-Output 1", end=True),
    "send, nothing": lambda p: p.send_command_input("SHELL-1", "CMD-1", b"", end=True),
    "receive": lambda p: p.get_command_output_raw(HOSTILE_ID, HOSTILE_ID),
    "delete, keeping the session": lambda p: p.close_shell(HOSTILE_ID, close_session=False),
    "delete": lambda p: p.close_shell("SHELL-1"),
    "create, hostile names and values": lambda p: p.open_shell(
        env_vars={value: HOSTILE[-1 - n] for n, value in enumerate(HOSTILE)} | {"": "", "N": 5, "NONE": None}, codepage=65001),
    "create, hostile streams and options": lambda p: p.open_shell(
        i_stream=HOSTILE_ID, o_stream="", working_directory=HOSTILE_ID, idle_timeout=HOSTILE_ID,
        noprofile=HOSTILE_ID, codepage=HOSTILE_ID),  # type: ignore[arg-type]  # what pywinrm would write
    "create, idle timeout a number": lambda p: p.open_shell(idle_timeout=600, noprofile=True),
    "command, hostile arguments": lambda p: p.run_command(HOSTILE_ID, HOSTILE_ID, HOSTILE + [HOSTILE_ID.encode()],
                                                          console_mode_stdin=HOSTILE_ID),  # type: ignore[arg-type]
    "command, arguments an empty iterator": lambda p: p.run_command("SHELL-1", "cmd", iter(())),
    "command, an empty command, no shell id": lambda p: p.run_command("", "", []),
    **{f"send, command id {value!r}": lambda p, value=value: p.send_command_input(value, value, b"x", end=True)
       for value in HOSTILE},
    **{f"receive, command id {value!r}": lambda p, value=value: p.get_command_output_raw(value, value)
       for value in HOSTILE},
}


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_each_request_is_the_bytes_pywinrm_sends(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs, their_result = _exchange(Protocol, OPERATIONS[name], monkeypatch)
    ours, our_result = _exchange(winrm_client._Protocol, OPERATIONS[name], monkeypatch)
    assert len(theirs) == 1
    assert ours == theirs
    assert our_result == their_result


def test_a_running_command_reads_as_pywinrm_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    operation = OPERATIONS["receive"]
    assert (_exchange(winrm_client._Protocol, operation, monkeypatch, running=True)
            == _exchange(Protocol, operation, monkeypatch, running=True))
    assert _exchange(winrm_client._Protocol, operation, monkeypatch, running=True)[1] == (b"", b"", -1, False)


def test_the_operation_timeout_is_written_as_pywinrm_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for operation in ("create, no environment", "receive", "delete"):
        ours = _exchange(winrm_client._Protocol, OPERATIONS[operation], monkeypatch, operation_timeout=7.9)
        assert ours == _exchange(Protocol, OPERATIONS[operation], monkeypatch, operation_timeout=7.9)
        assert "<w:OperationTimeout>PT7S</w:OperationTimeout>" in ours[0][0]


class _Timeout:
    operation_timeout_sec = 7.5


@pytest.mark.parametrize("shell_id", [None, "", "0", *HOSTILE, HOSTILE_ID])
@pytest.mark.parametrize("message_id", [None, "", HOSTILE_ID, "uuid-like ' \" < >", uuid.UUID(int=7)])
def test_the_header_is_pywinrms(shell_id: str | None, message_id: str | uuid.UUID | None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`envelope` writes what xmltodict writes of build_wsman_header's dict, every field
    given hostile values (the action and resource URI too), and with an empty body."""
    for action, resource_uri in ((wsman_messages.COMMAND, wsman_messages.SHELL_URI), (HOSTILE_ID, HOSTILE[5])):
        monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=3))
        header = Protocol.build_wsman_header(_Timeout(), action, resource_uri, shell_id, message_id)  # type: ignore[arg-type]
        theirs = xmltodict.unparse({"env:Envelope": {**header, "env:Body": {}}})
        ours = wsman_messages.envelope(action, _Timeout.operation_timeout_sec, shell_id, message_id,
                                       resource_uri=resource_uri)
        assert ours == theirs


_SOAP = 'xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"'
_RSP = 'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"'
_DONE = 'State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"'
_B64 = base64.b64encode(b"out").decode()

#: Answers a server could send, each read by the operations below.
HOSTILE_ANSWERS = [
    # the ids: the first match below the root, its text as ElementTree joins it
    f'<s:Envelope {_SOAP}><w:Selector Name="ShellId">A&amp;&lt;&#x41;<!-- c -->B<![CDATA[<&>]]>C</w:Selector>'
    '<w:Selector Name="ShellId">second</w:Selector></s:Envelope>',
    f'<w:Selector Name="ShellId" {_SOAP}>the root itself</w:Selector>',
    f'<w:Selector Name="ShellId" {_SOAP}><w:Selector Name="ShellId">below</w:Selector></w:Selector>',
    f'<s:Envelope {_SOAP}><s:Body><w:Selector Name="ShellId"/><x:CommandId xmlns:x="urn:x">\n\t</x:CommandId>'
    "</s:Body></s:Envelope>",
    f'<s:Envelope {_SOAP}><CommandId>plain<i>inner</i>tail</CommandId><RelatesTo>uuid:not-a-uuid</RelatesTo>'
    '</s:Envelope>',
    '<a><RelatesTo>uuid:00000000-0000-0000-0000-000000000001</RelatesTo><RelatesTo>x</RelatesTo></a>',
    "<a><RelatesTo>urn:uuid:{00000000-0000-0000-0000-000000000001}</RelatesTo></a>",
    "<a><RelatesTo/></a>",
    '<?xml version="1.0" encoding="iso-8859-1"?><a><CommandId>\xe9t\xe9</CommandId></a>',
    # the output: streams, states and exit codes in every order and shape
    f'<s:Envelope {_SOAP} {_RSP}><rsp:ExitCode>3</rsp:ExitCode><rsp:Stream Name="stderr">{_B64}</rsp:Stream>'
    f'<rsp:Stream Name="other">{_B64}</rsp:Stream><rsp:Stream Name="stdout">{_B64}<rsp:Stream Name="stdout">'
    f'{_B64}</rsp:Stream></rsp:Stream><rsp:CommandState {_DONE}><rsp:ExitCode>9</rsp:ExitCode>'
    "</rsp:CommandState></s:Envelope>",
    f'<s:Envelope {_SOAP} {_RSP}><rsp:CommandState {_DONE}/><rsp:CommandState {_DONE}/><rsp:ExitCode>1</rsp:ExitCode>'
    "</s:Envelope>",
    f'<rsp:CommandState {_RSP} {_DONE}><rsp:ExitCode></rsp:ExitCode></rsp:CommandState>',
    f'<s:Envelope {_SOAP} {_RSP}><rsp:CommandState {_DONE}/></s:Envelope>',
    f'<s:Envelope {_SOAP} {_RSP}><rsp:CommandState {_DONE}><rsp:ExitCode/></rsp:CommandState></s:Envelope>',
    f'<s:Envelope {_SOAP} {_RSP}><rsp:CommandState {_DONE}/><rsp:ExitCode> 0x1 </rsp:ExitCode></s:Envelope>',
    f'<s:Envelope {_SOAP} {_RSP}><rsp:CommandState {_DONE}/><rsp:ExitCode> -7 </rsp:ExitCode></s:Envelope>',
    f'<s:Envelope {_SOAP} {_RSP}><rsp:Stream>{_B64}</rsp:Stream></s:Envelope>',
    f'<s:Envelope {_SOAP} {_RSP}><rsp:Stream Name="stdout"></rsp:Stream><rsp:Stream/></s:Envelope>',
    f'<s:Envelope {_SOAP} {_RSP}><rsp:Stream Name="stdout">not base64!</rsp:Stream></s:Envelope>',
    f'<s:Envelope {_SOAP} {_RSP}><rsp:Stream Name="stdout">abc</rsp:Stream></s:Envelope>',
    f'<s:Envelope {_SOAP} {_RSP}><rsp:Stream Name="stderr">\u00e9</rsp:Stream></s:Envelope>',
    # what the parser refuses
    "",
    f'<s:Envelope {_SOAP}><w:Selector Name="ShellId">cut',
    '<a><CommandId>x</CommandId></a><b/>',
    '<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a><CommandId>&e;</CommandId></a>',
    '<a><CommandId>&undefined;</CommandId></a>',
    '<!DOCTYPE a [<!ENTITY e "inner">]><a><w:Selector Name="ShellId" xmlns:w="urn:w">&e;&e;</w:Selector></a>',
    '<a xmlns:p="urn:p"><q:CommandId xmlns:q="">x</q:CommandId></a>',
]

READERS: dict[str, Callable[[Protocol], Any]] = {
    "create": OPERATIONS["create, no environment"],
    "command": OPERATIONS["command through cmd.exe"],
    "receive": OPERATIONS["receive"],
    "delete": OPERATIONS["delete, keeping the session"],
}


def _outcome(cls: type[Protocol], operation: Callable[[Protocol], Any], answer: bytes,
             monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    try:
        return "returned", _exchange(cls, operation, monkeypatch, answer=lambda message: answer)[1]
    except Exception as exc:  # the exception is what is compared
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("reader", list(READERS))
def test_hostile_answers_read_as_pywinrm_reads_them(reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = set()
    for text in HOSTILE_ANSWERS:
        answer = text.encode("latin-1" if "iso-8859-1" in text else "utf-8")
        ours = _outcome(winrm_client._Protocol, READERS[reader], answer, monkeypatch)
        assert ours == _outcome(Protocol, READERS[reader], answer, monkeypatch), text
        outcomes.add(ours[0])
    assert "returned" in outcomes and "ParseError" in outcomes and len(outcomes) > 2


def _target(auth: str) -> Target:
    return Target(name="CAS01", address="cas01.contoso.com", site="Berlin", username="CONTOSO\\auditor", auth=auth,
                  scheme="https", port=5986, verify_tls=True, ca_bundle=None, allow_insecure=False, cert_pem=None,
                  cert_key_pem=None)


def test_every_collection_writes_its_requests_this_way() -> None:
    assert type(winrm_client._protocol(_target("basic"), "secret", 30)) is winrm_client._Protocol


@pytest.mark.parametrize("password", ["Passw0rd!", "a much longer pass phrase than fourteen", "Grüße€ß", "x"])
def test_ntlm_is_given_the_hashes_pyspnego_derives_from_the_password(password: str) -> None:
    """The NTLM password goes to pyspnego as its "LM:NT" pair, computed once per process:
    pyspnego must read from it the hashes it would derive from the password itself."""
    protocol = winrm_client._protocol(_target("ntlm"), password, 30)
    assert protocol.password != password
    given = spnego.client("CONTOSO\\auditor", protocol.password, protocol="ntlm")
    derived = spnego.client("CONTOSO\\auditor", password, protocol="ntlm")
    mine, theirs = given._credential, derived._credential  # type: ignore[attr-defined]
    assert (mine.lm_hash, mine.nt_hash) == (theirs.lm_hash, theirs.nt_hash)
    assert (mine.domain, mine.username) == (theirs.domain, theirs.username)

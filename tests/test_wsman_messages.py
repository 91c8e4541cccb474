"""The scanner's WS-Management requests are the bytes pywinrm itself sends.

winrm_client's Protocol writes pywinrm's requests with scanner/collect/wsman_messages.py
instead of xmltodict (bench/README.md, "CPU per server"). Each operation is run through
pywinrm's own Protocol and through ours with the same arguments and the same message ids,
on a pywinrm transport whose send_message records the request and answers it; the two
requests must be equal byte for byte, and the answers read alike. Shell and command ids
come from the server, so they are hostile here (quotes, markup, line breaks).
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
from winrm.protocol import Protocol

from scanner.collect import winrm_client
from scanner.inventory import Target

HOSTILE_ID = "11A'\"<&>\n\t\r]]>é"

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
              running: bool = False) -> tuple[list[str], Any]:
    """The requests `operation` sends through a Protocol of `cls`, and what it returns."""
    counter = itertools.count(1)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(counter)))
    protocol = cls("http://cas01.contoso.com:5985/wsman", transport="plaintext", username="auditor",
                   password="secret", operation_timeout_sec=19, read_timeout_sec=24)
    sent: list[str] = []

    def send_message(message: str | bytes) -> bytes:
        assert isinstance(message, str)
        sent.append(message)
        return _answer(message, running)

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

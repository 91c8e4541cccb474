"""The lab's WinRM server, driven by the real pywinrm (and requests) over real loopback HTTP."""

from __future__ import annotations

import base64
import itertools
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
import spnego
import winrm
import xmltodict
from lxml import etree
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMOperationTimeoutError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from scanner.errors import ConfigError
from scanner.lab.credentials import register_ntlm_user
from scanner.lab.httpserver import HostConfig, LabServer
from scanner.lab.wsman import CommandResult, ShellContext
from scanner.lab.wsman_soap import NS, SHELL_RESOURCE_URI

USER, PASSWORD = "auditor", "lab-password"
_addresses = (f"127.0.77.{n}" for n in itertools.count(1))


class EchoRunner:
    """Prints what the shell and the command line look like; `reply` overrides the output."""

    def __init__(self, reply: CommandResult | None = None, fail: bool = False) -> None:
        self.reply = reply
        self.fail = fail
        self.calls: list[tuple[ShellContext, str, list[str], bool]] = []

    def run(self, shell: ShellContext, command: str, arguments: list[str],
            skip_cmd_shell: bool) -> CommandResult:
        self.calls.append((shell, command, arguments, skip_cmd_shell))
        if self.fail:
            raise RuntimeError("simulated host bug")
        if self.reply is not None:
            return self.reply
        env = ";".join(f"{k}={v}" for k, v in sorted(shell.env.items()))
        return CommandResult(f"{shell.server} cp={shell.codepage} env={env} cwd={shell.working_directory}"
                             f" cmd={command} args={' '.join(arguments)}\r\n", "", 0)


@pytest.fixture
def lab() -> Iterator[object]:
    """Factory for started LabServers on fresh loopback addresses; all stopped afterwards."""
    servers: list[LabServer] = []

    def make(auth: str = "basic", runner: object | None = None, **kw: object) -> LabServer:
        config = HostConfig(name=str(kw.pop("name", "CAS01")), address=next(_addresses), port=0,
                            auth=auth, username=str(kw.pop("username", USER)),
                            password=str(kw.pop("password", PASSWORD)),
                            runner=runner or EchoRunner(), **kw)  # type: ignore[arg-type]
        server = LabServer(config)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def protocol(server: LabServer, auth: str = "basic", password: str = PASSWORD, username: str = USER,
             read: int = 30, op: int = 20, encryption: str = "auto") -> Protocol:
    return Protocol(server.endpoint, transport=auth, username=username, password=password,  # type: ignore[arg-type]
                    read_timeout_sec=read, operation_timeout_sec=op,
                    message_encryption=encryption, proxy=None, ca_trust_path=None)  # type: ignore[arg-type]


def collect(p: Protocol, command: str = "type", args: tuple[str, ...] = (), *,
            codepage: int = 437, env: dict[str, str] | None = None) -> tuple[bytes, bytes, int]:
    shell_id = p.open_shell(env_vars=env, codepage=codepage)
    command_id = p.run_command(shell_id, command, args)
    result = p.get_command_output(shell_id, command_id)
    p.close_shell(shell_id)
    return result


def receive_message(p: Protocol, shell_id: str, command_id: str) -> str:
    req = {"env:Envelope": p.build_wsman_header(
        resource_uri=SHELL_RESOURCE_URI,
        action="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive", shell_id=shell_id)}
    req["env:Envelope"]["env:Body"] = {"rsp:Receive": {"rsp:DesiredStream": {
        "@CommandId": command_id, "#text": "stdout stderr"}}}
    return xmltodict.unparse(req)


# -- round trips ---------------------------------------------------------------------------


def test_basic_session_run_cmd(lab) -> None:
    server = lab("basic")
    session = winrm.Session(server.endpoint, auth=(USER, PASSWORD), transport="basic", proxy=None,
                            ca_trust_path=None)
    result = session.run_cmd("ipconfig", ["/all"])
    assert result.status_code == 0
    assert result.std_out == b"CAS01 cp=437 env= cwd=None cmd=ipconfig args=/all\r\n"
    assert server.stats.signals == 1 and server.stats.shells_open == 0


def test_basic_protocol_round_trip_is_four_requests(lab) -> None:
    runner = EchoRunner()
    server = lab("basic", runner)
    out, err, code = collect(protocol(server), "hostname", ("-s",), codepage=65001,
                             env={"LANG": "de", "X": "a b"})
    assert out == b"CAS01 cp=65001 env=LANG=de;X=a b cwd=None cmd=hostname args=-s\r\n"
    assert (err, code) == (b"", 0)
    assert runner.calls[0][0].env == {"LANG": "de", "X": "a b"}
    stats = server.stats
    assert stats.requests == 4 and stats.connections == 1
    assert dict(stats.actions) == {"Create": 1, "Command": 1, "Receive": 1, "Delete": 1}
    assert (stats.shells_created, stats.shells_deleted, stats.shells_open) == (1, 1, 0)
    assert (stats.commands, stats.receives, stats.auth_failures) == (1, 1, 0)


def test_working_directory_reaches_the_runner(lab) -> None:
    server = lab("basic")
    p = protocol(server)
    shell_id = p.open_shell(working_directory="C:\\Programme\\Exchange")
    out, _, _ = p.get_command_output(shell_id, p.run_command(shell_id, "cd"))
    p.close_shell(shell_id)
    assert b"cwd=C:\\Programme\\Exchange cmd=cd" in out


def test_keep_alive_without_nagle(lab) -> None:
    """Each collection keeps one connection alive for its four requests, and the lab's side of
    every connection has Nagle's algorithm off: with it on, each small response would wait
    for the client's delayed ACK (about 40 ms a request)."""
    server = lab("basic")
    for _ in range(20):
        p = protocol(server)
        shell_id = p.open_shell()
        with server._conn_lock:  # the lab's side of the connection the collection is using
            sockets = list(server._conns)
        # (the previous collection's connection may still be closing on the lab's side)
        assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
        assert p.get_command_output(shell_id, p.run_command(shell_id, "type"))[2] == 0
        p.close_shell(shell_id)  # pywinrm closes its session (the connection) here
    assert server.stats.requests == 80 and server.stats.connections == 20


@pytest.mark.parametrize("encryption", ["always", "auto"])
def test_ntlm_encrypted_round_trip_is_seven_requests(lab, encryption: str) -> None:
    text = "jörg\r\nC:\\Programme\\Microsoft\r\n"
    server = lab("ntlm", EchoRunner(CommandResult(text, "fehlt: jörg\r\n", 2)))
    out, err, code = collect(protocol(server, "ntlm", encryption=encryption), codepage=65001)
    assert out.decode("utf-8") == text and err.decode("utf-8") == "fehlt: jörg\r\n" and code == 2
    stats = server.stats
    assert stats.requests == 7 and stats.connections == 1
    assert stats.actions["auth"] == 3 and stats.actions["Receive"] == 1


def test_ntlm_codepage_437_encodes_or_replaces(lab) -> None:
    server = lab("ntlm", EchoRunner(CommandResult("jörg € Łódź Programme\r\n", "", 0)))
    out, _, _ = collect(protocol(server, "ntlm"), codepage=437)
    assert out == b"j\x94rg ? ?\xa2d? Programme\r\n"
    assert out.decode("cp437") == "jörg ? ?ód? Programme\r\n"


def test_ntlm_domain_user_and_plain_user_both_log_on(lab) -> None:
    server = lab("ntlm", domain="CONTOSO", username="scan", password="pw-domain")
    assert collect(protocol(server, "ntlm", username="CONTOSO\\scan", password="pw-domain"))[2] == 0
    assert collect(protocol(server, "ntlm", username="scan", password="pw-domain"))[2] == 0


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_wrong_password_is_rejected(lab, auth: str) -> None:
    server = lab(auth)
    with pytest.raises(InvalidCredentialsError):
        protocol(server, auth, password="wrong").open_shell()
    assert server.stats.auth_failures == 1 and server.stats.shells_created == 0


def test_ntlm_unencrypted_body_is_rejected(lab) -> None:
    server = lab("ntlm")
    with pytest.raises(InvalidCredentialsError):
        protocol(server, "ntlm", encryption="never").open_shell()
    assert server.stats.shells_created == 0 and server.stats.auth_failures >= 1


def test_spnego_wrapped_tokens_and_manual_encryption(lab) -> None:
    """A SPNEGO (not raw NTLM) initiator authenticates too; framing checked byte by byte."""
    server = lab("ntlm")
    client = spnego.client(USER, PASSWORD, hostname="cas01", service="http", protocol="negotiate")
    with requests.Session() as http:
        http.trust_env = False
        token = client.step()
        assert token is not None and token[:1] == b"\x60"      # SPNEGO NegTokenInit
        r = http.post(server.endpoint, headers={"Authorization": "Negotiate " + base64.b64encode(token).decode()})
        assert r.status_code == 401
        challenge = base64.b64decode(r.headers["WWW-Authenticate"].split(" ", 1)[1])
        token = client.step(challenge)
        r = http.post(server.endpoint, headers={"Authorization": "Negotiate " + base64.b64encode(token).decode()})
        assert r.status_code == 200 and r.content == b""
        if r.headers.get("WWW-Authenticate", "").startswith("Negotiate "):
            client.step(base64.b64decode(r.headers["WWW-Authenticate"].split(" ", 1)[1]))
        p = protocol(server)   # only to build a request envelope
        create = {"env:Envelope": p.build_wsman_header(
            resource_uri=SHELL_RESOURCE_URI, action="http://schemas.xmlsoap.org/ws/2004/09/transfer/Create")}
        create["env:Envelope"]["env:Body"] = {"rsp:Shell": {"rsp:InputStreams": "stdin"}}
        plain = xmltodict.unparse(create).encode()
        wrapped = client.wrap(plain, encrypt=True).data
        body = (b"--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
                b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(plain)).encode()
                + b"\r\n--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n"
                + struct.pack("<i", 16) + wrapped[:16] + wrapped[16:] + b"--Encrypted Boundary--\r\n")
        r = http.post(server.endpoint, data=body, headers={"Content-Type": (
            'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";'
            'boundary="Encrypted Boundary"')})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == ('multipart/encrypted;protocol="application/HTTP-SPNEGO-session-'
                                         'encrypted";boundary="Encrypted Boundary"')
    head, _, rest = r.content.partition(b"--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n")
    declared = int(head.split(b"Length=")[1].strip())
    assert rest.endswith(b"--Encrypted Boundary--\r\n")
    stream = rest[: -len(b"--Encrypted Boundary--\r\n")]
    sig_len = struct.unpack("<i", stream[:4])[0]
    answer = client.unwrap(stream[4:4 + sig_len] + stream[4 + sig_len:]).data
    assert len(answer) == declared
    assert etree.fromstring(answer).find(".//x:ResourceCreated//w:Selector", NS) is not None
    assert server.stats.shells_created == 1


# -- output shape ----------------------------------------------------------------------------


def test_large_output_spans_several_receives_within_envelope_size(lab) -> None:
    line = "0123456789abcdefghijklmnopqrstuvwxyz äöü\r\n"
    big = line * (1_000_000 // len(line))
    server = lab("basic", EchoRunner(CommandResult(big, "tail", 0)))
    p = protocol(server)
    shell_id = p.open_shell(codepage=65001)
    command_id = p.run_command(shell_id, "type", ["big.txt"])
    out, err, states = b"", b"", []
    while True:
        raw = p.send_message(receive_message(p, shell_id, command_id))
        assert len(raw) <= 153600
        root = etree.fromstring(raw)
        for stream in root.iterfind(".//rsp:Stream", NS):
            data = base64.b64decode(stream.text or "")
            if stream.get("Name") == "stdout":
                out += data
            else:
                err += data
        state = root.find(".//rsp:CommandState", NS)
        assert state is not None
        states.append(state.get("State", "").rsplit("/", 1)[-1])
        if states[-1] == "Done":
            break
    assert out.decode("utf-8") == big and err == b"tail"
    assert len(states) >= 7 and set(states[:-1]) == {"Running"}
    # pywinrm's own loop gets the same bytes
    command_id = p.run_command(shell_id, "type", ["big.txt"])
    assert p.get_command_output(shell_id, command_id)[0].decode("utf-8") == big
    p.close_shell(shell_id)


def test_cmd_exe_line_limit_8191(lab) -> None:
    runner = EchoRunner(CommandResult("ran\r\n", "", 0))
    server = lab("basic", runner)
    p = protocol(server)
    shell_id = p.open_shell()
    ok = p.run_command(shell_id, "echo", ["x" * (8191 - 5)])
    assert p.get_command_output(shell_id, ok) == (b"ran\r\n", b"", 0)
    too_long = p.run_command(shell_id, "echo", ["x" * (8192 - 5)])
    assert p.get_command_output(shell_id, too_long) == (b"", b"The command line is too long.\r\n", 1)
    assert len(runner.calls) == 1
    p.close_shell(shell_id)


def test_create_process_limit_32767_with_skip_cmd_shell(lab) -> None:
    runner = EchoRunner(CommandResult("ran\r\n", "", 0))
    server = lab("basic", runner)
    p = protocol(server)
    shell_id = p.open_shell()
    ok = p.run_command(shell_id, "powershell", ["x" * (32767 - 11)], skip_cmd_shell=True)
    assert p.get_command_output(shell_id, ok)[0] == b"ran\r\n"
    with pytest.raises(WSManFaultError) as info:
        p.run_command(shell_id, "powershell", ["x" * (32768 - 11)], skip_cmd_shell=True)
    assert info.value.wsman_fault_code == 206 and info.value.code == 500
    assert info.value.reason == "The filename or extension is too long. "
    assert info.value.fault_subcode == "w:InternalError"
    assert runner.calls[0][3] is True and len(runner.calls) == 1
    p.close_shell(shell_id)


# -- timing and faults ---------------------------------------------------------------------


@pytest.mark.slow  # waits out a timeout or a delay of the lab
def test_delayed_command_gets_operation_timeout_then_completes(lab) -> None:
    server = lab("basic", EchoRunner(CommandResult("late\r\n", "", 0, delay_s=1.4)))
    p = protocol(server, read=3, op=1)
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, "slow.exe")
    started = time.monotonic()
    with pytest.raises(WinRMOperationTimeoutError):  # answered with the fault, not the late output
        p.get_command_output_raw(shell_id, command_id)
    assert time.monotonic() - started >= 0.9  # after waiting out the 1 s OperationTimeout
    assert p.get_command_output(shell_id, command_id) == (b"late\r\n", b"", 0)
    assert server.stats.receives == 2


@pytest.mark.slow  # waits out a timeout or a delay of the lab
def test_delayed_command_fault_shape(lab) -> None:
    server = lab("basic", EchoRunner(CommandResult("", "", 0, delay_s=30)))
    p = protocol(server, read=3, op=1)
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, "slow.exe")
    with requests.Session() as http:
        http.trust_env = False
        r = http.post(server.endpoint, data=receive_message(p, shell_id, command_id).encode(),
                      auth=(USER, PASSWORD), headers={"Content-Type": "application/soap+xml;charset=UTF-8"})
    assert r.status_code == 500
    root = etree.fromstring(r.content)
    fault = root.find("s:Body/s:Fault", NS)
    assert fault is not None
    assert fault.findtext("s:Code/s:Value", namespaces=NS) == "s:Receiver"
    assert fault.findtext("s:Code/s:Subcode/s:Value", namespaces=NS) == "w:TimedOut"
    f = "{http://schemas.microsoft.com/wbem/wsman/1/wsmanfault}"
    detail = fault.find(f"s:Detail/{f}WSManFault", NS)
    assert detail is not None and detail.get("Code") == "2150858793"
    assert detail.get("Machine") == urlsplit(server.endpoint).hostname  # the address the client used
    assert root.findtext("s:Header/a:Action", namespaces=NS) == "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"


def test_unknown_shell_id_fault(lab) -> None:
    server = lab("basic")
    with pytest.raises(WSManFaultError) as info:
        protocol(server).run_command(str(uuid.uuid4()).upper(), "dir")
    assert info.value.wsman_fault_code == 2150858843
    assert (info.value.fault_code, info.value.fault_subcode) == ("s:Sender", "w:InvalidSelectors")
    assert "invalid selectors" in info.value.reason


def test_runner_exception_becomes_fault_and_server_survives(lab) -> None:
    runner = EchoRunner(fail=True)
    server = lab("basic", runner)
    p = protocol(server)
    shell_id = p.open_shell()
    with pytest.raises(WSManFaultError) as info:
        p.run_command(shell_id, "boom")
    assert info.value.fault_subcode == "w:InternalError"
    runner.fail = False
    assert collect(p)[2] == 0


def test_unknown_codepage_faults_at_create(lab) -> None:
    server = lab("basic")
    with pytest.raises(WSManFaultError) as info:
        protocol(server).open_shell(codepage=12345)
    assert info.value.fault_code == "s:Sender" and server.stats.shells_created == 0


def test_fault_refuse(lab) -> None:
    server = lab("basic", fault="refuse")
    with pytest.raises(requests.exceptions.ConnectionError):
        protocol(server, read=2, op=1).open_shell()


@pytest.mark.slow  # waits out a timeout or a delay of the lab
def test_fault_timeout(lab) -> None:
    server = lab("basic", fault="timeout")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        protocol(server, read=2, op=1).open_shell()
    # the lab held the request until the client's 2 s read timeout gave up on it
    assert time.monotonic() - started >= 1.9 and server.stats.requests == 1


def test_fault_reset(lab) -> None:
    server = lab("basic", fault="reset")
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        protocol(server, read=2, op=1).open_shell()
    assert "reset" in str(info.value).lower()


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_fault_auth(lab, auth: str) -> None:
    server = lab(auth, fault="auth")
    with pytest.raises(InvalidCredentialsError):
        protocol(server, auth).open_shell()
    assert server.stats.auth_failures == 1


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_fault_soap_fault_denies_create(lab, auth: str) -> None:
    server = lab(auth, fault="soap-fault")
    with pytest.raises(WSManFaultError) as info:
        protocol(server, auth).open_shell()
    assert info.value.wsman_fault_code == 5 and info.value.reason == "Access is denied. "
    assert info.value.fault_subcode == "w:AccessDenied"


@pytest.mark.slow  # waits out a timeout or a delay of the lab
def test_fault_slow_trips_client_limit_and_stop_unblocks(lab) -> None:
    server = lab("basic", fault="slow")
    with pytest.raises(requests.exceptions.ReadTimeout):
        protocol(server, read=2, op=1).open_shell()
    with server._conn_lock:
        handlers = list(server._conns.values())
    assert handlers, "the handler is still delaying its answer"
    server.stop()
    # stop() releases a handler delaying its answer (SLOW_DELAY_S, a minute) before it returns
    assert not any(thread.is_alive() for thread in handlers)


def test_latency_is_added_to_every_response(lab) -> None:
    server = lab("basic", latency_ms=60)
    started = time.monotonic()
    collect(protocol(server))
    assert time.monotonic() - started >= 4 * 0.06


# -- hostile requests -------------------------------------------------------------------------


def _post(server: LabServer, body: bytes) -> requests.Response:
    with requests.Session() as http:
        http.trust_env = False
        return http.post(server.endpoint, data=body, auth=(USER, PASSWORD), timeout=10,
                         headers={"Content-Type": "application/soap+xml;charset=UTF-8"})


def test_xxe_file_entity_is_not_read(lab, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    server = lab("basic")
    body = (f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file://{secret}">]>'
            '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header/>'
            '<s:Body>&x;</s:Body></s:Envelope>').encode()
    r = _post(server, body)
    assert r.status_code == 500 and b"TOP-SECRET-42" not in r.content
    assert b"w:SchemaValidationError" in r.content


def test_billion_laughs_does_not_expand(lab) -> None:
    server = lab("basic")
    entities = '<!ENTITY a0 "lol">' + "".join(
        f'<!ENTITY a{i} "{("&a" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    body = (f'<?xml version="1.0"?><!DOCTYPE s:Envelope [{entities}]>'
            '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header/>'
            '<s:Body>&a9;</s:Body></s:Envelope>').encode()
    started = time.monotonic()
    r = _post(server, body)
    assert r.status_code == 500 and len(r.content) < 4096
    assert b"w:SchemaValidationError" in r.content
    # expanded, &a9; would be 3 GB of text: minutes of work, not the moment a refusal takes
    assert time.monotonic() - started < 30


def test_oversize_and_garbage_bodies_are_refused_and_server_keeps_serving(lab) -> None:
    server = lab("basic")
    assert _post(server, b"<" * (2 * 1024 * 1024)).status_code == 413
    assert _post(server, b"\x00\xff not xml").status_code == 500
    assert _post(server, b"<a/>" * 10).status_code == 500
    assert collect(protocol(server))[2] == 0


def test_other_paths_and_methods(lab) -> None:
    server = lab("basic")
    with requests.Session() as http:
        http.trust_env = False
        base = server.endpoint.rsplit("/", 1)[0]
        assert http.post(base + "/other", data=b"x", auth=(USER, PASSWORD)).status_code == 404
        assert http.get(server.endpoint, auth=(USER, PASSWORD)).status_code == 405
        r = http.post(server.endpoint, data=b"x")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="WSMAN"'


def test_ntlm_endpoint_advertises_negotiate(lab) -> None:
    server = lab("ntlm")
    with requests.Session() as http:
        http.trust_env = False
        r = http.post(server.endpoint, data=b"")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Negotiate"


# -- several servers, lifecycle ---------------------------------------------------------------


def test_many_servers_in_one_process_concurrently(lab) -> None:
    servers = [lab("ntlm" if i % 2 else "basic", name=f"CAS{i:02}", username=f"user{i}",
                   password=f"pw-{i}") for i in range(6)]
    results: dict[str, bytes] = {}

    def scan(i: int, server: LabServer) -> None:
        auth = "ntlm" if i % 2 else "basic"
        p = protocol(server, auth, username=f"user{i}", password=f"pw-{i}")
        results[server.config.name] = collect(p, "hostname")[0]

    threads = [threading.Thread(target=scan, args=(i, s)) for i, s in enumerate(servers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [f"CAS{i:02}" for i in range(6)]
    assert all(out.startswith(name.encode()) for name, out in results.items())
    servers[1].reset_stats()
    assert servers[1].stats.requests == 0 and servers[1].stats.actions == {}


@pytest.mark.slow  # starts and stops ten listeners
def test_start_stop_releases_port_promptly() -> None:
    address = next(_addresses)
    port = 0
    for _ in range(10):  # the same port again each time: stop() released it
        server = LabServer(HostConfig("CAS01", address, port, "basic", USER, PASSWORD, EchoRunner()))
        server.start()
        port = int(server.endpoint.rsplit(":", 1)[1].split("/")[0])
        p = protocol(server)
        shell_id = p.open_shell()
        assert p.get_command_output(shell_id, p.run_command(shell_id, "type"))[2] == 0
        p.close_shell(shell_id, close_session=False)  # leaves an idle keep-alive connection
        with server._conn_lock:
            handlers = list(server._conns.values())
        assert len(handlers) == 1  # its handler waits for the next request
        server.stop()
        # the idle connection was cut, not waited out: its handler ended within stop()
        assert not any(thread.is_alive() for thread in handlers)
    with pytest.raises(requests.exceptions.ConnectionError):
        protocol(server, read=2, op=1).open_shell()


def test_conflicting_ntlm_passwords_and_bad_config_are_config_errors() -> None:
    register_ntlm_user("LABX", "same", "one")
    with pytest.raises(ConfigError):
        register_ntlm_user("LABX", "same", "two")
    with pytest.raises(ConfigError):
        register_ntlm_user("", "colon", "a:b")
    with pytest.raises(ConfigError):
        LabServer(HostConfig("X", "127.0.0.1", 0, "basic", USER, PASSWORD, EchoRunner(), fault="bogus"))


def test_an_environment_variable_over_windows_limit_refuses_the_shell() -> None:
    """Windows caps one environment variable at 32,767 characters: a collector grown past
    it fails in the lab as it would on a real CAS, not only in production."""
    runner = EchoRunner()
    with LabServer(HostConfig("ENV", "127.0.3.61", 0, "basic", "u", "p", runner)) as server:
        protocol = winrm.Protocol(server.endpoint, transport="plaintext", username="u", password="p",
                                  ca_trust_path=None)
        shell = protocol.open_shell(env_vars={"CASAUDIT_PS": "x" * (32_767 - len("CASAUDIT_PS="))})
        protocol.close_shell(shell)
        with pytest.raises(WSManFaultError) as info:
            protocol.open_shell(env_vars={"CASAUDIT_PS": "x" * 32_767})
        assert info.value.wsman_fault_code == 87

"""Windows as Exchange 2007 runs on it (docs/lab.md): the lab refuses what each generation
refuses, and the scanner's launch (docs/launch.md) works on every one of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from labfleet import cas_audit_here as cas_audit
from labfleet import running
from lxml import etree
from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WinRMTransportError, WSManFaultError
from winrm.protocol import Protocol

from scanner import collect as collector
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import Fleet, SimServer, relocate_fleet
from scanner.lab.httpserver import HostConfig, LabServer
from scanner.lab.platforms import platform
from scanner.lab.simhost import SimulatedHost
from scanner.lab.wsman import ShellContext, WSManService
from scanner.lab.wsman_soap import ANONYMOUS, NS
from scanner.store import open_store

FLEET = Path(__file__).resolve().parent / "fleets" / "platforms.toml"
SINCE = datetime(2026, 11, 1, tzinfo=UTC)
NS_F = "{http://schemas.microsoft.com/wbem/wsman/1/wsmanfault}"


def platforms_fleet(base: str, auth: str = "ntlm") -> Fleet:
    """tests/fleets/platforms.toml on `base`; for Basic as Windows allows it over http:
    a local account and AllowUnencrypted."""
    fleet = relocate_fleet(load_fleet(FLEET), base, 0)
    if auth == "basic":
        fleet = replace(fleet, lab=replace(fleet.lab, auth="basic", domain=""),
                        servers=tuple(replace(s, account="local", allow_unencrypted=True) for s in fleet.servers))
    return fleet


@contextmanager
def one_host(server: SimServer, fleet: Fleet, **config: object) -> Iterator[tuple[LabServer, Protocol]]:
    """One server of `fleet` listening (Basic), and a pywinrm Protocol for it."""
    settings: dict[str, object] = {"platform": server.windows, "env_ignored": server.env_ignored}
    settings.update(config)
    host = LabServer(HostConfig(server.name, server.address, 0, "basic", "auditor", "lab-password",
                                SimulatedHost(server, fleet), **settings))  # type: ignore[arg-type]
    with host:
        yield host, Protocol(host.endpoint, transport="plaintext", username="auditor", password="lab-password",
                             operation_timeout_sec=1, read_timeout_sec=10, ca_trust_path=None)  # type: ignore[arg-type]


def receive_until_done(p: Protocol, shell_id: str, command_id: str) -> tuple[bytes, bytes, int]:
    out, err, code, done = p.get_command_output_raw(shell_id, command_id)
    while not done:
        more, more_err, code, done = p.get_command_output_raw(shell_id, command_id)
        out, err = out + more, err + more_err
    return out, err, code


# -- program resolution --------------------------------------------------------------------


def test_bare_program_under_skip_cmd_shell_gets_windows_fault() -> None:
    fleet = platforms_fleet("127.0.43.1")
    server = fleet.server("W3-PS1")  # C:\WINNT
    with one_host(server, fleet) as (_host, p):
        shell_id = p.open_shell()
        with pytest.raises(WSManFaultError) as caught:
            p.run_command(shell_id, "powershell.exe", ["Write-Host", "hi"], skip_cmd_shell=True)
        fault = caught.value
        assert (fault.code, fault.wsman_fault_code, fault.fault_code, fault.fault_subcode) == \
            (500, 2147942402, "s:Receiver", "w:InternalError")
        assert fault.reason == "The system cannot find the file specified. "
        provider = etree.fromstring(fault.response.encode()).find(f".//{NS_F}ProviderFault")
        assert provider is not None and provider.get("provider") == "Shell cmd plugin"
        assert provider.get("path") == "%systemroot%\\system32\\winrscmd.dll"
        # No %VARIABLE% expansion without cmd.exe either; the real full path works.
        with pytest.raises(WSManFaultError, match="cannot find the file"):
            p.run_command(shell_id, collector.POWERSHELL_PATH, ["-InputFormat", "None"], skip_cmd_shell=True)
        command_id = p.run_command(shell_id, "C:\\WINNT\\system32\\hostname.exe", skip_cmd_shell=True)
        assert receive_until_done(p, shell_id, command_id) == (b"W3-PS1\r\n", b"", 0)
        # Through cmd.exe: a guessed C:\Windows is wrong here, %SystemRoot% is right.
        command_id = p.run_command(shell_id, "C:\\Windows\\system32\\hostname.exe")
        assert receive_until_done(p, shell_id, command_id) == (
            b"", b"The system cannot find the path specified.\r\n", 1)
        command_id = p.run_command(shell_id, "%SystemRoot%\\system32\\hostname.exe")
        assert receive_until_done(p, shell_id, command_id) == (b"W3-PS1\r\n", b"", 0)
        p.close_shell(shell_id)


@pytest.mark.slow
def test_powershell_2_waits_for_stdin_until_it_is_closed() -> None:
    fleet = platforms_fleet("127.0.44.1")
    server = fleet.server("W8-PS2")
    env = collector.shell_environment(collector.collector_script(), SINCE)
    open_stdin = collector.launch_command("env").removesuffix(" < NUL")
    with one_host(server, fleet) as (host, p):
        shell_id = p.open_shell(env_vars=env)
        command_id = p.run_command(shell_id, open_stdin)
        for _ in range(3):  # each Receive ends with the operation-timeout fault: still Running
            with pytest.raises(WinRMOperationTimeoutError):
                p.get_command_output_raw(shell_id, command_id)
        p.send_command_input(shell_id, command_id, b"", end=True)
        out, _err, code = receive_until_done(p, shell_id, command_id)
        assert code == 0 and out.endswith(collector.END_MARKER.encode() + b"\n")
        # The scanner's launch closes stdin with `< NUL`: one Receive and done.
        before = host.stats.receives
        command_id = p.run_command(shell_id, collector.launch_command("env"))
        assert receive_until_done(p, shell_id, command_id)[2] == 0
        assert host.stats.receives == before + 1
        p.close_shell(shell_id)


def test_code_page_65001_silences_cmd_before_2008_r2() -> None:
    fleet = platforms_fleet("127.0.45.1")
    env = collector.shell_environment(collector.collector_script(), SINCE)
    for name, expected in (("W8-PS1", ""), ("R2-PS2", "hi\r\n")):
        host = SimulatedHost(fleet.server(name), fleet)
        utf8 = ShellContext(server=name, env=env, codepage=65001, working_directory=None)
        assert (host.run(utf8, "echo hi", [], False).stdout, host.run(utf8, "echo hi", [], False).exit_code) == \
            (expected, 0)
    host = SimulatedHost(fleet.server("W8-PS1"), fleet)
    silent = host.run(ShellContext("W8-PS1", env, 65001, None), collector.launch_command("env"), [], False)
    assert (silent.stdout, silent.exit_code) == ("", 0)  # why the scanner keeps code page 437
    oem = host.run(ShellContext("W8-PS1", env, 437, None), collector.launch_command("env"), [], False)
    assert oem.exit_code == 0 and oem.stdout.endswith(collector.END_MARKER + "\n")


# -- WinRM framing and limits ----------------------------------------------------------------


def create_body(variables: dict[str, str] | None = None) -> bytes:
    env = "".join(f'<rsp:Variable Name="{k}">{v}</rsp:Variable>' for k, v in (variables or {}).items())
    return (f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}">'
            f'<s:Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Create</a:Action>'
            f'<a:MessageID>uuid:1</a:MessageID>'
            f'<w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI></s:Header>'
            f'<s:Body><rsp:Shell><rsp:Environment>{env}</rsp:Environment></rsp:Shell></s:Body></s:Envelope>').encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(key: str, clock: Clock | None = None) -> WSManService:
    fleet = platforms_fleet("127.0.46.1")
    return WSManService("CAS", SimulatedHost(fleet.servers[0], fleet), "http://127.0.46.1:80/wsman",
                        windows=platform(key), clock=clock or Clock())


def test_create_response_framing_per_stack() -> None:
    for key, prefix, address in (("2003r2", "uuid:", ANONYMOUS), ("2008r2", "", "http://127.0.46.1:80/wsman")):
        reply = service(key).handle(create_body())
        assert reply.status == 200
        body = etree.fromstring(reply.body).find("s:Body", NS)
        assert [child.tag for child in body] == [f"{{{NS['x']}}}ResourceCreated"]  # no rsp:Shell
        assert body.findtext(".//a:Address", namespaces=NS) == address
        shell_id = body.findtext(".//w:Selector", namespaces=NS)
        assert shell_id.startswith(prefix) and len(shell_id) == len(prefix) + 36


def test_shell_quota_counts_undeleted_shells_until_their_idle_timeout() -> None:
    for key, idle in (("2008", 180), ("2008r2", 7200)):
        clock = Clock()
        wsman = service(key, clock)
        for _ in range(platform(key).max_shells_per_user):
            assert wsman.handle(create_body()).status == 200  # never deleted
        refused = wsman.handle(create_body())
        fault = etree.fromstring(refused.body)
        assert refused.status == 500
        assert fault.findtext(".//s:Subcode/s:Value", namespaces=NS) == "w:QuotaLimit"
        assert fault.find(f".//{NS_F}WSManFault").get("Code") == "2150859173"
        assert "maximum number of 5 concurrent shells" in fault.findtext(f".//{NS_F}Message")
        clock.now += idle - 1
        assert wsman.handle(create_body()).status == 500 and wsman.open_shells == 5  # still lingering
        clock.now += 2
        assert wsman.open_shells == 0 and wsman.handle(create_body()).status == 200


def test_request_over_max_envelope_size_is_refused_with_413() -> None:
    big = {f"V{i}": "x" * 30_000 for i in range(6)}  # about 180 KB: over 150 KB, under 500 KB
    assert service("2003r2").handle(create_body(big)).status == 413
    assert service("2008").handle(create_body(big)).status == 413
    assert service("2008r2").handle(create_body(big)).status == 200
    # Through pywinrm: the Create fails with HTTP 413, nothing else happened.
    fleet = platforms_fleet("127.0.47.1")
    with one_host(fleet.server("W8-PS1"), fleet) as (host, p):
        with pytest.raises(WinRMTransportError) as caught:
            p.open_shell(env_vars=big)
        assert caught.value.code == 413 and host.stats.shells_created == 0


# -- Basic as Windows allows it ---------------------------------------------------------------


@pytest.mark.parametrize(("account", "allow_unencrypted", "works"), [
    ("local", True, True), ("domain", True, False), ("local", False, False)])
def test_basic_only_for_local_accounts_and_over_http_only_with_allow_unencrypted(
        account: str, allow_unencrypted: bool, works: bool) -> None:
    fleet = platforms_fleet("127.0.48.1")
    with one_host(fleet.server("R2-PS2"), fleet, account=account, allow_unencrypted=allow_unencrypted) as (host, p):
        if works:
            p.close_shell(p.open_shell())
        else:
            with pytest.raises(InvalidCredentialsError):
                p.open_shell()
            assert host.stats.shells_created == 0 and host.stats.auth_failures == 1


# -- the organisation of every platform, scanned by the real command line -----------------------

#: Common path per server: Create, Command, Receive, Delete; NTLM adds the three requests
#: of the handshake on the fresh connection.
COMMON = {"basic": 4, "ntlm": 7}
#: The fallback on its first scan: the env launch (Command, Receive) and then, in the same
#: shell, the stdin launch (Command, Send, Receive); remembered, later scans skip the env try.
FALLBACK_FIRST = {"basic": 7, "ntlm": 10}
FALLBACK_REMEMBERED = {"basic": 5, "ntlm": 8}


@pytest.mark.slow
@pytest.mark.parametrize(("auth", "base"), [("basic", "127.0.50.1"), ("ntlm", "127.0.51.1")])
def test_every_platform_scans_completely_and_the_fallback_is_remembered(tmp_path: Path, auth: str,
                                                                        base: str) -> None:
    fleet = platforms_fleet(base, auth)
    db = f"sqlite:///{tmp_path / 'history.db'}"
    names = [s.name for s in fleet.servers]
    with running(fleet, tmp_path) as (lab, inventory):
        first = cas_audit("scan", "--inventory", str(inventory), db=db)
        counts = {name: (lab.stats(name).requests, lab.stats(name).commands, lab.stats(name).sends) for name in names}
        for name in names:
            lab.servers[name].reset_stats()
        second = cas_audit("scan", "--inventory", str(inventory), db=db)
        again = {name: (lab.stats(name).requests, lab.stats(name).commands, lab.stats(name).sends) for name in names}
        open_after = {name: lab.stats(name).shells_open for name in names}
    for scan in (first, second):
        assert scan.returncode in (0, 1), scan.stderr
        assert f"{len(names)} scanned, 0 failed" in scan.stderr
    for name in names:
        if name == "NOENV":
            assert counts[name] == (FALLBACK_FIRST[auth], 2, 1)
            assert again[name] == (FALLBACK_REMEMBERED[auth], 1, 1)
        else:
            assert counts[name] == (COMMON[auth], 1, 0), name
            assert again[name] == (COMMON[auth], 1, 0), name
        assert open_after[name] == 0, name
    with open_store(db) as store:
        assert store.launch_methods() == {name.casefold(): ("stdin" if name == "NOENV" else "env") for name in names}

    report = cas_audit("report", "--format", "json", db=db)
    assert report.returncode == 0, report.stderr
    servers = {s["name"]: s for s in json.loads(report.stdout)["servers"]}
    assert {n: s["scan_status"] for n, s in servers.items()} == dict.fromkeys(names, "ok")


def test_launch_method_memory_round_trips(store_url: str) -> None:
    with open_store(store_url) as store:
        assert store.launch_methods() == {}
        store.remember_launch("CAS01", "stdin")
        store.remember_launch("cas02", "env")
        store.remember_launch("Cas01", "env")
        assert store.launch_methods() == {"cas01": "env", "cas02": "env"}


def test_launch_method_of_a_planned_server_is_remembered_and_replaced(store_url: str) -> None:
    """A scan remembers the method of servers its run planned (their ids known from
    begin_run): the first method is stored, a later one replaces it with its time."""
    from sqlalchemy import select

    from scanner.store.models import LaunchMethod

    first, later = datetime(2026, 12, 6, 5, 0, tzinfo=UTC), datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
    with open_store(store_url) as store:
        store.begin_run(planned=[("CAS01", "cas01.contoso.local", "Berlin"), ("CAS02", "cas02.contoso.local", None)],
                        tool_version="0.1.0", operator="op", scanning_host="admin01", inventory_sha256="a" * 64)
        store.remember_launch("CAS01", "stdin", at=first)
        store.remember_launch("cas02", "env", at=first)
        assert store.launch_methods() == {"cas01": "stdin", "cas02": "env"}
        store.remember_launch("Cas01", "env", at=later)
    with open_store(store_url) as store:
        assert store.launch_methods() == {"cas01": "env", "cas02": "env"}
        with store._read("check") as session:
            times = sorted(session.scalars(select(LaunchMethod.learned_at)))
        assert times == [first, later]


def test_launch_methods_of_a_batch_are_remembered_at_once(store_url: str) -> None:
    """A scan remembers the methods its collecting threads learned with each batch of
    results, in one transaction (scan._Batch): planned servers and one the history has
    not seen yet; two names of one server keep the last method."""
    at = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    with open_store(store_url) as store:
        store.begin_run(planned=[("CAS01", "cas01.contoso.local", "Berlin"), ("CAS02", "cas02.contoso.local", None)],
                        tool_version="0.1.0", operator="op", scanning_host="admin01", inventory_sha256="a" * 64)
        store.remember_launches({"CAS01": "stdin", "CAS02": "env", "CAS03": "stdin", "cas03": "env"}, at=at)
        store.remember_launches({})
    with open_store(store_url) as store:
        assert store.launch_methods() == {"cas01": "stdin", "cas02": "env", "cas03": "env"}

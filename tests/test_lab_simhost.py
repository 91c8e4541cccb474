"""Simulated CAS hosts: what the collector, discovery and other commands print on them,
directly and through the real pywinrm against a running Lab."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree
from winrm.protocol import Protocol

from scanner.collect import (
    BADSCRIPT_MARKER,
    END_MARKER,
    MAX_EVENTS_ENV_VAR,
    NOENV_EXIT_CODE,
    NOENV_MARKER,
    SCRIPT_ENV_VAR,
    collector_script,
    discover_script,
    discovery_schema_path,
    launch_command,
    schema_path,
    shell_environment,
)
from scanner.collect.collected import CONFIG_FILE_NAMES, CollectedHost
from scanner.collect.reader import read_collector_output, read_discovery_output
from scanner.errors import CollectionError, CollectorOutputError
from scanner.facts import PROTOCOLS
from scanner.inventory import load_inventory
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import DEFAULT_CONFIG_BYTES, Fleet, SimServer, relocate_fleet, upgrade_server
from scanner.lab.serve import Lab, demo_fleet_path, serve
from scanner.lab.simhost import HUGE_BYTES, SimulatedHost, collector_document, path_combine
from scanner.lab.wsman import CommandResult, ShellContext, encode_output
from scanner.lab.wsman_faults import WSManFault
from scanner.parse.events import read_refused_logon

NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
SINCE = datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(demo_fleet_path())


def shell(env: dict[str, str] | None = None, codepage: int = 65001) -> ShellContext:
    return ShellContext(server="CAS", env=env or {}, codepage=codepage, working_directory=None)


def collect(host: SimulatedHost, since: datetime = SINCE, codepage: int | None = None, **env: str) -> CommandResult:
    """The collector's result; by default its stdout as text the way UTF-8 carries it
    (code page 65001 where cmd.exe works under it, else 437 and the bytes read back)."""
    environment = shell_environment(collector_script(), since) | env
    if codepage is not None:
        return host.run(shell(environment, codepage), launch_command("env"), [], False)
    if not host.server.windows.cmd_breaks_on_utf8:
        return host.run(shell(environment, 65001), launch_command("env"), [], False)
    result = host.run(shell(environment, 437), launch_command("env"), [], False)
    return replace(result, stdout=encode_output(result.stdout, 437).decode("utf-8"))


def schema_valid(stdout: str, schema_file) -> None:
    body, marker, rest = stdout.rpartition("\n" + END_MARKER + "\n")
    assert marker and rest == ""
    schema = etree.XMLSchema(etree.fromstring(schema_file.read_bytes()))
    schema.assertValid(etree.fromstring(body.encode("utf-8")))


def assert_matches_fleet(host: CollectedHost, server: SimServer, since: datetime) -> None:
    """Everything the reader got back is exactly what the fleet says the server is."""
    assert (host.computer, host.site, host.collected_at) == (server.name, server.site, NOW)
    assert host.setup.key == server.registry_key
    assert host.setup.install_path == server.install_path
    assert host.setup.exsetup_version == server.build and host.setup.exsetup_exists
    assert host.setup.exsetup_path == path_combine(server.install_path, "bin\\ExSetup.exe")
    assert [(r.name, r.installed) for r in host.rollups] == [(r.name, r.installed) for r in server.rollups]
    expected_events = []
    for protocol in PROTOCOLS:
        fact, config, service = server.protocols[protocol], host.configs[protocol], host.services[protocol]
        assert config.path.endswith("\\ClientAccess\\PopImap\\" + CONFIG_FILE_NAMES[protocol])
        assert "\\\\" not in config.path
        assert config.content == fact.config_bytes and config.exists == (fact.config_bytes is not None)
        assert config.modified == (fact.modified.replace(microsecond=0) if fact.modified else None)
        assert service.exists == (fact.service != "absent")
        assert service.status == ("" if fact.service == "absent" else fact.service)
        assert service.started == (fact.started if fact.has_process else None)
        assert (service.process_id is not None) == fact.has_process
        expected_events += [(logon.at, logon.user, logon.mailbox_site, protocol)
                            for logon in fact.refused_logons if logon.at > since]
    expected_events.sort(reverse=True)
    got = [(e.at, read_refused_logon(e).user, read_refused_logon(e).mailbox_site, e.protocol) for e in host.events]
    assert got == expected_events
    for event in host.events:
        assert event.insertions[2] == server.name
        said = read_refused_logon(event)
        assert said.source == "message" and said.cas == server.name
    assert host.events_since == since and not host.events_truncated and host.errors == ()


# -- the collector -----------------------------------------------------------------------


def test_collector_answer_validates_and_round_trips_for_every_demo_server(fleet: Fleet) -> None:
    scanned = 0
    for server in fleet.servers:
        if server.fault:
            continue
        result = collect(SimulatedHost(server, fleet, clock=lambda: NOW))
        assert (result.exit_code, result.stderr) == (0, "")
        schema_valid(result.stdout, schema_path())
        assert_matches_fleet(read_collector_output(result.stdout.encode("utf-8")), server, SINCE)
        scanned += 1
    assert scanned >= 8


def test_registry_path_and_versions_as_a_real_host_has_them(fleet: Fleet) -> None:
    def read(name: str) -> CollectedHost:
        result = collect(SimulatedHost(fleet.server(name), fleet, clock=lambda: NOW))
        return read_collector_output(result.stdout.encode("utf-8"))

    german = read("CAS02")
    assert german.configs["pop3"].path == ("C:\\Programme\\Microsoft\\Exchange Server\\ClientAccess\\PopImap\\"
                                           "Microsoft.Exchange.Pop3.exe.Config")
    other_drive = read("CAS03")
    assert other_drive.setup.key == "v8.0\\Setup"
    assert other_drive.configs["imap4"].path.startswith("D:\\Exchange Server\\ClientAccess\\")
    rollup = read("CAS01")  # SP3 RU23: the file version moves, the Setup key keeps the SP build
    assert rollup.setup.exsetup_version == "8.3.517.0"
    assert (rollup.setup.product_major, rollup.setup.product_minor,
            rollup.setup.build_major, rollup.setup.build_minor) == ("8", "3", "83", "6")


def test_events_are_filtered_by_since_and_capped(fleet: Fleet) -> None:
    host = SimulatedHost(fleet.server("CAS07"), fleet, clock=lambda: NOW)
    everything = read_collector_output(collect(host, since=datetime(2020, 1, 1, tzinfo=UTC)).stdout.encode())
    assert len(everything.events) == 4 and not everything.events_truncated
    later = read_collector_output(collect(host, since=datetime(2026, 11, 26, 8, 15, 44, tzinfo=UTC)).stdout.encode())
    assert [read_refused_logon(e).user for e in later.events] == ["CONTOSO\\b.günther"]  # strictly newer than the cut-off
    capped = read_collector_output(collect(host, since=datetime(2020, 1, 1, tzinfo=UTC),
                                           **{MAX_EVENTS_ENV_VAR: "2"}).stdout.encode())
    assert capped.events_truncated and [e.at for e in capped.events] == [e.at for e in everything.events[:2]]


def test_a_bad_event_cap_is_trapped_like_the_script_does(fleet: Fleet) -> None:
    host = SimulatedHost(fleet.server("CAS07"), fleet, clock=lambda: NOW)
    result = collect(host, **{MAX_EVENTS_ENV_VAR: "many"})
    schema_valid(result.stdout, schema_path())
    read = read_collector_output(result.stdout.encode())
    assert read.errors and read.errors[0][0] == "events" and "System.Int32" in read.errors[0][1]
    assert 'max="200"' in result.stdout


def test_hostile_names_are_escaped_like_securityelement_escape(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[lab]\nusername = "auditor"\npassword = "pw"\n[[server]]\nname = "CAS01"\n'
                    'site = "R&D <\\"Süd\\"> \'x\'"\n[server.pop3]\nconfig = "<c/>"\n'
                    'refused_logons = [ { user = "O\'Brien & <b>\\u0001", at = 2026-11-27T00:00:00Z, '
                    'mailbox_site = "Köln" } ]\n', encoding="utf-8")
    fleet = load_fleet(path)
    result = collect(SimulatedHost(fleet.servers[0], fleet, clock=lambda: NOW))
    assert "&quot;Süd&quot;" in result.stdout and "&apos;x&apos;" in result.stdout
    read = read_collector_output(result.stdout.encode("utf-8"))
    assert read.site == 'R&D <"Süd"> \'x\''
    assert read_refused_logon(read.events[0]).user == "O'Brien & <b>?"  # control characters become '?'


def test_output_is_raw_utf8_whatever_the_code_page(fleet: Fleet) -> None:
    host = SimulatedHost(fleet.server("CAS01"), fleet, clock=lambda: NOW)  # 2008 R2: cmd.exe works under 65001
    utf8 = collect(host, codepage=65001).stdout
    oem = collect(host, codepage=437).stdout
    assert oem.encode("cp437") == utf8.encode("utf-8")  # what the transport sends for code page 437


def test_replace_answers_as_the_upgraded_server(fleet: Fleet) -> None:
    host = SimulatedHost(fleet.server("CAS05"), fleet, clock=lambda: NOW)
    upgraded = upgrade_server(fleet, "CAS05", "8.3.83.6", NOW)
    host.replace(upgraded.server("CAS05"), upgraded)
    read = read_collector_output(collect(host).stdout.encode())
    assert read.setup.exsetup_version == "8.3.83.6"
    assert all(read.configs[p].content == DEFAULT_CONFIG_BYTES for p in PROTOCOLS)


# -- application faults --------------------------------------------------------------------


def faulty(fleet: Fleet, fault: str) -> SimulatedHost:
    return SimulatedHost(replace(fleet.server("CAS01"), fault=fault), fleet, clock=lambda: NOW)


def test_garbage_is_not_a_document(fleet: Fleet) -> None:
    result = collect(faulty(fleet, "garbage"))
    assert result.exit_code == 0 and "<casaudit" not in result.stdout
    with pytest.raises(CollectorOutputError, match="end marker"):
        read_collector_output(result.stdout.encode("utf-8"))


def test_truncate_cuts_the_document_without_end_marker(fleet: Fleet) -> None:
    result = collect(faulty(fleet, "truncate"))
    assert result.exit_code == 0 and result.stdout.startswith("<casaudit") and END_MARKER not in result.stdout
    with pytest.raises(CollectorOutputError, match="end marker"):
        read_collector_output(result.stdout.encode("utf-8"))


def test_huge_is_refused_by_size(fleet: Fleet) -> None:
    result = collect(faulty(fleet, "huge"))
    data = result.stdout.encode("utf-8")
    assert result.exit_code == 0 and len(data) >= HUGE_BYTES * 0.95
    assert data.startswith(b"<casaudit") and data.endswith(f"</casaudit>\n{END_MARKER}\n".encode())
    with pytest.raises(CollectorOutputError, match="limit"):
        read_collector_output(data)


def test_script_error_is_a_powershell_error_record(fleet: Fleet) -> None:
    result = collect(faulty(fleet, "script-error"))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Get-ItemProperty : Cannot find path 'HKLM:\\SOFTWARE\\Microsoft\\Exchange\\Setup'")
    assert "\r\nAt line:1 char:" in result.stderr


# -- the domain around the CAS: Netlogon's site, the second hop -------------------------------


def host_of(server: SimServer, fleet: Fleet) -> CollectedHost:
    return read_collector_output(collect(SimulatedHost(server, fleet)).stdout.encode("utf-8"))


@pytest.mark.parametrize("value", ["SiteName", "DynamicSiteName"])
def test_the_site_comes_from_the_netlogon_value_that_holds_it(fleet: Fleet, value: str) -> None:
    server = replace(fleet.server("CAS05"), site_value=value)
    host = host_of(server, fleet)
    assert (host.site, host.site_source, host.errors) == ("Hamburg", value, ())


def test_without_either_netlogon_value_the_site_is_unknown_with_the_reason(fleet: Fleet) -> None:
    host = host_of(replace(fleet.server("CAS05"), site_value="none"), fleet)
    assert (host.site, host.site_source) == ("", "")
    [(stage, message)] = host.errors
    assert stage == "site" and "SiteName or DynamicSiteName" in message and "unknown" in message


def test_getcomputersite_in_a_session_without_delegation_gets_the_operations_error(fleet: Fleet) -> None:
    # The collector as it was before it read Netlogon: it asked a domain controller.
    old = collector_script().replace(
        "$site = ''; $sf = ''", "$site = [System.DirectoryServices.ActiveDirectory.ActiveDirectorySite]"
        "::GetComputerSite().Name; $sf = ''")
    server = fleet.server("CAS01")
    text = collector_document(server, {}, NOW, script=old, delegated=False)
    assert '<host computer="CAS01" site=""/>' in text
    assert ('<error stage="site" message="Exception calling &quot;GetComputerSite&quot; with &quot;0&quot; '
            'argument(s): &quot;An operations error occurred.\r\n&quot;"/>') in text
    assert '<host computer="CAS01" site="Berlin"/>' in collector_document(server, {}, NOW, script=old, delegated=True)


def test_get_exchangeserver_without_delegated_credentials_lists_nothing(fleet: Fleet) -> None:
    env = shell_environment(discover_script(), SINCE)
    assert not shell(env).delegated  # NTLM, Basic, Kerberos without a forwarded ticket
    result = SimulatedHost(fleet.server("CAS01"), fleet).run(shell(env), launch_command("env", script=discover_script()),
                                                             [], False)
    schema_valid(result.stdout, discovery_schema_path())
    with pytest.raises(CollectionError, match="stage 'servers': An operations error occurred"):
        read_discovery_output(result.stdout.encode("utf-8"))


# -- discovery and other commands ------------------------------------------------------------


def test_discovery_lists_every_cas_of_the_fleet(fleet: Fleet) -> None:
    env = shell_environment(discover_script(), SINCE)
    delegated = replace(shell(env), delegated=True)  # a logon with a forwarded Kerberos ticket
    result = SimulatedHost(fleet.server("CAS01"), fleet).run(delegated, launch_command("env", script=discover_script()),
                                                             [], False)
    schema_valid(result.stdout, discovery_schema_path())
    found = {s.name: s for s in read_discovery_output(result.stdout.encode("utf-8"))}
    assert list(found) == [s.name for s in fleet.servers]
    assert found["CAS05"].version == "Version 8.1 (Build 240.6)"
    assert found["CAS01"].version == "Version 8.3 (Build 83.6)"  # a rollup does not change it
    assert found["CAS09"].roles == ("ClientAccess", "HubTransport")
    assert (found["CAS07"].site, found["CAS07"].fqdn) == ("Hamburg", "cas07.contoso.lab")


def test_unknown_programs_answer_like_cmd_exe_and_createprocess(fleet: Fleet) -> None:
    host = SimulatedHost(fleet.server("CAS01"), fleet)
    result = host.run(shell(), "foo", ["/bar"], False)
    assert result == CommandResult("", "'foo' is not recognized as an internal or external command,\r\n"
                                       "operable program or batch file.\r\n", 1)
    with pytest.raises(WSManFault, match="cannot find the file"):
        host.run(shell(), "foo.exe", [], True)
    assert host.run(shell(), "hostname", [], False) == CommandResult("CAS01\r\n", "", 0)
    assert host.run(shell(), "C:\\Windows\\system32\\cmd.exe", ["/c", "hostname"], True).stdout == "CAS01\r\n"
    with pytest.raises(WSManFault, match="cannot find the file"):
        host.run(shell(), "cmd.exe", ["/c", "hostname"], True)  # no PATH search without cmd.exe


def test_other_powershell_scripts_fail_like_powershell(fleet: Fleet) -> None:
    host = SimulatedHost(fleet.server("CAS01"), fleet)
    encoded = base64.b64encode("Get-Mailbox | fl".encode("utf-16-le")).decode()
    result = host.run(shell(), "powershell", ["-encodedcommand", encoded, "< NUL"], False)
    assert result.exit_code == 1 and "The term 'Get-Mailbox' is not recognized" in result.stderr
    other_script = "Remove-Item C:\\ -Recurse"
    other = host.run(shell({SCRIPT_ENV_VAR: other_script}), launch_command("env", script=other_script), [], False)
    assert other.exit_code == 1 and other.stdout == ""
    line = launch_command("env")
    # the bootstrap runs only the script it was made for: any other value is refused unrun
    changed = host.run(shell({SCRIPT_ENV_VAR: other_script}), line, [], False)
    assert (changed.stdout, changed.exit_code) == (BADSCRIPT_MARKER, NOENV_EXIT_CODE)
    nothing = host.run(shell(), line, [], False)
    assert (nothing.stdout, nothing.exit_code) == (NOENV_MARKER, NOENV_EXIT_CODE)
    # A full path starts without cmd.exe, but then nothing closes PowerShell 2.0's stdin.
    args = line.split(" ", 1)[1].removesuffix(" < NUL").split()
    path_form = host.run(shell(shell_environment(collector_script(), SINCE)),
                         "C:\\WINDOWS\\system32\\WindowsPowerShell\\v1.0\\PowerShell.EXE", args, True)
    assert path_form.stdin is not None and path_form.stdout == ""
    finished = path_form.stdin(b"")
    assert finished.exit_code == 0 and finished.stdout.endswith(END_MARKER + "\n")


# -- a running lab, through the real pywinrm ------------------------------------------------------


def small_fleet(tmp_path: Path, auth: str, base: str) -> Fleet:
    text = demo_fleet_path().read_text(encoding="utf-8")
    path = tmp_path / "fleet.toml"
    lab = f'auth = "{auth}"' + ('\naccount = "local"\nallow_unencrypted = true' if auth == "basic" else "")
    path.write_text(text.replace('auth = "ntlm"', lab), encoding="utf-8")
    shutil.copytree(demo_fleet_path().parent / "demo-configs", tmp_path / "demo-configs")
    return relocate_fleet(load_fleet(path), base, 0)


def winrm_collect(lab: Lab, name: str, auth: str) -> bytes:
    user = "CONTOSO\\auditor" if auth == "ntlm" else "auditor"
    protocol = Protocol(lab.servers[name].endpoint, transport=auth, username=user,  # type: ignore[arg-type]
                        password="lab-password", message_encryption="auto", read_timeout_sec=30,
                        operation_timeout_sec=20, proxy=None, ca_trust_path=None)  # type: ignore[arg-type]
    shell_id = protocol.open_shell(env_vars=shell_environment(collector_script(), SINCE))
    command_id = protocol.run_command(shell_id, launch_command("env"))
    stdout, stderr, code = protocol.get_command_output(shell_id, command_id)
    protocol.close_shell(shell_id)
    assert (code, stderr) == (0, b"")
    return stdout


@pytest.mark.parametrize(("auth", "base"), [("basic", "127.0.88.1"), ("ntlm", "127.0.89.1")])
def test_collection_through_pywinrm_round_trips(tmp_path: Path, auth: str, base: str) -> None:
    fleet = small_fleet(tmp_path, auth, base)
    with Lab(fleet) as lab:
        for name in ("CAS02", "CAS07"):
            host = read_collector_output(winrm_collect(lab, name, auth))
            server = fleet.server(name)
            assert host.computer == name and host.site == server.site
            for protocol in PROTOCOLS:
                assert host.configs[protocol].content == server.protocols[protocol].config_bytes
            assert [read_refused_logon(e).user for e in host.events] == [
                lo.user for lo in sorted((lo for p in server.protocols.values() for lo in p.refused_logons
                                          if lo.at > SINCE), key=lambda lo: lo.at, reverse=True)]
        assert lab.stats("CAS07").commands == 1
        upgraded = upgrade_server(fleet, "CAS05", "8.3.83.6", NOW)
        assert read_collector_output(winrm_collect(lab, "CAS05", auth)).setup.exsetup_version == "8.1.240.6"
        lab.replace_fleet(upgraded)
        after = read_collector_output(winrm_collect(lab, "CAS05", auth))
        assert after.setup.exsetup_version == "8.3.83.6" and after.configs["pop3"].content == DEFAULT_CONFIG_BYTES
        refused = lab.servers["CAS08"]
        host, port = refused.config.address, int(refused.endpoint.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(OSError):
            socket.create_connection((host, port), timeout=2).close()


def test_serve_writes_an_inventory_without_password_and_stops(tmp_path: Path) -> None:
    fleet_path = tmp_path / "fleet.toml"
    fleet_path.write_text('[lab]\nusername = "auditor"\npassword = "lab-password"\nauth = "basic"\n'
                          'base_address = "127.0.90.1"\nport = 0\n'
                          '[[server]]\nname = "CAS01"\nsite = "Berlin"\n'
                          '[[server]]\nname = "CAS02"\nsite = "Hamburg"\nfault = "refuse"\n', encoding="utf-8")
    inventory_path = tmp_path / "out" / "inventory.toml"
    stop, out = threading.Event(), io.StringIO()
    worker = threading.Thread(target=serve, args=(fleet_path, inventory_path), kwargs={"stop_event": stop, "out": out})
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not inventory_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        text = inventory_path.read_text(encoding="utf-8")
        assert "lab-password" not in text
        data = tomllib.loads(text)
        assert data["defaults"]["auth"] == "basic" and data["defaults"]["allow_insecure"] is True
        assert [(s["name"], s["address"], s["site"]) for s in data["server"]] == [
            ("CAS01", "127.0.90.1", "Berlin"), ("CAS02", "127.0.90.2", "Hamburg")]
        targets = load_inventory(inventory_path).targets
        endpoint = targets[0].endpoint
        port = int(endpoint.rsplit(":", 1)[1].split("/")[0])
        socket.create_connection(("127.0.90.1", port), timeout=2).close()  # listening
    finally:
        stop.set()
        worker.join(timeout=10)
    assert not worker.is_alive()
    printed = out.getvalue()
    assert "CAS01" in printed and "refuse" in printed and "lab-password" not in printed
    with pytest.raises(OSError):
        socket.create_connection(("127.0.90.1", port), timeout=2).close()


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = {t.name for t in threading.enumerate()}
    yield
    lab_threads = [t for t in threading.enumerate() if t.name.startswith("lab-") and t.name not in before]
    assert not lab_threads, f"listener threads left running: {lab_threads}"

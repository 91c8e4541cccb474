"""`cas-audit preflight` against the lab: per platform the WinRM stack, the OS and the
PowerShell version; for a refused connection, a rejected logon, a scheme the server does
not offer and an untrusted TLS certificate the right problem with the right hint."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pslint
import pytest
import tomli_w
from labfleet import cas_audit_here, running

import scanner.collect as collector
from scanner.collect.preflight import offered_schemes, parse_identify
from scanner.lab.fleet import load_fleet
from scanner.lab.platforms import PLATFORM_TABLE
from scanner.lab.wsman_identify import anonymous_product_version, identify_response, is_identify

FLEETS = Path(__file__).parent / "fleets"
# name -> (winrm, os, powershell) as the fleet's platform table makes them
EXPECTED = {
    "W2003PS1": ("1.1", "5.2.3790 SP 2.0", "1.0"),
    "W2003PS2": ("1.1", "5.2.3790 SP 2.0", "2.0"),
    "W2008PS1": ("1.1", "6.0.6002 SP 2.0", "1.0"),
    "W2008PS2": ("1.1", "6.0.6002 SP 2.0", "2.0"),
    "W2008R2": ("2.0", "6.1.7601 SP 1.0", "2.0"),
}


def preflight_json(inventory: Path, password: str = "lab-password") -> tuple[int, dict[str, dict[str, Any]], str]:
    run = cas_audit_here("preflight", "--inventory", str(inventory), "--format", "json", "--timeout", "30",
                         password=password)
    assert run.returncode in (0, 3), run.stderr
    data = json.loads(run.stdout)
    assert password not in run.stdout + run.stderr
    return run.returncode, {s["name"]: s for s in data["servers"]}, run.stderr


def write_inventory(path: Path, defaults: dict[str, Any], servers: list[dict[str, Any]]) -> Path:
    path.write_text(tomli_w.dumps({"defaults": defaults, "server": servers}), encoding="utf-8")
    return path


@pytest.mark.slow
def test_every_platform_reports_winrm_os_and_powershell(tmp_path: Path) -> None:
    with running(load_fleet(FLEETS / "preflight_platforms.toml"), tmp_path) as (lab, inventory):
        code, servers, _ = preflight_json(inventory)
        stats = {name: (lab.stats(name).actions["Identify"], lab.stats(name).shells_open,
                        lab.stats(name).commands) for name in EXPECTED}
        table = cas_audit_here("preflight", "--inventory", str(inventory))
        ports = {name: lab.port(name) for name in EXPECTED}
    assert code == 3  # DOWN refuses connections
    keys = {"name", "address", "ready", "winrm", "os", "auth_offered", "powershell", "problems"}
    for name, (winrm, os_version, powershell) in EXPECTED.items():
        s = servers[name]
        assert keys <= set(s)
        assert (s["ready"], s["winrm"], s["os"], s["powershell"], s["problems"]) == (
            True, winrm, os_version, powershell, []), s
        assert s["auth_offered"] == ["Negotiate"] and s["port"] == ports[name]
        # Identify twice (anonymous, then after logon), one shell created and deleted, and the
        # version script through the collector's launch: nothing runs the collector itself
        assert stats[name] == (2, 0, 1)
    down = servers["DOWN"]
    assert down["ready"] is False and (down["winrm"], down["os"], down["powershell"]) == (None, None, None)
    (problem,) = down["problems"]
    assert "connection refused" in problem["what"] and "winrm quickconfig" in problem["hint"]
    assert "WinRM 1.1 listens on port 80" in problem["hint"]
    assert table.returncode == 3 and "W2003PS1" in table.stdout and "winrm quickconfig" in table.stdout


@pytest.mark.slow
def test_a_rejected_logon_and_a_scheme_not_offered_get_their_hints(tmp_path: Path) -> None:
    with running(load_fleet(FLEETS / "preflight_platforms.toml"), tmp_path) as (lab, _):
        address, port = "127.0.122.5", lab.port("W2008R2")
        ntlm = write_inventory(tmp_path / "ntlm.toml", {"username": "CONTOSO\\auditor", "auth": "ntlm",
                                                         "scheme": "http", "port": port},
                               [{"name": "W2008R2", "address": address}])
        _, wrong, _ = preflight_json(ntlm, password="not-the-password")
        basic = write_inventory(tmp_path / "basic.toml", {"username": "auditor", "auth": "basic", "scheme": "http",
                                                           "port": port, "allow_insecure": True},
                                [{"name": "W2008R2", "address": address}])
        _, unoffered, _ = preflight_json(basic)
    s = wrong["W2008R2"]
    assert s["ready"] is False and s["winrm"] == "2.0"  # the anonymous Identify still answered
    (problem,) = s["problems"]
    assert "refused the logon of CONTOSO\\auditor" in problem["what"]
    assert "CAS_AUDIT_PASSWORD" in problem["hint"]
    (problem,) = unoffered["W2008R2"]["problems"]
    assert problem["what"] == "the server does not offer basic authentication (it offers Negotiate)"
    assert 'Basic="true"' in problem["hint"] and 'auth = "ntlm"' in problem["hint"]


# -- TLS: a TLS front for one lab server, with a self-signed certificate --------------------


def self_signed(folder: Path, address: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cas-lab.contoso.lab")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def tls_front(address: str, backend: tuple[str, int], cert: Path, key: Path) -> Iterator[int]:
    """An HTTPS listener on `address` forwarding each connection to the lab's http port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server((address, 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(30)
            try:
                client = context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            upstream = socket.create_connection(backend)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


@pytest.mark.slow
def test_tls_certificate_untrusted_then_trusted_through_ca_bundle(tmp_path: Path) -> None:
    with running(load_fleet(FLEETS / "preflight_basic.toml"), tmp_path) as (lab, _):
        address = "127.0.124.1"
        cert, key = self_signed(tmp_path, address)
        with tls_front(address, (address, lab.port("TLS01")), cert, key) as port:
            defaults = {"username": "auditor", "auth": "basic", "scheme": "https", "port": port}
            plain = write_inventory(tmp_path / "tls.toml", defaults, [{"name": "TLS01", "address": address}])
            _, untrusted, _ = preflight_json(plain)
            bundle = write_inventory(tmp_path / "bundle.toml", {**defaults, "ca_bundle": str(cert)},
                                     [{"name": "TLS01", "address": address}])
            _, trusted, _ = preflight_json(bundle)
    s = untrusted["TLS01"]
    assert s["ready"] is False and s["certificate"]["verified"] is False
    assert s["certificate"]["subject"] == "CN=cas-lab.contoso.lab"
    (problem,) = s["problems"]
    assert "certificate of 127.0.124.1 is not trusted" in problem["what"] and "self-signed" in problem["what"]
    assert "ca_bundle" in problem["hint"]
    t = trusted["TLS01"]
    assert t["ready"] is True and t["certificate"]["verified"] is True and t["problems"] == []
    assert (t["winrm"], t["powershell"], t["scheme"], t["port"]) == ("2.0", "2.0", "https", port)
    assert t["certificate"]["not_after"].endswith("Z")


@pytest.mark.slow
def test_without_anonymous_identify_the_stack_comes_from_the_logon(tmp_path: Path) -> None:
    with running(load_fleet(FLEETS / "preflight_platforms.toml"), tmp_path) as (lab, inventory):
        lab.servers["W2003PS1"].config.anonymous_identify = False
        _, servers, _ = preflight_json(inventory)
    s = servers["W2003PS1"]
    assert (s["ready"], s["winrm"], s["os"]) == (True, "1.1", "5.2.3790 SP 2.0")


# -- the pieces ------------------------------------------------------------------------------


def test_identify_as_windows_writes_it_reads_back() -> None:
    # The unauthenticated answer as recorded from a real WinRM 2.0 host (chef/knife-windows,
    # spec/unit/knife/wsman_test_spec.rb): the OS zeroed, the stack shown.
    recorded = (b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header/><s:Body>'
                b'<wsmid:IdentifyResponse xmlns:wsmid="http://schemas.dmtf.org/wbem/wsman/identity/1/'
                b'wsmanidentity.xsd"><wsmid:ProtocolVersion>http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd'
                b"</wsmid:ProtocolVersion><wsmid:ProductVendor>Microsoft Corporation</wsmid:ProductVendor>"
                b"<wsmid:ProductVersion>OS: 0.0.0 SP: 0.0 Stack: 2.0</wsmid:ProductVersion>"
                b"</wsmid:IdentifyResponse></s:Body></s:Envelope>")
    assert parse_identify(recorded) == (None, "2.0")
    assert parse_identify(identify_response(anonymous_product_version("2.0"))) == (None, "2.0")
    for plat in PLATFORM_TABLE.values():
        os_version, stack = parse_identify(identify_response(plat.product_version))
        assert stack == plat.winrm and os_version == plat.os_version.replace("SP: ", "SP ")
    # Microsoft's example writes "Stack:1.0" without a space
    assert parse_identify(identify_response("OS: 6.0.5384 SP: 0.0 Stack:1.0")) == ("6.0.5384 SP 0.0", "1.0")
    for hostile in (b"", b"<x/>", b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", b"\xff" * 10, b"<a>" * 100000):
        assert parse_identify(hostile) == (None, None)


def test_the_lab_knows_an_identify_request() -> None:
    from scanner.collect.winrm_client import IDENTIFY_REQUEST

    assert is_identify(IDENTIFY_REQUEST.encode())
    assert not is_identify(b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'><s:Body/></s:Envelope>")
    assert not is_identify(b"not xml")


@pytest.mark.parametrize(
    ("values", "names"),
    [(['Basic realm="WSMAN"'], ["Basic"]),
     (["Negotiate", "Kerberos"], ["Negotiate", "Kerberos"]),
     (['Negotiate, Basic realm="WSMAN, Kerberos"', "CredSSP"], ["Negotiate", "Basic", "CredSSP"]),
     (["Negotiate TlRMTVNTUAACAAAA"], ["Negotiate"]),
     ([], [])],
)
def test_offered_schemes(values: list[str], names: list[str]) -> None:
    assert offered_schemes(values) == names


def test_version_script_is_powershell_1() -> None:
    text = (Path(collector.__file__).parent / "psversion.ps1").read_text(encoding="utf-8")
    assert text.isascii() and pslint.syntax_errors(text) == [] and pslint.lint(text) == []
    assert collector.END_MARKER in collector.version_script()

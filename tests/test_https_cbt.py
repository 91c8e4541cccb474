"""NTLM over https against a WinRM service that requires channel binding
(CbtHardeningLevel = Strict, docs/lab.md "https and channel binding"): requests_ntlm binds
the NTLM AUTHENTICATE message to the certificate it reads from the 401 challenge's
connection, which httpguard leaves unread, so the scan logs on at the first attempt.
(Kerberos over https: tests/test_kerberos.py.)"""

from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import replace
from pathlib import Path

import requests
import spnego
from labfleet import cas_audit_here, demo_fleet, running
from spnego.channel_bindings import GssChannelBindings
from tlscert import write_self_signed

from scanner.lab.fleet_model import Fleet

ADDRESS = "127.0.183.1"


def _https_fleet(folder: Path, level: str) -> Fleet:
    fleet = demo_fleet(ADDRESS)
    server = fleet.servers[0]
    write_self_signed(folder / "lab.pem", folder / "lab.key", server.address)
    lab = replace(fleet.lab, tls_cert=str(folder / "lab.pem"), tls_key=str(folder / "lab.key"), cbt_hardening=level)
    return replace(fleet, lab=lab, servers=(server,))


def test_ntlm_over_https_carries_the_channel_binding_a_strict_service_requires(tmp_path: Path) -> None:
    fleet = _https_fleet(tmp_path, "strict")
    with running(fleet, tmp_path) as (lab, inventory):
        assert 'scheme = "https"' in inventory.read_text(encoding="utf-8")
        scan = cas_audit_here("scan", "--inventory", str(inventory), db=f"sqlite:///{tmp_path / 'h.db'}")
        stats = lab.stats(fleet.servers[0].name)
    assert scan.returncode in (0, 1), scan.stdout + scan.stderr
    assert "1 scanned, 0 failed" in scan.stderr, scan.stderr
    assert "Warning" not in scan.stderr, scan.stderr
    assert stats.auth_failures == 0


def _ntlm_logon(url: str, cert: str, username: str, bindings: GssChannelBindings | None) -> int:
    """An NTLM logon on one connection (negotiate, challenge, authenticate) with these bindings."""
    client = spnego.client(username, "lab-password", hostname=ADDRESS, service="http", protocol="ntlm",
                           channel_bindings=bindings)
    with requests.Session() as session:
        token = client.step()
        answer = session.post(url, data=b"", verify=cert, timeout=30,
                              headers={"Authorization": "Negotiate " + base64.b64encode(token or b"").decode()})
        challenge = answer.headers.get("WWW-Authenticate", "").split(" ", 1)[-1]
        token = client.step(base64.b64decode(challenge))
        answer = session.post(url, data=b"", verify=cert, timeout=30,
                              headers={"Authorization": "Negotiate " + base64.b64encode(token or b"").decode()})
        return answer.status_code


def test_the_strict_lab_refuses_an_ntlm_logon_with_a_wrong_or_no_channel_binding(tmp_path: Path) -> None:
    fleet = _https_fleet(tmp_path, "strict")
    with running(fleet, tmp_path) as (lab, _inventory):
        name = fleet.servers[0].name
        url, cert = lab.servers[name].endpoint, fleet.lab.tls_cert
        user = f"{fleet.lab.domain}\\{fleet.lab.username}" if fleet.lab.domain else fleet.lab.username
        der = ssl.PEM_cert_to_DER_cert(Path(cert).read_text(encoding="ascii"))
        right = GssChannelBindings(application_data=b"tls-server-end-point:" + hashlib.sha384(der).digest())
        wrong = GssChannelBindings(application_data=b"tls-server-end-point:" + bytes(48))
        assert _ntlm_logon(url, cert, user, right) == 200
        assert _ntlm_logon(url, cert, user, wrong) == 401
        assert _ntlm_logon(url, cert, user, None) == 401
        assert lab.stats(name).auth_failures == 2

"""`inventory discover --ldap` against a real Active Directory domain controller: Samba's AD
DC on loopback (tests/samba_dc.py), holding the Exchange configuration objects the query
reads (tests/directory/*.ldif, every attribute cited in docs/exchange-facts.md).

Binds tested here: simple over LDAPS and over StartTLS, Kerberos (SASL GSSAPI, with a ticket
from Samba's own KDC) over LDAPS. NTLM: Samba drops ldap3's NTLM (Sicily) bind, which
Active Directory accepts, so against Samba only its error message is tested.

Where Samba cannot run (not installed, not root), these tests skip with the reason; in CI
(CI=true) they fail instead. The Kerberos and scan tests also need the DC's and the lab's
host names to resolve: tests/kdc.py's hosts_entries adds them to /etc/hosts as root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kdc import hosts_entries
from labfleet import cas_audit_here, many_servers
from samba_dc import DIRECTORY, Account, SambaDC, free_loopback_address, missing

from scanner.cli import cli
from scanner.collect.discovery import InventorySettings, discover_inventory_ldap
from scanner.collect.ldapclient import DirectoryAccess
from scanner.errors import CollectionError
from scanner.inventory import load_inventory
from scanner.lab.fleet_model import relocate_fleet
from scanner.lab.serve import Lab

pytestmark = pytest.mark.slow   # one Samba DC per session (a provision, about 5 s of CPU, unless templated)

REALM = "CONTOSO.TEST"
DOMAIN = "contoso.test"
PASSWORD = "lab-password"       # the lab's: one CAS_AUDIT_PASSWORD for the directory and the lab
USER = "CONTOSO\\auditor"
CONTOSO = "CN=Contoso,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=contoso,DC=test"
HOSTILE = "CN=Hostile,CN=Services,CN=Configuration,DC=contoso,DC=test"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the Samba AD DC cannot run in CI: {reason} (.ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaDC]:
    reason = missing()
    if reason:
        _unavailable(reason)
    dc = SambaDC(tmp_path_factory.mktemp("samba-dc"), realm=REALM, netbios="CONTOSO", host="dc1",
                 address=free_loopback_address(), account=Account("auditor", PASSWORD),
                 admin_password="Adm1n-Passw0rd!")
    dc.create(DIRECTORY / "exchange-org.ldif", DIRECTORY / "hostile-org.ldif")
    dc.start()
    try:
        yield dc
    finally:
        dc.stop()


def discover(dc: SambaDC, out: Path, *args: str, password: str = PASSWORD) -> Result:
    """The command in this process (CliRunner): LDAPS to the DC's address, its CA trusted."""
    return CliRunner().invoke(
        cli, ["inventory", "discover", "--ldap", dc.address, "--ldap-ca-bundle", str(dc.ca_pem),
              "--username", USER, "--ldap-auth", "simple", "--scheme", "http", "--out", str(out), *args],
        env={"CAS_AUDIT_PASSWORD": password}, prog_name="cas-audit")


def test_ldaps_simple_bind_writes_every_cas_with_its_site(samba_dc: SambaDC, tmp_path: Path) -> None:
    out = tmp_path / "cas.toml"
    result = discover(samba_dc, out)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "3 Client Access Server(s)" in result.output
    inventory = load_inventory(out)
    # MBX01 (Mailbox only) and EX2003 (no role mask: Exchange 2003) are no Client Access Servers
    assert [(t.name, t.address, t.site) for t in inventory.targets] == [
        ("CAS01", "cas01.contoso.test", "Berlin"), ("CAS02", "cas02.contoso.test", "Hamburg"),
        ("CAS03", "cas03.contoso.test", "Berlin")]
    assert {(t.username, t.auth, t.scheme) for t in inventory.targets} == {(USER, "ntlm", "http")}
    text = out.read_text(encoding="utf-8")
    assert PASSWORD not in text
    assert "CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=contoso,DC=test" in text  # the base from rootDSE


def test_starttls_reads_the_same(samba_dc: SambaDC, tmp_path: Path) -> None:
    out = tmp_path / "cas.toml"
    result = discover(samba_dc, out, "--ldap-transport", "starttls", "--base", CONTOSO)
    assert result.exit_code == 0, result.output
    assert [t.name for t in load_inventory(out).targets] == ["CAS01", "CAS02", "CAS03"]


def test_an_unknown_certificate_authority_is_refused(samba_dc: SambaDC, tmp_path: Path) -> None:
    out = tmp_path / "cas.toml"
    result = CliRunner().invoke(
        cli, ["inventory", "discover", "--ldap", samba_dc.address, "--username", USER, "--ldap-auth", "simple",
              "--out", str(out)], env={"CAS_AUDIT_PASSWORD": PASSWORD}, prog_name="cas-audit")
    assert result.exit_code == 3, result.output
    assert "could not be verified" in result.output and "--ldap-ca-bundle" in result.output
    assert not out.exists()


def test_wrong_password_is_an_auth_failure(samba_dc: SambaDC, tmp_path: Path) -> None:
    out = tmp_path / "cas.toml"
    result = discover(samba_dc, out, password="wrong-password")
    assert result.exit_code == 3, result.output
    assert "rejected the credentials of CONTOSO\\auditor" in result.output
    assert not out.exists()


def test_samba_drops_ldap3s_ntlm_bind_and_the_message_says_so(samba_dc: SambaDC, tmp_path: Path) -> None:
    out = tmp_path / "cas.toml"
    result = discover(samba_dc, out, "--ldap-auth", "ntlm")
    assert result.exit_code == 3, result.output
    assert "closed the session during the ntlm bind" in result.output
    assert "Active Directory accepts" in result.output


def test_hostile_entries_are_left_out_with_their_reason(samba_dc: SambaDC, tmp_path: Path) -> None:
    out = tmp_path / "cas.toml"
    result = discover(samba_dc, out, "--base", HOSTILE)
    assert result.exit_code == 3, result.output   # the inventory lacks CAS entries of the directory
    assert "3 Client Access Server entries were left out" in result.output
    assert "CN=CAS 07," in result.output and "contains a space" in result.output
    assert "CN=CAS08," in result.output and "is not a host name" in result.output
    assert "CN=CAS09," in result.output and "-1 is no role mask" in result.output
    # CAS10: no site and no TCP/IP address: kept, reached by its name, its site left to the scan
    inventory = load_inventory(out)
    assert [(t.name, t.address, t.site) for t in inventory.targets] == [("CAS10", "CAS10", None)]
    assert "names no AD site" in result.output
    text = out.read_text(encoding="utf-8")
    assert "# left out: CN=CAS08," in text


def test_the_entry_cap_stops_a_directory_that_lists_too_many(samba_dc: SambaDC, tmp_path: Path) -> None:
    access = DirectoryAccess(host=samba_dc.address, port=636, transport="ldaps", bind="simple", username=USER,
                             ca_bundle=str(samba_dc.ca_pem))
    settings = InventorySettings(USER, "ntlm", "https", None, False, True)
    with pytest.raises(CollectionError, match="more than 4 Exchange server objects") as caught:
        discover_inventory_ldap(access, tmp_path / "cas.toml", settings=settings, password=PASSWORD, base=None,
                                timeout_s=30, max_entries=4)
    assert caught.value.kind == "output"
    assert not (tmp_path / "cas.toml").exists()


def test_the_byte_cap_stops_a_directory_that_sends_too_much(samba_dc: SambaDC, tmp_path: Path) -> None:
    access = DirectoryAccess(host=samba_dc.address, port=636, transport="ldaps", bind="simple", username=USER,
                             ca_bundle=str(samba_dc.ca_pem))
    settings = InventorySettings(USER, "ntlm", "https", None, False, True)
    with pytest.raises(CollectionError, match=f"{samba_dc.address}:636 sent more than 1500 bytes") as caught:
        discover_inventory_ldap(access, tmp_path / "cas.toml", settings=settings, password=PASSWORD, base=None,
                                timeout_s=30, max_bytes=1500)
    assert caught.value.kind == "output"
    assert not (tmp_path / "cas.toml").exists()


def _cas_audit_env(dc: SambaDC, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAS_AUDIT_", "KRB5"))}
    return {**env, **dc.env, "CAS_AUDIT_PASSWORD": PASSWORD, **extra}


@pytest.mark.kerberos
def test_kerberos_bind_with_a_ticket_from_the_dcs_kdc(samba_dc: SambaDC, tmp_path: Path) -> None:
    """GSSAPI names the DC by its service principal ldap/<FQDN>, so the FQDN must resolve."""
    out = tmp_path / "cas.toml"
    with _resolvable({samba_dc.fqdn: samba_dc.address}):
        done = subprocess.run(
            [sys.executable, "-m", "scanner", "inventory", "discover", "--ldap", samba_dc.fqdn, "--ldap-ca-bundle",
             str(samba_dc.ca_pem), "--username", f"auditor@{REALM}", "--auth", "kerberos", "--out", str(out)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=_cas_audit_env(samba_dc))
    assert done.returncode == 0, done.stderr
    inventory = load_inventory(out)
    assert [(t.name, t.site, t.auth, t.username) for t in inventory.targets] == [
        ("CAS01", "Berlin", "kerberos", f"auditor@{REALM}"), ("CAS02", "Hamburg", "kerberos", f"auditor@{REALM}"),
        ("CAS03", "Berlin", "kerberos", f"auditor@{REALM}")]


@pytest.mark.kerberos
def test_kerberos_bind_with_a_kinit_ticket_and_no_password(samba_dc: SambaDC, tmp_path: Path) -> None:
    from kdc import find_tool

    kinit = find_tool("kinit")
    if kinit is None:
        _unavailable("kinit is not installed (apt-get install krb5-user)")
    ccache = f"FILE:{tmp_path / 'ccache'}"
    env = {**_cas_audit_env(samba_dc), "KRB5CCNAME": ccache}
    got = subprocess.run([str(kinit), "-c", ccache, f"auditor@{REALM}"], input=PASSWORD + "\n", text=True,
                         capture_output=True, env=env, timeout=60)
    assert got.returncode == 0, got.stderr
    env.pop("CAS_AUDIT_PASSWORD")
    out = tmp_path / "cas.toml"
    with _resolvable({samba_dc.fqdn: samba_dc.address}):
        done = subprocess.run(
            [sys.executable, "-m", "scanner", "inventory", "discover", "--ldap", samba_dc.fqdn, "--ldap-ca-bundle",
             str(samba_dc.ca_pem), "--username", f"auditor@{REALM}", "--auth", "kerberos", "--out", str(out)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)
    assert done.returncode == 0, done.stderr
    assert [t.name for t in load_inventory(out).targets] == ["CAS01", "CAS02", "CAS03"]


@pytest.mark.kerberos
def test_kerberos_to_an_address_names_the_missing_service_principal(samba_dc: SambaDC, tmp_path: Path) -> None:
    """By its IP address the DC has no principal ldap/<address>: the KDC says so, and so do we."""
    out = tmp_path / "cas.toml"
    done = subprocess.run(
        [sys.executable, "-m", "scanner", "inventory", "discover", "--ldap", samba_dc.address, "--ldap-ca-bundle",
         str(samba_dc.ca_pem), "--username", f"auditor@{REALM}", "--auth", "kerberos", "--out", str(out)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=_cas_audit_env(samba_dc))
    assert done.returncode == 3, done.stderr
    assert f"the KDC knows no service principal ldap/{samba_dc.address}" in done.stderr
    assert not out.exists()


def test_the_discovered_inventory_scans_completely(samba_dc: SambaDC, tmp_path: Path) -> None:
    """The directory's CAS01-CAS03 are lab servers (NTLM, one port) reached by the FQDNs
    the directory names; the sites of the scan are the directory's."""
    from kdc import free_port

    fleet = many_servers(3, ("Berlin", "Hamburg"), "127.0.57.1", auth="ntlm")
    fleet = replace(fleet, servers=tuple(replace(s, name=f"CAS0{i + 1}") for i, s in enumerate(fleet.servers)))
    fleet = relocate_fleet(fleet, "127.0.57.1", free_port())
    out = tmp_path / "cas.toml"
    names = {f"cas0{i + 1}.{DOMAIN}": s.address for i, s in enumerate(fleet.servers)}
    with Lab(fleet) as lab, _resolvable(names):
        port = lab.port("CAS01")
        result = discover(samba_dc, out, "--base", CONTOSO, "--port", str(port))
        assert result.exit_code == 0, result.output
        db = f"sqlite:///{tmp_path / 'history.db'}"
        scan = cas_audit_here("scan", "--inventory", str(out), "--db", db)
        assert scan.returncode in (0, 1), scan.stderr
        report = cas_audit_here("report", "--db", db, "--format", "json", "--out", "-")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["run"]["status"] == "complete"
    assert data["run"]["servers_scanned"] == data["run"]["servers_planned"] == 3
    assert {(s["name"], s["site"], s["scan_status"]) for s in data["servers"]} == {
        ("CAS01", "Berlin", "ok"), ("CAS02", "Hamburg", "ok"), ("CAS03", "Berlin", "ok")}


def _resolvable(entries: dict[str, str]):  # type: ignore[no-untyped-def]
    if os.geteuid() != 0 and not all(_resolves(n, a) for n, a in entries.items()):
        _unavailable(f"{', '.join(entries)} do not resolve and /etc/hosts is not writable without root")
    return hosts_entries(entries)


def _resolves(name: str, address: str) -> bool:
    from kdc import resolves_to

    return resolves_to(name, address)

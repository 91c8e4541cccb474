"""What the directory's Exchange server objects mean (scanner/collect/exchange_directory.py):
pure, from the raw values ldap3 returns. Every value is hostile until it passes the rules the
inventory applies; what fails them is left out with its reason, never guessed."""

from __future__ import annotations

from scanner.collect.exchange_directory import client_access_servers, role_names
from scanner.collect.ldapclient import DirectoryAnswer, DirectoryEntry

CONFIG = "CN=Configuration,DC=contoso,DC=local"
SERVERS = f"CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,CN=Contoso," \
          f"CN=Microsoft Exchange,CN=Services,{CONFIG}"
BERLIN = f"CN=Berlin,CN=Sites,{CONFIG}"


def entry(name: str, *, roles: bytes | None = b"4", site: bytes | None = BERLIN.encode(),
          addresses: tuple[bytes, ...] = (), serial: bytes = b"Version 8.3 (Build 83.6)",
          oversized: str | None = None, **extra: tuple[bytes, ...]) -> DirectoryEntry:
    values: dict[str, tuple[bytes, ...]] = {"cn": (name.encode(),), "serialnumber": (serial,)}
    if roles is not None:
        values["msexchcurrentserverroles"] = (roles,)
    if site is not None:
        values["msexchserversite"] = (site,)
    values["networkaddress"] = addresses or (b"netbios:" + name.encode(), b"ncacn_ip_tcp:" + name.lower().encode()
                                             + b".contoso.local")
    values.update(extra)
    return DirectoryEntry(f"CN={name},{SERVERS}", values, oversized)


def answer(*entries: DirectoryEntry, sites: dict[str, str | None] | None = None) -> DirectoryAnswer:
    return DirectoryAnswer(f"CN=Microsoft Exchange,CN=Services,{CONFIG}", entries,
                           {BERLIN: "Berlin"} if sites is None else sites)


def test_the_client_access_bit_decides() -> None:
    found = client_access_servers(answer(entry("CAS01", roles=b"36"), entry("MBX01", roles=b"2"),
                                         entry("EX2003", roles=None), entry("CAS02", roles=b"6")))
    assert [(s.name, s.fqdn, s.site, s.roles) for s in found.servers] == [
        ("CAS01", "cas01.contoso.local", "Berlin", ("ClientAccess", "HubTransport")),
        ("CAS02", "cas02.contoso.local", "Berlin", ("Mailbox", "ClientAccess"))]
    assert found.other_servers == 2 and not found.skipped and not found.notes
    assert found.servers[0].version == "Version 8.3 (Build 83.6)"
    assert role_names(118) == ("Mailbox", "ClientAccess", "UnifiedMessaging", "HubTransport", "EdgeTransport")


def test_role_masks_no_exchange_writes_are_left_out() -> None:
    found = client_access_servers(answer(entry("A1", roles=b"-1"), entry("A2", roles=b"4x"),
                                         entry("A3", roles=b"99999999999"),
                                         entry("A4", msexchcurrentserverroles=(b"4", b"4"))))
    assert not found.servers
    assert [s.split(": ", 1)[1] for s in found.skipped] == [
        "msExchCurrentServerRoles -1 is no role mask Exchange writes",
        "msExchCurrentServerRoles is not one integer",
        "msExchCurrentServerRoles 99999999999 is no role mask Exchange writes",
        "msExchCurrentServerRoles is not one integer"]


def test_names_and_host_names_the_inventory_refuses_leave_the_entry_out() -> None:
    found = client_access_servers(answer(
        entry("CAS 07"), entry("C" * 254),
        entry("CAS08", addresses=(b"ncacn_ip_tcp:cas08.contoso.local/x",)),
        entry("CAS09", addresses=(b"ncacn_ip_tcp:" + b"a" * 64 + b".contoso.local",)),
        entry("CAS10", cn=(b"\xff\xfe",)), entry("CAS11", cn=(b"CAS11\nX",))))
    assert not found.servers
    reasons = [s.split(": ", 1)[1] for s in found.skipped]
    assert "contains a space" in reasons[0]
    assert "at most 253" in reasons[1]
    assert "is not a host name" in reasons[2] and "is not a host name" in reasons[3]
    assert reasons[4:] == ["no single readable cn", "no single readable cn"]
    assert all(len(s) < 400 and "\n" not in s for s in found.skipped)


def test_the_tcp_address_is_found_whatever_its_case_and_position() -> None:
    found = client_access_servers(answer(entry("CAS01", addresses=(
        b"ncacn_vns_spp:CAS01", b"netbios:CAS01", b"NCACN_IP_TCP:cas01.contoso.local", b"ncalrpc:CAS01"))))
    assert found.servers[0].fqdn == "cas01.contoso.local"


def test_no_tcp_address_keeps_the_server_by_its_name_and_says_so() -> None:
    found = client_access_servers(answer(entry("CAS01", addresses=(b"netbios:CAS01",))))
    assert found.servers[0].fqdn == ""
    assert found.notes == ("CAS01: the directory names no TCP/IP host (networkAddress ncacn_ip_tcp:); "
                           "the inventory reaches it by its name",)


def test_a_site_the_directory_cannot_confirm_is_left_to_the_scan() -> None:
    ghost = f"CN=Atlantis,CN=Sites,{CONFIG}"
    found = client_access_servers(answer(
        entry("CAS01", site=None), entry("CAS02", site=ghost.encode()),
        entry("CAS03", site=BERLIN.upper().encode()), entry("CAS04", site=f"CN=Long,CN=Sites,{CONFIG}".encode()),
        sites={BERLIN: "Berlin", ghost: None, f"CN=Long,CN=Sites,{CONFIG}": "L" * 64}))
    assert [(s.name, s.site) for s in found.servers] == [("CAS01", ""), ("CAS02", ""), ("CAS03", "Berlin"),
                                                          ("CAS04", "")]
    assert "names no AD site" in found.notes[0]
    assert "CN=Atlantis" in found.notes[1] and "the scan reads the site from the server" in found.notes[1]
    assert "no AD site name" in found.notes[2]


def test_oversized_entries_and_second_names_are_left_out() -> None:
    found = client_access_servers(answer(
        entry("CAS01"), entry("cas01"), entry("CAS02", oversized="networkAddress has 40 values (at most 32 are read)")))
    assert [s.name for s in found.servers] == ["CAS01"]
    assert found.skipped[0].endswith("the name cas01 appears twice")
    assert found.skipped[1].endswith("networkAddress has 40 values (at most 32 are read)")


def test_a_serial_number_not_in_exchanges_form_is_not_kept() -> None:
    found = client_access_servers(answer(entry("CAS01", serial=b"=HYPERLINK(\"http://x\")"),
                                         entry("CAS02", serial=b"Version 8.1 (Build 240.6)")))
    assert [s.version for s in found.servers] == ["", "Version 8.1 (Build 240.6)"]

"""What the directory's Exchange server objects say: which are Client Access Servers, their
names, host names and AD sites (docs/exchange-facts.md, "Exchange servers in the directory").

Pure: the raw values ldapclient.py read go in, DiscoveredServer rows and the reasons for
every entry left out come out. Every value is untrusted: a name or host name the inventory
would refuse leaves the entry out with its reason (never a guessed value); a site the
directory cannot confirm is left unknown, so the scan reads it from the server itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scanner.collect.ldapclient import DirectoryAnswer, DirectoryEntry, directory_text
from scanner.collect.reader import DiscoveredServer
from scanner.errors import ConfigError
from scanner.inventory import check_server_entry

#: msExchCurrentServerRoles bits (Exchange 2007's ServerRole values).
ROLE_BITS = ((2, "Mailbox"), (4, "ClientAccess"), (16, "UnifiedMessaging"), (32, "HubTransport"),
             (64, "EdgeTransport"))
CLIENT_ACCESS = 4
_ROLE_MASK_MAX = 2**31 - 1     # the attribute is a 32-bit Integer (syntax 2.5.5.9)
_TCP_PREFIX = "ncacn_ip_tcp:"
_SERIAL = re.compile(r"^Version \d{1,3}\.\d{1,3} \(Build \d{1,6}\.\d{1,6}(?:: [ -~]{1,40})?\)$")
MAX_SITE = 63                  # an AD site name is one DNS label
_SHOWN = 100


@dataclass(frozen=True)
class DirectoryDiscovery:
    servers: tuple[DiscoveredServer, ...]    # the Client Access Servers, in the directory's order
    skipped: tuple[str, ...]                 # one sentence per CAS entry left out
    notes: tuple[str, ...]                   # one sentence per value left unknown
    other_servers: int                       # Exchange servers without the Client Access role


def client_access_servers(answer: DirectoryAnswer) -> DirectoryDiscovery:
    """The Client Access Servers of `answer`, and why any other CAS entry was left out."""
    servers: list[DiscoveredServer] = []
    skipped: list[str] = []
    notes: list[str] = []
    others = 0
    seen: set[str] = set()
    for entry in answer.servers:
        shown = _shown(entry.dn)
        roles = _roles(entry)
        if isinstance(roles, str):
            skipped.append(f"{shown}: {roles}")
            continue
        if roles is None or not roles & CLIENT_ACCESS:
            others += 1
            continue
        if entry.oversized:
            skipped.append(f"{shown}: {entry.oversized}")
            continue
        server = _server(entry, roles, answer.sites, notes, shown)
        if isinstance(server, str):
            skipped.append(f"{shown}: {server}")
            continue
        if server.name.casefold() in seen:
            skipped.append(f"{shown}: the name {server.name} appears twice")
            continue
        seen.add(server.name.casefold())
        servers.append(server)
    return DirectoryDiscovery(tuple(servers), tuple(skipped), tuple(notes), others)


def role_names(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in ROLE_BITS if mask & bit)


def _roles(entry: DirectoryEntry) -> int | None | str:
    """The role mask; None when the object has none (Exchange 2003 and older); a reason
    when the value is one no Exchange writes."""
    values = entry.values.get("msexchcurrentserverroles", ())
    if not values:
        return None
    text = directory_text(values[0]) if len(values) == 1 else None
    if text is None or not re.fullmatch(r"-?\d{1,11}", text):
        return "msExchCurrentServerRoles is not one integer"
    mask = int(text)
    if not 0 <= mask <= _ROLE_MASK_MAX:
        return f"msExchCurrentServerRoles {mask} is no role mask Exchange writes"
    return mask


def _server(entry: DirectoryEntry, roles: int, sites: dict[str, str | None], notes: list[str],
            shown: str) -> DiscoveredServer | str:
    names = entry.values.get("cn", ())
    name = directory_text(names[0]) if len(names) == 1 else None
    if not name:
        return "no single readable cn"
    tcp = [t for t in (directory_text(v) for v in entry.values.get("networkaddress", ())) if t is not None
           and t[: len(_TCP_PREFIX)].casefold() == _TCP_PREFIX]
    fqdn = tcp[0][len(_TCP_PREFIX):] if tcp else ""
    try:
        check_server_entry(name, fqdn or name, "the directory")
    except ConfigError as exc:
        return exc.message.removeprefix("the directory: ")
    if not fqdn:
        notes.append(f"{name}: the directory names no TCP/IP host (networkAddress ncacn_ip_tcp:); "
                     f"the inventory reaches it by its name")
    site = _site(entry, sites, name, notes)
    serials = entry.values.get("serialnumber", ())
    version = directory_text(serials[0]) if len(serials) == 1 else None
    return DiscoveredServer(name=name, fqdn=fqdn, site=site or "", roles=role_names(roles),
                            version=version if version and _SERIAL.match(version) else "")


def _site(entry: DirectoryEntry, sites: dict[str, str | None], name: str, notes: list[str]) -> str | None:
    values = entry.values.get("msexchserversite", ())
    dn = directory_text(values[0]) if len(values) == 1 else None
    if dn is None:
        notes.append(f"{name}: the directory names no AD site (msExchServerSite); the scan reads it from the server")
        return None
    site = next((cn for key, cn in sites.items() if key.casefold() == dn.casefold()), None)
    if site is None:
        notes.append(f"{name}: its msExchServerSite {_shown(dn)} names no site object the account can read; "
                     "the scan reads the site from the server")
        return None
    if not site.strip() or len(site) > MAX_SITE or site != site.strip():
        notes.append(f"{name}: the site name {site[:_SHOWN]!r} is no AD site name; the scan reads it from the server")
        return None
    return site


def _shown(dn: str) -> str:
    """A DN for a message: one line, at most _SHOWN characters."""
    text = "".join(ch if ch.isprintable() else "?" for ch in dn)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "\u2026"

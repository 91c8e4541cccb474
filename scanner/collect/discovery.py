"""`cas-audit inventory discover`: the Client Access Servers of the organisation -> inventory TOML.

Two sources. `--ldap DC` reads the Exchange server objects from the directory, from the
scanner's host (ldapclient.py, exchange_directory.py): no second hop. `--from HOST` runs
Get-ExchangeServer on an Exchange management host over WinRM; Get-ExchangeServer then
reads the directory from HOST, which needs credentials HOST may pass on (the second hop):
Kerberos with delegation only (docs/exchange-facts.md, "The second hop").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from scanner.collect.exchange_directory import client_access_servers
from scanner.collect.ldapclient import DirectoryAccess, read_exchange_servers
from scanner.collect.reader import DiscoveredServer, read_discovery_output
from scanner.collect.winrm_client import discover
from scanner.errors import CollectionError, ConfigError
from scanner.inventory import Target, default_port, refuse_basic_over_http
from scanner.util.safefile import write_file

_PASSWORD_NOTE = "# The password is not stored here: set CAS_AUDIT_PASSWORD or use the keyring.\n"


@dataclass(frozen=True)
class InventorySettings:
    """The [defaults] of the inventory written: how the scan will reach each CAS over WinRM."""

    username: str
    auth: str
    scheme: str
    port: int | None
    allow_insecure: bool
    verify_tls: bool

    def defaults(self) -> dict[str, object]:
        table: dict[str, object] = {"username": self.username, "auth": self.auth, "scheme": self.scheme}
        # Without a port the inventory names none either, so each CAS is found on its own
        # port: WinRM 2.0's, then 1.1's (inventory.DEFAULT_PORTS).
        if self.port:
            table["port"] = self.port
        if self.scheme == "https":
            table["verify_tls"] = self.verify_tls
        if self.allow_insecure:
            table["allow_insecure"] = True
        return table


@dataclass(frozen=True)
class DiscoveryResult:
    count: int                  # Client Access Servers written
    skipped: tuple[str, ...]    # CAS entries left out, with the reason
    notes: tuple[str, ...]      # values left unknown, with the reason


def discover_inventory(host: str, out: Path, *, username: str, auth: str, scheme: str, port: int | None,
                       allow_insecure: bool, verify_tls: bool, password: str | None, timeout_s: float,
                       force: bool = False, delegate: bool = False) -> int:
    """Write an inventory of every CAS the management host knows (an existing file only
    with `force`); return how many. Only Kerberos with delegation gives Get-ExchangeServer
    on the host the credentials to read the directory."""
    refuse_basic_over_http(auth, scheme, allow_insecure, f"--from {host}", "pass --allow-insecure")
    refuse_second_hop(host, auth, delegate)
    target = Target(name=host, address=host, site=None, username=username, auth=auth, scheme=scheme,
                    port=port or default_port(scheme), verify_tls=verify_tls, ca_bundle=None,
                    allow_insecure=allow_insecure, cert_pem=None, cert_key_pem=None, port_given=bool(port),
                    delegate=delegate)
    servers = read_discovery_output(discover(target, password, timeout_s=timeout_s))
    settings = InventorySettings(username, auth, scheme, port, allow_insecure, verify_tls)
    header = f"# Client Access Servers known to {host} (Get-ExchangeServer), written by cas-audit.\n"
    write_file(out, inventory_text(header, settings, servers, ()).encode("utf-8"), force=force)
    return len(servers)


def refuse_second_hop(host: str, auth: str, delegate: bool) -> None:
    """ConfigError for a `--from` logon that cannot reach the directory from the host."""
    if auth == "kerberos" and delegate:
        return
    how = "Kerberos without delegation" if auth == "kerberos" else auth.upper() if auth == "ntlm" else auth
    raise ConfigError(
        f"--from {host} with {how}: Get-ExchangeServer on {host} reads Active Directory with the "
        "credentials of the WinRM logon, and a logon made with NTLM, Basic or Kerberos without "
        "delegation has none it may pass on to a domain controller (the second hop), so it fails",
        hint="read the directory from here instead: `cas-audit inventory discover --ldap DC --out FILE`; "
             "or use --auth kerberos --delegate with a forwardable ticket and a management host trusted "
             "for delegation")


def discover_inventory_ldap(access: DirectoryAccess, out: Path, *, settings: InventorySettings,
                            password: str | None, base: str | None, timeout_s: float, force: bool = False,
                            max_entries: int | None = None, max_bytes: int | None = None) -> DiscoveryResult:
    """Write an inventory of every CAS the directory lists (an existing file only with
    `force`). CollectionError when the directory cannot be read or lists no CAS."""
    limits = {"max_entries": max_entries} if max_entries else {}
    if max_bytes:
        limits["max_bytes"] = max_bytes
    answer = read_exchange_servers(access, password, base=base, timeout_s=timeout_s, **limits)
    found = client_access_servers(answer)
    if not found.servers:
        raise CollectionError(
            "output", f"the directory of {access.host} lists no Client Access Server under {answer.base}"
                      + (f" ({len(found.skipped)} left out: {found.skipped[0]})" if found.skipped else ""),
            hint="check --base, and that the account may read the configuration partition")
    header = (f"# Client Access Servers of the directory of {access.host} (msExchExchangeServer objects "
              f"under {_comment(answer.base)}), written by cas-audit.\n")
    comments = tuple(f"left out: {s}" for s in found.skipped) + tuple(f"unknown: {n}" for n in found.notes)
    servers = sorted(found.servers, key=lambda s: s.name.casefold())   # the directory's order is none
    write_file(out, inventory_text(header, settings, servers, comments).encode("utf-8"), force=force)
    return DiscoveryResult(len(found.servers), found.skipped, found.notes)


def inventory_text(header: str, settings: InventorySettings, servers: Sequence[DiscoveredServer],
                   comments: Sequence[str]) -> str:
    """The inventory TOML (docs/contracts.md) for `servers`, without any password."""
    parts = [header, _PASSWORD_NOTE]
    parts += [f"# {_comment(c)}\n" for c in comments]
    parts += ["\n[defaults]\n", tomli_w.dumps(settings.defaults())]
    for s in servers:
        entry = {"name": s.name, "address": s.fqdn or s.name, **({"site": s.site} if s.site else {})}
        parts.append("\n[[server]]\n" + tomli_w.dumps(entry))
    return "".join(parts)


def _comment(text: str) -> str:
    """One TOML comment line's worth of `text`: no line breaks, no control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)

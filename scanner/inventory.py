"""The inventory: which Client Access Servers to scan and how to reach them (docs/contracts.md)."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from scanner.errors import ConfigError
from scanner.util.tomlfile import check_keys, load_toml, server_location

#: How a scan logs on to a server: with an account (LogonAuth) or a client certificate.
LogonAuth = Literal["ntlm", "kerberos", "basic"]
LOGON_AUTHS: tuple[LogonAuth, ...] = get_args(LogonAuth)
Auth = Literal[LogonAuth, "certificate"]
AUTHS: tuple[Auth, ...] = get_args(Auth)
Scheme = Literal["http", "https"]
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)
CONNECTION_KEYS = {
    "username", "auth", "scheme", "port", "verify_tls", "ca_bundle", "allow_insecure",
    "cert_pem", "cert_key_pem", "path",
}
SERVER_KEYS = CONNECTION_KEYS | {"name", "address", "site"}
#: Ports tried, in order, for a server whose inventory gives no `port`: WinRM 2.0 listens on
#: 5985/5986, WinRM 1.1 on 80/443. 2.0's port comes first: a host without it refuses the
#: connection at once, while 80/443 on a Client Access Server always accept (IIS serves
#: Outlook Web Access there), so only the 2.0 port can say "not here" for one refused connect.
DEFAULT_PORTS: dict[str, tuple[int, ...]] = {"http": (5985, 80), "https": (5986, 443)}


@dataclass(frozen=True)
class Target:
    """One CAS to scan and the settings to reach it. Holds no password."""

    name: str
    address: str
    site: str | None
    username: str
    auth: str
    scheme: str
    port: int
    verify_tls: bool
    ca_bundle: str | None
    allow_insecure: bool
    cert_pem: str | None
    cert_key_pem: str | None
    path: str = "/wsman"
    port_given: bool = True  # False: the inventory names no port; `candidate_ports` are tried
    delegate: bool = False   # Kerberos only: pass a forwardable ticket on (`inventory discover --from`)

    @property
    def candidate_ports(self) -> tuple[int, ...]:
        """The port the inventory names, else WinRM 2.0's then WinRM 1.1's for the scheme."""
        return (self.port,) if self.port_given else DEFAULT_PORTS[self.scheme]

    @property
    def endpoint(self) -> str:
        host = self.address
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        return f"{self.scheme}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class Inventory:
    path: Path
    sha256: str
    organisation: str | None
    targets: tuple[Target, ...]

    def only_site(self, site: str) -> Inventory:
        """The servers of one AD site (case-insensitive); servers with no site are kept out."""
        chosen = tuple(t for t in self.targets if t.site and t.site.casefold() == site.casefold())
        if not chosen:
            raise ConfigError(f"no server of site {site!r} in inventory {self.path}")
        return Inventory(self.path, self.sha256, self.organisation, chosen)


def default_port(scheme: str) -> int:
    """WinRM 2.0's listener port for the scheme: 5986 for https, 5985 for http (the first
    of DEFAULT_PORTS)."""
    return DEFAULT_PORTS[scheme][0]


def refuse_basic_over_http(auth: str, scheme: str, allow_insecure: bool, where: str, how_to_allow: str) -> None:
    """ConfigError for Basic over plain http (the password crosses the wire readable) unless
    the user allowed it; `how_to_allow` says how in the words of the file or command line."""
    if auth == "basic" and scheme == "http" and not allow_insecure:
        raise ConfigError(
            f"{where}: Basic authentication over plain http sends the password readable on the wire",
            hint=f"use https, or ntlm (which encrypts the messages), or {how_to_allow} (labs only)",
        )


def _string(value: Any, key: str, where: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ConfigError(f"{where}: {key!r} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    if any(ord(ch) < 32 for ch in value):
        raise ConfigError(f"{where}: {key!r} contains a control character")
    return value.strip()


# A DNS name is at most 253 characters, each label at most 63 (RFC 1035 2.3.4); a
# NetBIOS computer name at most 15. Names are the servers' names as an admin writes them.
MAX_NAME = 253
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_NAME_CHARS = re.compile(r"^[^\s/\\:*?\"<>|]+$")


def _check_name(name: str, where: str) -> None:
    if len(name) > MAX_NAME:
        raise ConfigError(f"{where}: name is {len(name)} characters long; a server name has at most {MAX_NAME}")
    if not _NAME_CHARS.match(name):
        raise ConfigError(f"{where}: name {name!r} contains a space or one of / \\ : * ? \" < > |")


def _check_address(address: str, where: str) -> None:
    """A host name or an IP address: no port, no scheme, no path (those are own keys)."""
    try:
        ipaddress.ip_address(address)
        return
    except ValueError:
        pass
    labels = address.removesuffix(".").split(".")
    if len(address) <= MAX_NAME and all(_HOST_LABEL.match(label) for label in labels):
        return
    shown = repr(address) if len(address) <= 80 else f"{address[:40]!r}... ({len(address)} characters)"
    hint = None
    if ":" in address or "/" in address:
        hint = "write only the host name or IP address; the port goes in `port`, http/https in `scheme`"
    raise ConfigError(f"{where}: address {shown} is not a host name or an IP address", hint=hint)


def check_server_entry(name: str, address: str, where: str) -> None:
    """ConfigError when `name` or `address` could not stand in an inventory: the rules
    load_inventory applies, for inventories written from what a server or directory said."""
    _check_name(name, where)
    _check_address(address, where)


def _check_kerberos(address: str, username: str, where: str) -> None:
    """Kerberos names the server by its service principal HTTP/<host>: the host must be the
    FQDN of the computer account (an IP address or a bare name has no such principal), and
    the user is user@REALM (or a bare user in krb5.conf's default realm), never DOMAIN\\user."""
    try:
        ipaddress.ip_address(address)
        is_ip = True
    except ValueError:
        is_ip = False
    if is_ip or "." not in address.strip("."):
        raise ConfigError(f"{where}: Kerberos needs the server's FQDN as address (e.g. cas01.contoso.com), "
                          f"not {address!r}",
                          hint="the service principal is HTTP/<address>; the FQDN must resolve to the server")
    if "\\" in username:
        raise ConfigError(f"{where}: Kerberos names the user as user@REALM (e.g. auditor@CONTOSO.COM), "
                          f"not {username!r}", hint="the realm is the Active Directory domain's DNS name in capitals")


def _target(entry: dict[str, Any], defaults: dict[str, Any], where: str) -> Target:
    merged = {**defaults, **entry}
    name = _string(entry.get("name"), "name", where, required=True)
    assert name is not None
    _check_name(name, where)
    address = _string(merged.get("address"), "address", where) or name
    _check_address(address, where)
    auth = merged.get("auth", "ntlm")
    if auth not in AUTHS:
        raise ConfigError(f"{where}: auth must be one of {', '.join(AUTHS)}, not {auth!r}")
    scheme = merged.get("scheme", "https")
    if scheme not in SCHEMES:
        raise ConfigError(f"{where}: scheme must be http or https, not {scheme!r}")
    port_given = "port" in merged
    port = merged.get("port", default_port(scheme))
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}: port must be a number from 1 to 65535, not {port!r}")
    for flag in ("verify_tls", "allow_insecure"):
        if flag in merged and not isinstance(merged[flag], bool):
            raise ConfigError(f"{where}: {flag} must be true or false")
    allow_insecure = bool(merged.get("allow_insecure", False))
    refuse_basic_over_http(auth, scheme, allow_insecure, where, "set allow_insecure = true")
    cert_pem = _string(merged.get("cert_pem"), "cert_pem", where)
    cert_key_pem = _string(merged.get("cert_key_pem"), "cert_key_pem", where)
    if auth == "certificate" and (scheme != "https" or not cert_pem or not cert_key_pem):
        raise ConfigError(f"{where}: certificate auth needs scheme https, cert_pem and cert_key_pem")
    username = _string(merged.get("username"), "username", where)
    if auth != "certificate" and not username:
        raise ConfigError(f"{where}: 'username' is required (in [defaults] or the server)")
    if auth == "kerberos":
        _check_kerberos(address, username or "", where)
    path = merged.get("path", "/wsman")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{where}: path must start with '/'")
    return Target(
        name=name,
        address=address,
        site=_string(entry.get("site"), "site", where),
        username=username or "",
        auth=auth,
        scheme=scheme,
        port=port,
        verify_tls=bool(merged.get("verify_tls", True)),
        ca_bundle=_string(merged.get("ca_bundle"), "ca_bundle", where),
        allow_insecure=allow_insecure,
        cert_pem=cert_pem,
        cert_key_pem=cert_key_pem,
        path=path,
        port_given=port_given,
    )


def load_inventory(path: Path) -> Inventory:
    """Read and validate an inventory file; ConfigError names file, line and field."""
    table, text = load_toml(path, "inventory")
    check_keys(table, {"defaults", "server", "organisation"}, str(path))
    defaults = table.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [defaults] must be a table")
    check_keys(defaults, CONNECTION_KEYS, f"{path}: [defaults]")
    servers = table.get("server", [])
    if not isinstance(servers, list) or not servers:
        raise ConfigError(f"{path}: no [[server]] entries", hint="add at least one [[server]] with a name")
    organisation = table.get("organisation")
    if organisation is not None and not isinstance(organisation, str):
        raise ConfigError(f"{path}: organisation must be a string")
    targets: list[Target] = []
    seen: dict[str, str] = {}
    for index, entry in enumerate(servers):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: server #{index + 1} must be a table")
        name = entry.get("name") if isinstance(entry.get("name"), str) else None
        where = server_location(path, text, name, index)
        check_keys(entry, SERVER_KEYS, where)
        target = _target(entry, defaults, where)
        key = target.name.casefold()
        if key in seen:
            raise ConfigError(f"{where}: server name {target.name!r} appears twice")
        seen[key] = target.name
        targets.append(target)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Inventory(path=path, sha256=digest, organisation=organisation, targets=tuple(targets))

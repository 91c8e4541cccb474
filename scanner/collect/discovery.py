"""`cas-audit inventory discover`: Get-ExchangeServer on one management host -> inventory TOML."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from scanner.collect.reader import read_discovery_output
from scanner.collect.winrm_client import discover
from scanner.inventory import Target, default_port, refuse_basic_over_http
from scanner.util.safefile import write_file


def discover_inventory(host: str, out: Path, *, username: str, auth: str, scheme: str, port: int | None,
                       allow_insecure: bool, verify_tls: bool, password: str | None, timeout_s: float,
                       force: bool = False) -> int:
    """Write an inventory of every CAS the host knows (an existing file only with `force`);
    return how many."""
    refuse_basic_over_http(auth, scheme, allow_insecure, f"--from {host}", "pass --allow-insecure")
    # Without --port: WinRM 2.0's port, then 1.1's (inventory.DEFAULT_PORTS), and the
    # inventory written names no port either, so each CAS is found on its own.
    target = Target(name=host, address=host, site=None, username=username, auth=auth, scheme=scheme,
                    port=port or default_port(scheme), verify_tls=verify_tls, ca_bundle=None,
                    allow_insecure=allow_insecure, cert_pem=None, cert_key_pem=None, port_given=bool(port))
    servers = read_discovery_output(discover(target, password, timeout_s=timeout_s))
    defaults: dict[str, object] = {"username": username, "auth": auth, "scheme": scheme}
    if port:
        defaults["port"] = port
    if scheme == "https":
        defaults["verify_tls"] = verify_tls
    if allow_insecure:
        defaults["allow_insecure"] = True
    parts = [f"# Client Access Servers known to {host} (Get-ExchangeServer), written by cas-audit.\n"
             "# The password is not stored here: set CAS_AUDIT_PASSWORD or use the keyring.\n\n",
             "[defaults]\n", tomli_w.dumps(defaults)]
    for s in servers:
        entry = {"name": s.name, "address": s.fqdn or s.name, **({"site": s.site} if s.site else {})}
        parts.append("\n[[server]]\n" + tomli_w.dumps(entry))
    write_file(out, "".join(parts).encode("utf-8"), force=force)
    return len(servers)

"""A running simulated organisation: one WinRM listener per simulated CAS, the inventory
that reaches them, and `cas-audit lab serve`."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TextIO

import tomli_w

from scanner.errors import ConfigError
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import TRANSPORT_FAULTS, Fleet, listen_port
from scanner.lab.httpserver import HostConfig, HostStats, LabServer
from scanner.lab.simhost import SimulatedHost
from scanner.util.safefile import write_file


def demo_fleet_path() -> Path:
    """The built-in demo organisation (package data: scanner/lab/fleets/demo.toml)."""
    return Path(__file__).resolve().parent / "fleets" / "demo.toml"


class Lab:
    """A simulated organisation running in this process (servers listen on loopback)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.servers: dict[str, LabServer] = {}
        self.hosts: dict[str, SimulatedHost] = {}
        self._started = False

    def start(self) -> None:
        """Start one listener per server ("refuse" servers hold their port but never listen)."""
        if self._started:
            raise RuntimeError("the lab is already running")
        lab = self.fleet.lab
        try:
            for server in self.fleet.servers:
                host = SimulatedHost(server, self.fleet)
                transport_fault = server.fault if server.fault in TRANSPORT_FAULTS else ""
                port = listen_port(lab, server)
                listener = LabServer(HostConfig(
                    name=server.name, address=server.address, port=port, auth=lab.auth,
                    username=lab.username, password=lab.password, runner=host,
                    latency_ms=lab.latency_ms, fault=transport_fault, domain=lab.domain,
                    platform=server.windows, account=server.account,
                    allow_unencrypted=server.allow_unencrypted, env_ignored=server.env_ignored,
                    fqdn=server.fqdn, keytab=lab.keytab, tls_cert=lab.tls_cert, tls_key=lab.tls_key,
                    cbt_hardening=lab.cbt_hardening,
                    admin_username=lab.admin_username, admin_password=lab.admin_password,
                ))
                try:
                    listener.start()
                except OSError as exc:
                    raise ConfigError(
                        f"lab server {server.name} cannot listen on {server.address}:{port}: {exc.strerror or exc}",
                        hint="another lab may be running; choose another port or base_address in the fleet file's lab table",
                    ) from None
                self.hosts[server.name] = host
                self.servers[server.name] = listener
        except BaseException:
            self.stop()
            raise
        self._started = True

    def stop(self) -> None:
        """Stop every listener; safe to call twice."""
        servers, self.servers = list(self.servers.values()), {}
        self.hosts = {}
        for server in servers:
            server.stop()
        self._started = False

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self, name: str) -> HostStats:
        """Request counters of one server."""
        return self.servers[name].stats

    def port(self, name: str) -> int:
        """The port server `name` holds (its own when [lab] port is 0)."""
        endpoint = self.servers[name].endpoint
        return int(endpoint.rsplit(":", 1)[1].split("/", 1)[0])

    def inventory(self) -> dict[str, object]:
        """The inventory (docs/contracts.md) that reaches every server of the running lab; no password."""
        if not self._started:
            raise RuntimeError("the lab is not running: start it before asking for its inventory")
        lab = self.fleet.lab
        ports = {s.name: self.port(s.name) for s in self.fleet.servers}
        kerberos = lab.auth == "kerberos"
        if kerberos:   # user@REALM; servers by FQDN, the host part of their SPN HTTP/<fqdn>
            username = f"{lab.username}@{lab.domain.upper()}" if lab.domain else lab.username
        else:
            username = f"{lab.domain}\\{lab.username}" if lab.domain else lab.username
        defaults: dict[str, object] = {
            "username": username,
            "auth": lab.auth,
            "scheme": "https" if lab.tls_cert else "http",
        }
        if lab.tls_cert:
            defaults["ca_bundle"] = lab.tls_cert
        same_port = len(set(ports.values())) == 1
        if same_port:
            defaults["port"] = next(iter(ports.values()))
        if lab.auth == "basic":
            defaults["allow_insecure"] = True  # Basic over plain http: acceptable on loopback only
        servers: list[dict[str, object]] = []
        for server in self.fleet.servers:
            address = server.fqdn if kerberos else server.address
            entry: dict[str, object] = {"name": server.name, "address": address, "site": server.site}
            if not same_port:
                entry["port"] = ports[server.name]
            servers.append(entry)
        return {"organisation": f"{lab.domain or 'LAB'} (cas-audit lab)", "defaults": defaults, "server": servers}

    def hosts_lines(self) -> list[str]:
        """Kerberos labs: the /etc/hosts lines that make each FQDN reach its listener."""
        return [f"{s.address} {s.fqdn}" for s in self.fleet.servers]

    def inventory_toml(self) -> str:
        """inventory() as TOML text, with a comment saying where the password comes from."""
        header = ("# Inventory of a cas-audit lab (simulated Exchange 2007 organisation on loopback).\n"
                  "# The password is not stored here: set CAS_AUDIT_PASSWORD.\n")
        if self.fleet.lab.auth == "kerberos":
            header = ("# Inventory of a cas-audit lab (simulated Exchange 2007 organisation on loopback).\n"
                      "# Kerberos: the servers' FQDNs must resolve to their loopback addresses\n"
                      "# (see hosts_lines()); log on with kinit, or set CAS_AUDIT_PASSWORD.\n")
        inventory = self.inventory()
        lines = [header, tomli_w.dumps({"organisation": inventory["organisation"]}), "\n[defaults]\n"]
        lines.append(tomli_w.dumps(inventory["defaults"]))  # type: ignore[arg-type]
        for entry in inventory["server"]:  # type: ignore[attr-defined]
            lines.append("\n[[server]]\n" + tomli_w.dumps(entry))
        return "".join(lines)

    def write_inventory(self, path: Path) -> None:
        """Write inventory_toml() to `path` atomically, replacing the lab's previous one
        (a device node or FIFO is written into, never replaced: scanner.util.safefile)."""
        write_file(Path(path), self.inventory_toml().encode("utf-8"), force=True)

    def replace_fleet(self, fleet: Fleet) -> None:
        """Answer from now on as `fleet` says (same servers, lab settings and transport
        faults), without restarting the listeners: e.g. after a service pack upgrade."""
        old_names = [s.name for s in self.fleet.servers]
        new_names = [s.name for s in fleet.servers]
        if old_names != new_names:
            raise ConfigError("replace_fleet needs the same servers in the same order",
                              hint=f"running: {', '.join(old_names)}; given: {', '.join(new_names)}")
        if fleet.lab != self.fleet.lab:
            raise ConfigError("replace_fleet cannot change [lab] settings of a running lab; restart it")
        for old, new in zip(self.fleet.servers, fleet.servers, strict=True):
            def transport(fault: str) -> str:
                return fault if fault in TRANSPORT_FAULTS else ""
            if transport(old.fault) != transport(new.fault):
                raise ConfigError(f"replace_fleet cannot change the transport fault of {new.name} "
                                  f"({old.fault!r} -> {new.fault!r}); restart the lab")
        self.fleet = fleet
        for server in fleet.servers:
            host = self.hosts.get(server.name)
            if host is not None:
                host.replace(server, fleet)


def serve(fleet_path: Path, inventory_out: Path, *, stop_event: threading.Event | None = None,
          out: TextIO | None = None) -> None:
    """`cas-audit lab serve`: run the fleet until SIGINT/SIGTERM (or `stop_event`), after
    writing the inventory once every server listens. Never prints the password."""
    out = out or sys.stdout
    fleet = load_fleet(fleet_path)
    stop = stop_event or threading.Event()
    previous: dict[signal.Signals, object] = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        with Lab(fleet) as lab:
            lab.write_inventory(inventory_out)
            for server in fleet.servers:
                listener = lab.servers[server.name]
                state = f"fault={server.fault}" if server.fault else "ok"
                if server.fault == "refuse":
                    state += " (port held, not listening)"
                windows = f"{server.platform}/PS {server.powershell}"
                print(f"{server.name:<15} {server.site:<20} {listener.endpoint:<32} {windows:<14} {state}", file=out)
            if fleet.lab.auth == "kerberos":
                print("Kerberos: these names must resolve to the lab (e.g. lines of /etc/hosts):", file=out)
                for line in lab.hosts_lines():
                    print(f"  {line}", file=out)
            print(f"inventory: {inventory_out} ({len(fleet.servers)} servers, auth {fleet.lab.auth}); "
                  "the scanner reads the lab password from CAS_AUDIT_PASSWORD. Stop with Ctrl+C.",
                  file=out, flush=True)
            while not stop.wait(0.2):
                pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
    print("lab stopped", file=out, flush=True)

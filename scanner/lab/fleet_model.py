"""The lab's simulated Exchange organisation as data: what each simulated CAS *is*
(docs/contracts.md, "Lab fleet (TOML)"), its defaults, and what happens to a loaded fleet
afterwards: `upgrade_server()` gives the fleet as it is after a service pack setup ran on
one server, `relocate_fleet()` moves it to other loopback addresses. Reading a fleet file
is scanner/lab/fleet.py.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scanner.collect.collected import Rollup
from scanner.errors import ConfigError
from scanner.lab.platforms import DEFAULT_PLATFORM, Platform, platform
from scanner.parse.builds import sp3_build
from scanner.util.timefmt import as_utc

AUTHS = ("basic", "ntlm", "kerberos")
#: Faults the WinRM transport (httpserver.py) simulates.
TRANSPORT_FAULTS = ("refuse", "timeout", "reset", "auth", "soap-fault", "slow")
#: Faults the simulated host itself simulates (simhost.py).
APPLICATION_FAULTS = ("garbage", "truncate", "huge", "script-error", "stuck")
FAULTS = ("", *TRANSPORT_FAULTS, *APPLICATION_FAULTS)
REGISTRY_KEYS = ("Setup", "v8.0\\Setup", "")
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16")
NEWLINES = ("crlf", "lf")
START_MODES = ("Auto", "Manual", "Disabled")
#: ServiceController.Status names, and "absent" (the service is not installed).
SERVICE_STATES = ("Running", "Stopped", "StartPending", "StopPending", "ContinuePending",
                  "PausePending", "Paused", "absent")
#: Exchange 2007 ServerRole flags in the order .NET prints them ("Mailbox, ClientAccess, ...").
ROLES = ("Mailbox", "ClientAccess", "UnifiedMessaging", "HubTransport")

DEFAULT_BUILD = sp3_build()  # Exchange 2007 SP3 (8.3.83.6), from Microsoft's table
DEFAULT_INSTALL_PATH = "C:\\Program Files\\Microsoft\\Exchange Server"
DEFAULT_SITE = "Default-First-Site-Name"
DEFAULT_SERVICE = "Stopped"   # Exchange 2007 installs both services but does not start them
DEFAULT_START_MODE = "Manual"
#: File time of a config file nobody touched since setup; before DEFAULT_STARTED.
DEFAULT_MODIFIED = datetime(2026, 3, 10, 14, 22, 5, tzinfo=UTC)
#: Process start of a running service nobody restarted: the last patch-day reboot.
DEFAULT_STARTED = datetime(2026, 11, 16, 5, 31, 12, tzinfo=UTC)
DEFAULT_DNS_SUFFIX = "contoso.lab"
MAX_CONFIG_BYTES = 4 * 1024 * 1024

#: The POP3/IMAP4 config file as (SP) setup writes it. The exact shipped text is
#: unconfirmed; Microsoft's procedure has admins locate the AllowCrossSiteSessions key and
#: set it to true, so the key is present with "false". CRLF line endings, UTF-8, no BOM.
DEFAULT_CONFIG_TEXT = (
    '<?xml version="1.0" encoding="utf-8" ?>\r\n'
    "<configuration>\r\n"
    "  <runtime>\r\n"
    '    <gcServer enabled="true" />\r\n'
    "  </runtime>\r\n"
    "  <appSettings>\r\n"
    '    <add key="AllowCrossSiteSessions" value="false" />\r\n'
    "  </appSettings>\r\n"
    "</configuration>\r\n"
)
DEFAULT_CONFIG_BYTES = DEFAULT_CONFIG_TEXT.encode("utf-8")

ACCOUNTS = ("local", "domain")
#: [[server]] language: the language Windows renders event messages in (scanner/lab/eventlog.py).
EVENT_LANGUAGES = ("en", "de")
#: [[server]] application_log: whether the scan account may read the Application log.
APPLICATION_LOG_ACCESS = ("readable", "denied")
#: [[server]] wmi: whether Get-WmiObject Win32_Service answers the scan account (docs/lab.md).
WMI_ACCESS = ("readable", "denied")
#: Where the server's Netlogon keeps its AD site (HKLM\SYSTEM\CurrentControlSet\Services\
#: Netlogon\Parameters): SiteName (set by an administrator), DynamicSiteName (what Netlogon
#: found), or neither value ("none": the site cannot be read locally). docs/lab.md, "The domain".
SITE_VALUES = ("SiteName", "DynamicSiteName", "none")
BUILD_PATTERN = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,5}\.\d{1,4}$")


@dataclass(frozen=True)
class LabSettings:
    """How the lab listens and whom it lets in ([lab])."""

    username: str
    password: str
    auth: str  # basic | ntlm | kerberos
    latency_ms: int
    base_address: str
    port: int | None  # 0: any free port per server; None: each platform's default HTTP port
    domain: str = ""
    platform: str = DEFAULT_PLATFORM  # defaults for the servers (see SimServer)
    powershell: str | None = None
    account: str | None = None
    allow_unencrypted: bool = False
    keytab: str = ""  # auth "kerberos": the keytab with HTTP/<fqdn> of every server
    admin_username: str = ""  # an account allowed to write (fix apply); the scan account only reads
    admin_password: str = ""
    tls_cert: str = ""  # https: the certificate (PEM, also the inventory's ca_bundle) and its key
    tls_key: str = ""
    cbt_hardening: str = "relaxed"  # WinRM's CbtHardeningLevel: relaxed | strict | none (over https)


@dataclass(frozen=True)
class RefusedLogonFact:
    """One event 1008 the CAS logged: a cross-site logon it refused."""

    user: str
    at: datetime  # UTC
    mailbox_site: str


@dataclass(frozen=True)
class SimProtocol:
    """One protocol (pop3 | imap4) of a simulated CAS: its config file and its service."""

    config_bytes: bytes | None  # None: the file is missing
    encoding: str  # how `config` text was encoded ("" for config_file bytes or a missing file)
    modified: datetime | None  # LastWriteTimeUtc; None only for a missing file
    service: str  # Running | Stopped | ... | absent
    start_mode: str  # Auto | Manual | Disabled
    started: datetime | None  # process start, used while the service has a process
    refused_logons: tuple[RefusedLogonFact, ...] = ()

    @property
    def has_process(self) -> bool:
        """Whether the service has a process (so a process id and a start time)."""
        return self.service not in ("Stopped", "absent")


@dataclass(frozen=True)
class SimServer:
    """One simulated Client Access Server."""

    name: str
    address: str  # loopback address it listens on
    site: str  # the AD site the server's Netlogon reports
    build: str  # ExSetup.exe FileVersion, exactly as written in the fleet
    install_path: str  # MsiInstallPath exactly (real hosts end it with "\\")
    registry_key: str  # Setup | v8.0\Setup | "" (neither key exists)
    fault: str
    protocols: dict[str, SimProtocol]
    rollups: tuple[Rollup, ...] = ()
    computer: str = ""  # $env:COMPUTERNAME; defaults to name
    fqdn: str = ""
    roles: tuple[str, ...] = ("ClientAccess",)
    platform: str = DEFAULT_PLATFORM  # 2003r2 | 2008 | 2008r2 (scanner/lab/platforms.py)
    powershell: str = "2.0"  # 1.0 | 2.0
    account: str = "local"  # local | domain: the kind of account the lab user is here
    allow_unencrypted: bool = False  # WinRM service AllowUnencrypted
    system_root: str = ""  # %SystemRoot%; "" = the platform's default
    port: int | None = None  # own listening port; None = [lab] port (or the platform's)
    env_ignored: bool = False  # UNCONFIRMED switch: shell environment variables are ignored
    # [server.extra_files]: further files in the PopImap folder (file=/configSource= targets),
    # by file name as written, each the exact text encoded as UTF-8
    extra_files: dict[str, bytes] = field(default_factory=dict)
    language: str = "en"  # en | de: the language of its event messages
    application_log: str = "readable"  # readable | denied: may the scan account read it
    wmi: str = "readable"  # readable | denied (UNCONFIRMED switch): Win32_Service is not answered
    env_value_limit: int = 0  # UNCONFIRMED switch: PowerShell sees each env value cut to this length
    stdin_ignored: bool = False  # UNCONFIRMED switch: PowerShell's $input stays empty
    site_value: str = "SiteName"  # the Netlogon value holding `site` (SITE_VALUES)
    writable: bool = True  # false: the PopImap files are read-only for everyone (fix apply is denied)
    replace_fault: str = ""  # "" | locked | halfway: how [System.IO.File]::Replace fails (scanner/lab/simfix.py)
    restart_fails: bool = False  # Restart-Service fails (the service cannot start)
    write_fault: str = ""  # "" | disk-full: the new file's write stops halfway (scanner/lab/simfix.py)

    @property
    def windows(self) -> Platform:
        """The platform description (WinRM stack, ports, limits) of this server."""
        return platform(self.platform)

    @property
    def sysroot(self) -> str:
        """%SystemRoot% on this server."""
        return self.system_root or self.windows.system_root


@dataclass(frozen=True)
class Fleet:
    """A simulated organisation: lab settings and its servers, in file order."""

    lab: LabSettings
    servers: tuple[SimServer, ...]
    path: Path | None = field(default=None, compare=False)

    def server(self, name: str) -> SimServer:
        """The server called `name` (case-insensitive); KeyError if there is none."""
        for server in self.servers:
            if server.name.casefold() == name.casefold():
                return server
        raise KeyError(name)


def default_protocol() -> SimProtocol:
    """A protocol as setup leaves it: the default file, service installed but stopped."""
    return SimProtocol(config_bytes=DEFAULT_CONFIG_BYTES, encoding="utf-8", modified=DEFAULT_MODIFIED,
                       service=DEFAULT_SERVICE, start_mode=DEFAULT_START_MODE, started=None)


def build_numbers(build: str) -> tuple[int, int, int, int]:
    """The four numbers of a build string such as "8.3.83.6" or "08.03.0083.006"."""
    if not BUILD_PATTERN.match(build):
        raise ValueError(f"not a build number: {build!r}")
    a, b, c, d = (int(part) for part in build.split("."))
    return a, b, c, d


_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def server_addresses(base_address: str, count: int) -> list[str]:
    """`count` consecutive addresses from `base_address`, all inside 127.0.0.0/8
    (127.255.255.255, the broadcast address, excluded)."""
    base = int(ipaddress.IPv4Address(base_address))
    last = base + max(count, 1) - 1
    if base not in range(int(_LOOPBACK.network_address), int(_LOOPBACK.broadcast_address)) or \
            last >= int(_LOOPBACK.broadcast_address):
        raise ValueError(f"{count} servers from {base_address} leave 127.0.0.0/8")
    return [str(ipaddress.IPv4Address(base + i)) for i in range(count)]


# -- after a service pack --------------------------------------------------------------


def upgrade_server(fleet: Fleet, name: str, build: str, at: datetime) -> Fleet:
    """The fleet after (SP) setup ran on server `name` at `at`, bringing it to `build`.

    Setup writes both config files anew with the shipped defaults (so AllowCrossSiteSessions
    is back to false), replaces the rollups the old service pack had, and restarts the
    services that were running (they start after the files are written).
    """
    try:
        numbers = build_numbers(build)
    except ValueError:
        raise ConfigError(f"upgrade of {name}: {build!r} is not a build number such as '8.3.83.6'") from None
    if numbers[0] != 8:
        raise ConfigError(f"upgrade of {name}: {build!r} is not an Exchange 2007 build")
    try:
        old = fleet.server(name)
    except KeyError:
        raise ConfigError(f"upgrade of {name}: the fleet has no server of that name") from None
    at = as_utc(at).replace(microsecond=0)
    written = at - timedelta(minutes=2)

    def reset(proto: SimProtocol) -> SimProtocol:
        return replace(proto, config_bytes=DEFAULT_CONFIG_BYTES, encoding="utf-8", modified=written,
                       started=at if proto.has_process else proto.started)

    new = replace(old, build=build, rollups=(),
                  protocols={p: reset(proto) for p, proto in old.protocols.items()})
    return replace(fleet, servers=tuple(new if s is old else s for s in fleet.servers))



def listen_port(lab: LabSettings, server: SimServer) -> int:
    """The port `server` listens on: its own, else [lab] port, else its platform's default
    HTTP port (80 on WinRM 1.1, 5985 on 2.0); 0 means any free port."""
    if server.port is not None:
        return server.port
    if lab.port is not None:
        return lab.port
    return server.windows.http_port


def relocate_fleet(fleet: Fleet, base_address: str, port: int) -> Fleet:
    """The same organisation on other loopback addresses and port (0: any free port),
    e.g. for tests or a second lab beside a running one."""
    try:
        address = ipaddress.IPv4Address(base_address)
        addresses = server_addresses(base_address, len(fleet.servers))
    except ValueError as exc:
        raise ConfigError(f"cannot move the lab to {base_address}: {exc}") from None
    if not address.is_loopback or not 0 <= port <= 65535:
        raise ConfigError(f"cannot move the lab to {base_address}:{port}: loopback addresses and ports 0-65535 only")
    lab = replace(fleet.lab, base_address=base_address, port=port)
    servers = tuple(replace(s, address=a, port=None) for s, a in zip(fleet.servers, addresses, strict=True))
    return replace(fleet, lab=lab, servers=servers)

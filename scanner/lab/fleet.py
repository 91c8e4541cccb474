r"""The lab's simulated Exchange organisation: what each simulated CAS *is* (docs/contracts.md,
"Lab fleet (TOML)").

`load_fleet()` reads and validates a fleet file into the frozen dataclasses of
scanner/lab/fleet_model.py; every mistake is a ConfigError naming the file, the server
and the field.

Format notes beyond docs/contracts.md (all optional):
  [lab] domain        NTLM/Windows domain of the lab account ("CONTOSO"): the inventory
                      then names the user "CONTOSO\\auditor".
  [lab] auth = "kerberos"  the lab accepts Kerberos (Negotiate) only, for HTTP/<fqdn>
                      of each server, with the key in [lab] keytab (a path, relative to
                      the fleet file's folder); [lab] domain is then the Kerberos realm
                      ("CONTOSO.COM") and the inventory names the user "auditor@CONTOSO.COM"
                      and each server by its fqdn; [lab] password is not used (the KDC
                      checks it) and may be left out.
  [lab] tls_cert, tls_key  https: the listeners' certificate and key (PEM paths, relative
                      to the fleet file's folder); the inventory then says scheme "https"
                      with the certificate as its ca_bundle (docs/lab.md, "https and
                      channel binding").
  [lab] cbt_hardening = "relaxed" | "strict" | "none"   WinRM's CbtHardeningLevel over
                      https (default relaxed; scanner/lab/tlsbind.py).
  [lab] port = 0      any free port, chosen per server when the lab starts (tests).
  [[server]] computer $env:COMPUTERNAME the collector reports (default: name).
  [[server]] fqdn     Fqdn for discovery (default: "<name in lower case>.contoso.lab").
  [[server]] roles    ServerRole flags for discovery (default ["ClientAccess"]).
  [[server]] rollups  [{ name = "Update Rollup 23 for ...", installed = "20170321" }]
  [[server]] registry_key = ""   neither Setup key exists (the collector finds no path).
  [[server]] hostile = true      a compromised server: install_path may be any text
                      (e.g. one that looks like a spreadsheet formula), for tests.
  Windows platform (docs/lab.md, "Platforms"; [lab] gives defaults for every server):
  platform = "2003r2" | "2008" | "2008r2"   default 2008r2 (scanner/lab/platforms.py)
  powershell = "1.0" | "2.0"     default: 1.0 on 2003r2/2008, 2.0 on 2008r2 (which has
                      no 1.0)
  account = "local" | "domain"   the kind of account the lab user is; default "domain"
                      when [lab] domain is set, else "local" (Basic works for local only)
  allow_unencrypted = false      WinRM's AllowUnencrypted (Basic over http needs true)
  [[server]] system_root = 'C:\WINNT'   %SystemRoot% (default: the platform's)
  [[server]] port     the port this server listens on (default: [lab] port; when [lab]
                      has no port, the platform's default HTTP port, 80 or 5985)
  [[server]] site     the AD site the server's Netlogon reports (default
                      Default-First-Site-Name).
  [[server]] site_value = "SiteName" | "DynamicSiteName" | "none"  the Netlogon
                      registry value that holds it (default SiteName; "none": neither).
  [[server]] env_ignored = true  UNCONFIRMED behaviour switch: the server ignores the
                      shell's environment variables (whether WinRM 1.1 does is unknown)
  [[server]] language = "en" | "de"   language of event messages (default en; lab/eventlog.py)
  [[server]] application_log = "readable" | "denied"   may the account read it (default readable)
  [[server]] wmi = "readable" | "denied"   UNCONFIRMED switch: Get-WmiObject Win32_Service
                      fails with access denied, so no service's start mode is read (XS-013)
  [server.extra_files] "name.config" = '''...'''   further files in the PopImap folder
                      (targets of appSettings file= / configSource=), exact text, UTF-8;
                      served to the collector as Windows would (scanner/lab/simfiles.py)
  [[server]] env_value_limit = 2048  UNCONFIRMED switch: PowerShell sees each shell
                      environment value cut to this many characters (0: whole)
  [[server]] stdin_ignored = true  UNCONFIRMED switch: PowerShell's $input stays empty
                      (whether PowerShell 1.0 reads stdin under -EncodedCommand is unknown)
  [lab] admin_username, admin_password   an account allowed to write (fix apply); the
                      scan account only reads (scanner/lab/simfix.py)
  [[server]] writable = false   the PopImap files are read-only for everyone
  [[server]] replace_fault = "locked" | "halfway"   how [System.IO.File]::Replace fails
  [[server]] restart_fails = true   Restart-Service cannot start the service again
  [[server]] write_fault = "disk-full"   writing the new file beside the config file stops
                      halfway: "There is not enough space on the disk." (UNCONFIRMED switch)
  [server.pop3] newline = "crlf" | "lf"   line endings of `config` text (default: as the
                      TOML parser returns it, i.e. "\\n"; Windows files have CRLF).
  A protocol table left out entirely stands for the protocol as setup left it: the
  shipped default file (see DEFAULT_CONFIG_TEXT) and the default service state. A
  protocol table without `config` and `config_file` is a server whose file is missing.
  `config_file` must be a relative path inside the fleet file's folder; its bytes are
  used exactly (then `encoding` and `newline` must not be given).
  Timestamps: TOML date-times (or ISO strings); one without an offset is taken as UTC.
  `started` only matters while the service has a process (not Stopped, not absent).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from scanner.collect.collected import CONFIG_FILE_NAMES, Rollup
from scanner.errors import ConfigError
from scanner.facts import PROTOCOLS
from scanner.lab.fleet_model import (
    ACCOUNTS,
    APPLICATION_LOG_ACCESS,
    AUTHS,
    BUILD_PATTERN,
    DEFAULT_BUILD,
    DEFAULT_DNS_SUFFIX,
    DEFAULT_INSTALL_PATH,
    DEFAULT_MODIFIED,
    DEFAULT_SERVICE,
    DEFAULT_SITE,
    DEFAULT_START_MODE,
    DEFAULT_STARTED,
    ENCODINGS,
    EVENT_LANGUAGES,
    FAULTS,
    MAX_CONFIG_BYTES,
    NEWLINES,
    REGISTRY_KEYS,
    ROLES,
    SERVICE_STATES,
    SITE_VALUES,
    START_MODES,
    WMI_ACCESS,
    Fleet,
    LabSettings,
    RefusedLogonFact,
    SimProtocol,
    SimServer,
    build_numbers,
    default_protocol,
    server_addresses,
)
from scanner.lab.platforms import DEFAULT_PLATFORM, PLATFORMS, POWERSHELLS, platform
from scanner.lab.tlsbind import CBT_LEVELS
from scanner.util.timefmt import as_utc, registry_day
from scanner.util.tomlfile import check_keys, line_of, load_toml, server_location

#: Keys a [[server]] may set and [lab] may give a default for (the Windows platform).
_PLATFORM_KEYS = {"platform", "powershell", "account", "allow_unencrypted"}
_LAB_KEYS = {"admin_username", "admin_password", "username", "password", "auth", "latency_ms", "base_address", "port", "domain", "keytab",
             "tls_cert", "tls_key", "cbt_hardening", *_PLATFORM_KEYS}
_SERVER_KEYS = {"writable", "replace_fault", "restart_fails", "write_fault", "name", "site", "build", "install_path", "registry_key", "fault", "rollups", "hostile",
                "computer", "fqdn", "roles", "system_root", "port", "env_ignored", "extra_files",
                "language", "application_log", "wmi", "env_value_limit", "stdin_ignored", "site_value",
                *_PLATFORM_KEYS, *PROTOCOLS}
_SYSTEM_ROOT = re.compile(r'^[A-Za-z]:\\[^\\/:*?"<>|]+$')
_PROTOCOL_KEYS = {"config", "config_file", "encoding", "newline", "modified", "service",
                  "start_mode", "started", "refused_logons"}
_LOGON_KEYS = {"user", "at", "mailbox_site"}
# A file name in the PopImap folder: what Windows allows in one path component.
_FILE_NAME = re.compile(r'^[^\\/:*?"<>|\x00-\x1f]{1,255}$')
_ROLLUP_KEYS = {"name", "installed"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


# -- loading ---------------------------------------------------------------------------


class _Where:
    """Builds error locations: "<file>:<line>: server 'CAS01': pop3.encoding ..."."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text

    def lab(self) -> str:
        line = line_of(self.text, "[lab]")
        return f"{self.path}:{line}: [lab]" if line else f"{self.path}: [lab]"

    def server(self, name: str | None, index: int) -> str:
        return server_location(self.path, self.text, name, index)


def _fail(where: str, key: str, problem: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"{where}: {key} {problem}", hint=hint)


def _text(table: dict[str, Any], key: str, where: str, default: str | None = None, *,
          empty: bool = False, prefix: str = "", control: bool = False) -> str:
    value = table.get(key, default)
    key = prefix + key
    if value is None:
        raise _fail(where, key, "is required")
    if not isinstance(value, str):
        raise _fail(where, key, f"must be a string, not {type(value).__name__}")
    if not empty and not value.strip():
        raise _fail(where, key, "must not be empty")
    if not control and any(ord(ch) < 32 for ch in value):
        raise _fail(where, key, "contains a control character")
    return value


def _choice(table: dict[str, Any], key: str, where: str, choices: tuple[str, ...], default: str, *,
            prefix: str = "") -> str:
    value = table.get(key, default)
    key = prefix + key
    if value not in choices:
        raise _fail(where, key, f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
    return str(value)


def _int(table: dict[str, Any], key: str, where: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(where, key, f"must be a whole number from {low} to {high}, not {value!r}")
    return value


def _bool(table: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise _fail(where, key, f"must be true or false, not {value!r}")
    return value


def _moment(value: Any, key: str, where: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _fail(where, key, f"is not a date-time: {value!r}", "write e.g. 2026-11-20T10:00:00Z") from None
    if not isinstance(value, datetime):
        kind = "a date without a time" if isinstance(value, date) else type(value).__name__
        raise _fail(where, key, f"must be a date-time, not {kind}", "write e.g. 2026-11-20T10:00:00Z")
    return as_utc(value)


def _lab(table: Any, where: str, folder: Path) -> LabSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [lab] must be a table")
    check_keys(table, _LAB_KEYS, where)
    auth = _choice(table, "auth", where, AUTHS, "ntlm")
    domain = _text(table, "domain", where, "", empty=True)
    if any(ch in domain for ch in ":\\/@ "):
        what = "a Kerberos realm such as 'CONTOSO.COM'" if auth == "kerberos" else "a NetBIOS domain name such as 'CONTOSO'"
        raise _fail(where, "domain", f"must be {what}, not {domain!r}")
    username = _text(table, "username", where)
    if any(ch in username for ch in ":\\"):
        raise _fail(where, "username", "must be a bare user name (put the domain in 'domain')")
    password = _text(table, "password", where, "" if auth == "kerberos" else None, empty=auth == "kerberos")
    keytab = ""
    if auth == "kerberos":
        keytab = str(folder / _text(table, "keytab", where))
    elif "keytab" in table:
        raise _fail(where, "keytab", "is only used with auth = \"kerberos\"")
    if ":" in password:
        raise _fail(where, "password", "cannot contain ':' (the NTLM user file separates fields with it)")
    base = _text(table, "base_address", where, "127.0.1.1")
    try:
        address = ipaddress.IPv4Address(base)
    except ValueError:
        raise _fail(where, "base_address", f"is not an IPv4 address: {base!r}") from None
    if not address.is_loopback:
        raise _fail(where, "base_address", f"must be a loopback address in 127.0.0.0/8, not {base}",
                    "the lab only ever listens on loopback")
    tls = {key: str(folder / _text(table, key, where)) for key in ("tls_cert", "tls_key") if key in table}
    if len(tls) == 1:
        raise _fail(where, "tls_cert" if "tls_key" in tls else "tls_key", "must be given with the other (https)")
    plat = _choice(table, "platform", where, PLATFORMS, DEFAULT_PLATFORM)
    powershell = _choice(table, "powershell", where, POWERSHELLS, "") if "powershell" in table else None
    account = _choice(table, "account", where, ACCOUNTS, "") if "account" in table else None
    return LabSettings(
        username=username,
        password=password,
        auth=auth,
        latency_ms=_int(table, "latency_ms", where, 0, 0, 60_000),
        base_address=base,
        port=_int(table, "port", where, 0, 0, 65535) if "port" in table else None,
        domain=domain,
        platform=plat,
        powershell=powershell,
        account=account,
        allow_unencrypted=_bool(table, "allow_unencrypted", where, False),
        keytab=keytab,
        admin_username=_text(table, "admin_username", where, "", empty=True),
        admin_password=_text(table, "admin_password", where, "", empty=True),
        tls_cert=tls.get("tls_cert", ""),
        tls_key=tls.get("tls_key", ""),
        cbt_hardening=_choice(table, "cbt_hardening", where, CBT_LEVELS, "relaxed"),
    )


def _encode(text: str, encoding: str, newline: str | None) -> bytes:
    if newline is not None:
        text = text.replace("\r\n", "\n")
        if newline == "crlf":
            text = text.replace("\n", "\r\n")
    if encoding == "utf-16":
        return b"\xff\xfe" + text.encode("utf-16-le")  # Notepad "Unicode": UTF-16 LE with BOM
    return text.encode(encoding)


def _config_file(value: Any, where: str, key: str, folder: Path) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, key, "must be a non-empty relative path")
    relative = Path(value)
    if relative.is_absolute() or value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise _fail(where, key, f"must be relative to the fleet file's folder, not {value!r}")
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise _fail(where, key, f"leaves the fleet file's folder: {value!r}")
    try:
        size = target.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise _fail(where, key, f"is larger than {MAX_CONFIG_BYTES} bytes: {value!r}")
        return target.read_bytes()
    except FileNotFoundError:
        raise _fail(where, key, f"names a file that does not exist: {target}") from None
    except IsADirectoryError:
        raise _fail(where, key, f"names a folder, not a file: {target}") from None
    except OSError as exc:
        raise _fail(where, key, f"cannot be read: {target}: {exc.strerror}") from None


def _logons(value: Any, where: str, prefix: str) -> tuple[RefusedLogonFact, ...]:
    if not isinstance(value, list):
        raise _fail(where, prefix + "refused_logons", "must be a list of { user, at, mailbox_site } tables")
    logons = []
    for number, entry in enumerate(value, start=1):
        label = f"{prefix}refused_logons[{number}]."
        if not isinstance(entry, dict):
            raise _fail(where, label.rstrip("."), "must be a table { user, at, mailbox_site }")
        check_keys(entry, _LOGON_KEYS, f"{where}: {label.rstrip('.')}")
        if "at" not in entry:
            raise _fail(where, label + "at", "is required")
        logons.append(RefusedLogonFact(
            user=_text(entry, "user", where, prefix=label, control=True),  # event data: hostile is allowed
            at=_moment(entry["at"], label + "at", where),
            mailbox_site=_text(entry, "mailbox_site", where, prefix=label, control=True),
        ))
    return tuple(logons)


def _protocol(table: Any, protocol: str, where: str, folder: Path) -> SimProtocol:
    """[server.pop3] / [server.imap4]; errors name the field as "pop3.encoding"."""
    prefix = f"{protocol}."
    if not isinstance(table, dict):
        raise _fail(where, protocol, f"must be a table ([server.{protocol}])")
    check_keys(table, _PROTOCOL_KEYS, f"{where}: [{protocol}]")
    has_text, has_file = "config" in table, "config_file" in table
    if has_text and has_file:
        raise _fail(where, f"{prefix}config and {prefix}config_file", "cannot both be given")
    encoding = ""
    config: bytes | None = None
    if has_file:
        for key in ("encoding", "newline"):
            if key in table:
                raise _fail(where, prefix + key, "cannot be given with config_file (its bytes are used exactly)")
        config = _config_file(table["config_file"], where, prefix + "config_file", folder)
    elif has_text:
        text = table["config"]
        if not isinstance(text, str):
            raise _fail(where, prefix + "config", "must be the file's text (a string)")
        encoding = _choice(table, "encoding", where, ENCODINGS, "utf-8", prefix=prefix)
        newline = _choice(table, "newline", where, NEWLINES, "lf", prefix=prefix) if "newline" in table else None
        try:
            config = _encode(text, encoding, newline)
        except UnicodeEncodeError as exc:
            raise _fail(where, prefix + "config", f"cannot be encoded as {encoding}: {exc.reason}") from None
        if len(config) > MAX_CONFIG_BYTES:
            raise _fail(where, prefix + "config", f"is larger than {MAX_CONFIG_BYTES} bytes")
    else:
        for key in ("encoding", "newline"):
            if key in table:
                raise _fail(where, prefix + key, "needs config (without config the file is missing)")
    modified: datetime | None = None
    if "modified" in table:
        if config is None:
            raise _fail(where, prefix + "modified", "needs config or config_file (a missing file has no time)")
        modified = _moment(table["modified"], prefix + "modified", where)
    elif config is not None:
        modified = DEFAULT_MODIFIED
    started = _moment(table["started"], prefix + "started", where) if "started" in table else None
    proto = SimProtocol(
        config_bytes=config,
        encoding=encoding,
        modified=modified,
        service=_choice(table, "service", where, SERVICE_STATES, DEFAULT_SERVICE, prefix=prefix),
        start_mode=_choice(table, "start_mode", where, START_MODES, DEFAULT_START_MODE, prefix=prefix),
        started=started,
        refused_logons=_logons(table.get("refused_logons", []), where, prefix),
    )
    if proto.has_process and proto.started is None:
        proto = replace(proto, started=DEFAULT_STARTED)
    return proto


def _extra_files(value: Any, where: str) -> dict[str, bytes]:
    """[server.extra_files]: file name -> exact text, files beside the config files."""
    if not isinstance(value, dict):
        raise _fail(where, "extra_files", "must be a table of file name = text ([server.extra_files])")
    files: dict[str, bytes] = {}
    seen: dict[str, str] = {}
    for name, text in value.items():
        if not _FILE_NAME.match(name) or name in (".", "..") or name.endswith((" ", ".")):
            raise _fail(where, f"extra_files.{name!r}", "must be a file name in the PopImap folder (no folder, "
                                                        "no \\ / : * ? \" < > |, no trailing dot or space)")
        if name.casefold() in {n.casefold() for n in CONFIG_FILE_NAMES.values()}:
            raise _fail(where, f"extra_files.{name!r}", "is a protocol's config file: set it in [server.pop3] or "
                                                        "[server.imap4]")
        if name.casefold() in seen:
            raise _fail(where, f"extra_files.{name!r}", f"names the same file as {seen[name.casefold()]!r} "
                                                        "(Windows file names are case-insensitive)")
        if not isinstance(text, str):
            raise _fail(where, f"extra_files.{name!r}", "must be the file's exact text (a string)")
        data = text.encode("utf-8")
        if len(data) > MAX_CONFIG_BYTES:
            raise _fail(where, f"extra_files.{name!r}", f"is larger than {MAX_CONFIG_BYTES} bytes")
        seen[name.casefold()] = name
        files[name] = data
    return files


def _rollups(value: Any, where: str) -> tuple[Rollup, ...]:
    if not isinstance(value, list):
        raise _fail(where, "rollups", "must be a list of { name, installed } tables")
    rollups = []
    for number, entry in enumerate(value, start=1):
        at_where = f"{where}: rollups[{number}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at_where} must be a table {{ name, installed }}")
        check_keys(entry, _ROLLUP_KEYS, at_where)
        installed = entry.get("installed")
        if isinstance(installed, date) and not isinstance(installed, datetime):
            installed = registry_day(installed)
        if not isinstance(installed, str) or not re.fullmatch(r"\d{8}", installed):
            raise _fail(at_where, "installed", f"must be yyyymmdd (as the registry has it), not {installed!r}")
        rollups.append(Rollup(name=_text(entry, "name", at_where), installed=installed))
    return tuple(rollups)


def _platform_fields(table: dict[str, Any], lab: LabSettings, where: str) -> dict[str, Any]:
    """platform, powershell, account, allow_unencrypted, system_root, port and the
    unconfirmed switches env_ignored, env_value_limit, stdin_ignored."""
    plat = _choice(table, "platform", where, PLATFORMS, lab.platform)
    windows = platform(plat)
    default_ps = lab.powershell if lab.powershell in windows.powershells else windows.default_powershell
    powershell = _choice(table, "powershell", where, POWERSHELLS, default_ps)
    if powershell not in windows.powershells:
        raise _fail(where, "powershell", f"cannot be {powershell!r} on platform {plat!r}",
                    f"{windows.windows} ships PowerShell {', '.join(windows.powershells)} (docs/lab.md, 'Platforms')")
    account = _choice(table, "account", where, ACCOUNTS, lab.account or ("domain" if lab.domain else "local"))
    system_root = _text(table, "system_root", where, windows.system_root)
    if not _SYSTEM_ROOT.match(system_root):
        raise _fail(where, "system_root", f"must be a folder such as 'C:\\WINNT', not {system_root!r}")
    port = _int(table, "port", where, 0, 0, 65535) if "port" in table else None
    return {
        "platform": plat, "powershell": powershell, "account": account,
        "allow_unencrypted": _bool(table, "allow_unencrypted", where, lab.allow_unencrypted),
        "system_root": system_root, "port": port, "env_ignored": _bool(table, "env_ignored", where, False),
        "env_value_limit": _int(table, "env_value_limit", where, 0, 0, 32_767),
        "stdin_ignored": _bool(table, "stdin_ignored", where, False),
        "writable": _bool(table, "writable", where, True),
        "replace_fault": _choice(table, "replace_fault", where, ("", "locked", "halfway"), ""),
        "restart_fails": _bool(table, "restart_fails", where, False),
        "write_fault": _choice(table, "write_fault", where, ("", "disk-full"), ""),
    }


def _server(table: Any, index: int, address: str, whereof: _Where, folder: Path,
            lab: LabSettings | None = None) -> SimServer:
    if not isinstance(table, dict):
        raise ConfigError(f"{whereof.server(None, index)} must be a table ([[server]])")
    raw_name = table.get("name")
    where = whereof.server(raw_name if isinstance(raw_name, str) else None, index)
    check_keys(table, _SERVER_KEYS, where)
    name = _text(table, "name", where)
    if not _NAME.match(name):
        raise _fail(where, "name", f"must be a host name (letters, digits, '-'), not {name!r}")
    build = _text(table, "build", where, DEFAULT_BUILD)
    if not BUILD_PATTERN.match(build):
        raise _fail(where, "build", f"must be a file version such as '8.3.83.6', not {build!r}")
    if build_numbers(build)[0] != 8:
        raise _fail(where, "build", f"must be an Exchange 2007 build (8.x.y.z), not {build!r}")
    install_path = _text(table, "install_path", where, DEFAULT_INSTALL_PATH)
    if not re.match(r"^[A-Za-z]:\\", install_path) and not table.get("hostile", False):
        raise _fail(where, "install_path", f"must be an absolute Windows path such as 'D:\\Exchange', not {install_path!r}",
                    hint="a server that sends anything else on purpose says hostile = true")
    roles = table.get("roles", ["ClientAccess"])
    if (not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles)
            or "ClientAccess" not in roles):
        raise _fail(where, "roles", f"must list ServerRole flags from {', '.join(ROLES)} including ClientAccess, "
                                    f"not {roles!r}")
    protocols: dict[str, SimProtocol] = {}
    for protocol in PROTOCOLS:
        if protocol in table:
            protocols[protocol] = _protocol(table[protocol], protocol, where, folder)
        else:
            protocols[protocol] = default_protocol()
    return SimServer(
        name=name,
        address=address,
        site=_text(table, "site", where, DEFAULT_SITE),
        site_value=_choice(table, "site_value", where, SITE_VALUES, "SiteName"),
        build=build,
        install_path=install_path,
        registry_key=_choice(table, "registry_key", where, REGISTRY_KEYS, "Setup"),
        fault=_choice(table, "fault", where, FAULTS, ""),
        protocols=protocols,
        rollups=_rollups(table.get("rollups", []), where),
        computer=_text(table, "computer", where, name),
        fqdn=_text(table, "fqdn", where, f"{name.lower()}.{DEFAULT_DNS_SUFFIX}"),
        roles=tuple(r for r in ROLES if r in roles),
        extra_files=_extra_files(table.get("extra_files", {}), where),
        **_platform_fields(table, lab or _DEFAULT_LAB, where),
        language=_choice(table, "language", where, EVENT_LANGUAGES, "en"),
        application_log=_choice(table, "application_log", where, APPLICATION_LOG_ACCESS, "readable"),
        wmi=_choice(table, "wmi", where, WMI_ACCESS, "readable"),
    )


_DEFAULT_LAB = LabSettings(username="auditor", password="-", auth="ntlm", latency_ms=0,
                           base_address="127.0.1.1", port=None)



def load_fleet(path: Path) -> Fleet:
    """Read and validate a fleet file; ConfigError names file, line, server and field."""
    path = Path(path)
    table, text = load_toml(path, "fleet")
    whereof = _Where(path, text)
    check_keys(table, {"lab", "server"}, str(path))
    if "lab" not in table:
        raise ConfigError(f"{path}: [lab] is required", hint="it names username, password and auth")
    lab = _lab(table["lab"], whereof.lab(), path.parent)
    servers_raw = table.get("server", [])
    if not isinstance(servers_raw, list) or not servers_raw:
        raise ConfigError(f"{path}: no [[server]] entries", hint="add at least one [[server]] with a name")
    try:
        addresses = server_addresses(lab.base_address, len(servers_raw))
    except ValueError as exc:
        raise _fail(whereof.lab(), "base_address", f"is too high: {exc}",
                    "choose a lower base_address such as 127.0.1.1") from None
    folder = path.resolve().parent
    servers: list[SimServer] = []
    seen: dict[str, str] = {}
    for index, (entry, address) in enumerate(zip(servers_raw, addresses, strict=True)):
        server = _server(entry, index, address, whereof, folder, lab)
        key = server.name.casefold()
        if key in seen:
            raise _fail(whereof.server(server.name, index), "name",
                        f"is used twice (also by server {seen[key]!r}; names are case-insensitive)")
        seen[key] = server.name
        servers.append(server)
    return Fleet(lab=lab, servers=tuple(servers), path=path)


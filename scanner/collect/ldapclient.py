"""Reading Active Directory over LDAP (ldap3): the only module that imports `ldap3`.

`inventory discover --ldap` reads the Exchange server objects of the configuration
partition from the scanner's own host, so no second hop is involved (docs/exchange-facts.md,
"Exchange servers in the directory"). Every connection is inside TLS: LDAPS (636) or
StartTLS (389), with the certificate checked against the system's CAs or a CA bundle and
the host name checked, never switched off. Binds: simple (only inside TLS, as AD with
LDAP signing required also insists), NTLM (ldap3's Sicily bind, which Active Directory
accepts), Kerberos (SASL GSSAPI, with the ticket from kinit's cache or from the password:
collect/kerberos.py). The password never leaves this process except inside the bind.

What the directory sends is untrusted: referrals are not followed, entries outside the
base are dropped, one connection reads at most `max_bytes` (ldap3 reads an LDAP message
whole, whatever length it declares), the search is paged and stops at `max_entries`, and each attribute keeps
at most MAX_VALUES values of at most MAX_VALUE_BYTES bytes (an entry with more is reported,
not truncated into a plausible value). The values stay bytes here; exchange_directory.py
decides what they mean.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

from scanner.collect import kerberos
from scanner.errors import CollectionError, ConfigError

Bind = Literal["ntlm", "kerberos", "simple"]  # how discovery binds to the directory
BINDS: tuple[Bind, ...] = get_args(Bind)
Transport = Literal["ldaps", "starttls"]  # TLS from the first byte, or StartTLS
TRANSPORTS: tuple[Transport, ...] = get_args(Transport)
DEFAULT_PORTS = {"ldaps": 636, "starttls": 389}
#: Attributes of an msExchExchangeServer object the discovery reads.
SERVER_ATTRIBUTES = ("cn", "msExchCurrentServerRoles", "msExchServerSite", "serialNumber", "networkAddress")
MAX_VALUES = 32            # Exchange setup writes 6 networkAddress values
MAX_VALUE_BYTES = 1024     # a DN in AD is at most 255 characters per RDN; a host name 253
MAX_DN_BYTES = 2048
DEFAULT_MAX_ENTRIES = 5000
#: Everything the domain controller may send on one connection (ldap3 reads each LDAP
#: message whole, whatever length it declares): 5,000 server objects are about 10 MB.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
PAGE_SIZE = 500            # under AD's default MaxPageSize of 1000
_PAGED_RESULTS = "1.2.840.113556.1.4.319"   # RFC 2696


@dataclass(frozen=True)
class DirectoryAccess:
    """How to reach and bind to one domain controller. Holds no password."""

    host: str
    port: int
    transport: str          # ldaps | starttls
    bind: str               # simple | ntlm | kerberos
    username: str
    ca_bundle: str | None   # PEM file of the CAs to trust; None: the system's


@dataclass(frozen=True)
class DirectoryEntry:
    """One object as the directory returned it: its DN and the raw values read."""

    dn: str
    values: dict[str, tuple[bytes, ...]]   # lower-case attribute name -> values
    oversized: str | None                  # why the entry was not kept whole, or None


@dataclass(frozen=True)
class DirectoryAnswer:
    base: str
    servers: tuple[DirectoryEntry, ...]
    sites: dict[str, str | None]   # site DN (as referenced) -> the site object's cn, None: not found


def check_access(access: DirectoryAccess) -> None:
    """ConfigError for settings that cannot work, before anything is sent."""
    if access.transport not in TRANSPORTS:
        raise ConfigError(f"--ldap-transport must be one of {', '.join(TRANSPORTS)}, not {access.transport!r}")
    if access.bind not in BINDS:
        raise ConfigError(f"--ldap-auth must be one of {', '.join(BINDS)}, not {access.bind!r}")
    if access.bind == "ntlm" and "\\" not in access.username:
        raise ConfigError(f"an NTLM bind names the account as DOMAIN\\user, not {access.username!r}")
    if access.bind == "kerberos" and "\\" in access.username:
        raise ConfigError(f"a Kerberos bind names the account as user@REALM, not {access.username!r}",
                          hint="the realm is the Active Directory domain's DNS name in capitals")


def check_base(base: str) -> None:
    """ConfigError unless `base` is a distinguished name (RFC 4514) of a sensible length."""
    from ldap3.core.exceptions import LDAPInvalidDnError
    from ldap3.utils.dn import parse_dn

    problem = None
    if not base.strip() or len(base) > MAX_DN_BYTES:
        problem = "is empty" if not base.strip() else f"is longer than {MAX_DN_BYTES} characters"
    else:
        try:
            parse_dn(base)
        except (LDAPInvalidDnError, ValueError, IndexError) as exc:
            problem = f"is not a distinguished name ({_clip(str(exc), 80)})"
    if problem:
        raise ConfigError(f"--base {base[:80]!r} {problem}",
                          hint="e.g. --base 'CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=contoso,DC=local'")


def read_exchange_servers(access: DirectoryAccess, password: str | None, *, base: str | None,
                          timeout_s: float, max_entries: int = DEFAULT_MAX_ENTRIES,
                          max_bytes: int = DEFAULT_MAX_BYTES) -> DirectoryAnswer:
    """Every msExchExchangeServer object under `base` (default: CN=Microsoft
    Exchange,CN=Services in the configuration partition the rootDSE names) and the cn of
    every AD site they reference. CollectionError when the directory cannot be read."""
    check_access(access)
    if base is not None:
        check_base(base)
    if access.bind != "kerberos" and not password:
        raise ConfigError(f"a {access.bind} bind needs the password of {access.username}")
    with _connection(access, password, timeout_s, max_bytes) as conn:
        if base is None:
            config_nc = _config_naming_context(conn, access)
            base = f"CN=Microsoft Exchange,CN=Services,{config_nc}"
        servers = _search(conn, access, base, "(objectClass=msExchExchangeServer)", SERVER_ATTRIBUTES,
                          max_entries)
        sites: dict[str, str | None] = {}
        for entry in servers:
            for raw in entry.values.get("msexchserversite", ())[:1]:
                dn = directory_text(raw)
                if dn is not None and dn.casefold() not in {d.casefold() for d in sites}:
                    sites[dn] = _site_name(conn, access, dn)
        return DirectoryAnswer(base, tuple(servers), sites)


def _ldap3() -> Any:
    try:
        import ldap3
    except ImportError:   # a dependency of cas-audit: only a broken installation lacks it
        raise CollectionError("internal", "the ldap3 package is missing: reinstall cas-audit") from None
    return ldap3


@contextmanager
def _connection(access: DirectoryAccess, password: str | None, timeout_s: float, max_bytes: int) -> Iterator[Any]:
    ldap3 = _ldap3()
    from ldap3.core import exceptions as lx

    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=access.ca_bundle, sni=_sni(access.host))
    server = ldap3.Server(access.host, port=access.port, use_ssl=access.transport == "ldaps", tls=tls,
                          get_info=ldap3.NONE, connect_timeout=timeout_s)
    # ldap3 packs receive_timeout into SO_RCVTIMEO as whole seconds
    kwargs: dict[str, Any] = {"auto_referrals": False, "receive_timeout": max(1, math.ceil(timeout_s)),
                              "raise_exceptions": True,
                              "read_only": True, "check_names": False}
    if access.bind == "simple":
        kwargs.update(user=access.username, password=password, authentication=ldap3.SIMPLE)
    elif access.bind == "ntlm":
        kwargs.update(user=access.username, password=password, authentication=ldap3.NTLM)
    else:
        kerberos.ensure_ticket(access.username, password, host=access.host)
        # with `user`, ldap3 takes this principal's ticket from the cache (collection), not
        # whichever is the cache's default
        kwargs.update(user=access.username, authentication=ldap3.SASL, sasl_mechanism=ldap3.KERBEROS)
    conn = ldap3.Connection(server, **kwargs)
    where = f"{access.host}:{access.port}"
    try:
        try:
            conn.open(read_server_info=False)
            if access.transport == "starttls":
                conn.start_tls(read_server_info=False)
            # ldap3 reads only through conn.socket; the budget is kept beside it, since ldap3
            # drops the socket after a failed read
            conn.socket = conn.cas_audit_budget = _Budget(conn.socket, max_bytes, where)
            conn.bind(read_server_info=False)
        except lx.LDAPException as exc:
            _over_budget(conn)
            raise _bind_error(exc, access, where) from None
        except OSError as exc:
            raise _socket_error(exc, where) from None
        except Exception as exc:
            if type(exc).__module__.split(".")[0] == "gssapi":   # python-gssapi: the Kerberos side of the bind
                raise kerberos.failure(str(exc), user=access.username, host=access.host, service="ldap") from None
            raise
        yield conn
    finally:
        try:
            conn.unbind()
        except Exception:  # closing a connection that may already be gone
            pass


class _Budget:
    """The socket ldap3 reads from, counting what arrives: beyond `limit` bytes the read
    fails (ldap3 reports it as a receive error; `_over_budget` names the reason)."""

    def __init__(self, sock: Any, limit: int, where: str) -> None:
        self._sock = sock
        self.left = limit
        self.limit = limit
        self.where = where
        self.exceeded = False

    def recv(self, size: int, *args: Any) -> bytes:
        data: bytes = self._sock.recv(size, *args)
        self.left -= len(data)
        if self.left < 0:
            self.exceeded = True
            raise OSError(f"more than {self.limit} bytes from {self.where}")
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _over_budget(conn: Any) -> None:
    """CollectionError when the connection's byte budget ended the last read."""
    budget = getattr(conn, "cas_audit_budget", None)
    if isinstance(budget, _Budget) and budget.exceeded:
        raise CollectionError("output", f"the domain controller {budget.where} sent more than {budget.limit} bytes",
                              hint="no directory answer to this search is that large; check --base, or the "
                                   "domain controller") from None


def _sni(host: str) -> str | None:
    """The server name sent in the TLS handshake: a host name, never an address."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        return host


def _socket_error(exc: OSError, where: str) -> CollectionError:
    if isinstance(exc, TimeoutError):
        return CollectionError("timeout", f"the domain controller {where} did not answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return CollectionError("refused", f"the domain controller {where} refused the connection",
                               hint="check the host name and that LDAPS (636) or LDAP (389) is reachable from here")
    if isinstance(exc, ssl.SSLError):
        return _tls_error(str(exc), where)
    return CollectionError("reset", f"the connection to the domain controller {where} failed: {exc}")


def _tls_error(detail: str, where: str) -> CollectionError:
    return CollectionError(
        "tls", f"the TLS certificate of the domain controller {where} could not be verified: {_clip(detail)}",
        hint="pass the CA that issued the domain controller's certificate with --ldap-ca-bundle FILE (PEM), "
             "and name the domain controller as its certificate does (its FQDN)")


def _bind_error(exc: Exception, access: DirectoryAccess, where: str) -> CollectionError:
    from ldap3.core import exceptions as lx

    detail = str(exc)
    if isinstance(exc, lx.LDAPSocketOpenError):
        lowered = detail.lower()
        if "timed out" in lowered or "timeout" in lowered:   # also a TLS handshake that never ends
            return _socket_error(TimeoutError(), where)
        if "refused" in lowered:
            return _socket_error(ConnectionRefusedError(), where)
        if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
            return _tls_error(detail, where)
        return CollectionError("refused", f"no connection to the domain controller {where}: {_clip(detail)}")
    if isinstance(exc, lx.LDAPCertificateError):
        return _tls_error(detail, where)
    if isinstance(exc, lx.LDAPStartTLSError):
        return CollectionError("tls", f"StartTLS failed on the domain controller {where}: {_clip(detail)}",
                               hint="use --ldap-transport ldaps (port 636), or give the domain controller a "
                                    "certificate for LDAP")
    if isinstance(exc, (lx.LDAPSocketReceiveError, lx.LDAPSocketSendError)) and "timed out" in detail.lower():
        return _socket_error(TimeoutError(), where)
    if isinstance(exc, lx.LDAPSessionTerminatedByServerError):
        hint = None
        if access.bind == "ntlm":
            hint = ("the server closed the session on the NTLM bind: Samba does so for ldap3's NTLM (Sicily) "
                    "bind, which Active Directory accepts; use --ldap-auth kerberos or simple")
        return CollectionError("reset", f"the domain controller {where} closed the session during the "
                                        f"{access.bind} bind", hint=hint)
    if isinstance(exc, lx.LDAPInvalidCredentialsResult):
        return CollectionError("auth", f"the domain controller {where} rejected the credentials of "
                                       f"{access.username} ({access.bind} bind)")
    if isinstance(exc, lx.LDAPStrongerAuthRequiredResult):
        return CollectionError("auth", f"the domain controller {where} requires a stronger bind: "
                                       f"{_clip(detail)}")
    cause = exc.__context__
    if cause is not None and type(cause).__module__.split(".")[0] == "gssapi":
        # ldap3 aborts the SASL exchange when GSS-API fails on this side, and the abort's
        # own error hides the reason: no ticket, an unknown service principal, ...
        return kerberos.failure(str(cause), user=access.username, host=access.host, service="ldap")
    if isinstance(exc, lx.LDAPOperationResult):
        return CollectionError("auth", f"the {access.bind} bind to {where} failed: {_clip(detail)}")
    return CollectionError("protocol", f"LDAP with the domain controller {where} failed: {_clip(detail)}")


def _read_error(exc: Exception, access: DirectoryAccess, what: str) -> CollectionError:
    from ldap3.core import exceptions as lx

    where = f"{access.host}:{access.port}"
    if isinstance(exc, lx.LDAPNoSuchObjectResult):
        return CollectionError("protocol", f"{what}: no such object in the directory of {where}",
                               hint="check --base: it names the Exchange organisation's container or one above it")
    if isinstance(exc, lx.LDAPInsufficientAccessRightsResult):
        return CollectionError("auth", f"{what}: {access.username} may not read it on {where}")
    if isinstance(exc, (lx.LDAPSocketReceiveError, lx.LDAPSocketSendError, lx.LDAPSessionTerminatedByServerError)):
        return CollectionError("reset", f"{what}: the connection to {where} broke: {_clip(str(exc))}")
    return CollectionError("protocol", f"{what} on {where} failed: {_clip(str(exc))}")


def _config_naming_context(conn: Any, access: DirectoryAccess) -> str:
    entries = _search(conn, access, "", "(objectClass=*)", ("configurationNamingContext",), 1, scope="BASE")
    values = entries[0].values.get("configurationnamingcontext", ()) if entries else ()
    text = directory_text(values[0]) if len(values) == 1 else None
    if not text:
        raise CollectionError("protocol", f"the rootDSE of {access.host} names no configuration partition",
                              hint="pass --base with the DN of CN=Microsoft Exchange,CN=Services,CN=Configuration,...")
    return text


def _site_name(conn: Any, access: DirectoryAccess, dn: str) -> str | None:
    """The cn of the site object `dn` names; None when there is no such object."""
    from ldap3.core import exceptions as lx

    try:
        entries = _search(conn, access, dn, "(objectClass=site)", ("cn",), 1, scope="BASE")
    except CollectionError:
        return None
    except lx.LDAPException:
        return None
    values = entries[0].values.get("cn", ()) if entries else ()
    return directory_text(values[0]) if len(values) == 1 else None


def _search(conn: Any, access: DirectoryAccess, base: str, search_filter: str, attributes: tuple[str, ...],
            max_entries: int, *, scope: str = "SUBTREE") -> list[DirectoryEntry]:
    """The entries of a paged search, at most `max_entries` (more: CollectionError)."""
    ldap3 = _ldap3()
    from ldap3.core import exceptions as lx

    what = f"searching {base or 'the rootDSE'}"
    found: list[DirectoryEntry] = []
    cookie: bytes | None = None
    base_key = base.casefold()
    while True:
        try:
            if scope == "BASE":
                conn.search(base, search_filter, ldap3.BASE, attributes=list(attributes), size_limit=1)
            else:
                conn.search(base, search_filter, ldap3.SUBTREE, attributes=list(attributes),
                            paged_size=PAGE_SIZE, paged_cookie=cookie, size_limit=max_entries + 1)
        except lx.LDAPSizeLimitExceededResult:
            raise _too_many(access, base, max_entries) from None
        except lx.LDAPException as exc:
            _over_budget(conn)
            raise _read_error(exc, access, what) from None
        for item in conn.response or ():
            if item.get("type") != "searchResEntry":
                continue   # references (searchResRef) are never followed
            dn = item.get("dn")
            if not isinstance(dn, str) or len(dn.encode("utf-8", "replace")) > MAX_DN_BYTES:
                continue
            if base and not (dn.casefold() == base_key or dn.casefold().endswith("," + base_key)):
                continue   # outside the base: not an answer to this search
            found.append(_entry(dn, item.get("raw_attributes") or {}, attributes))
            if len(found) > max_entries:
                raise _too_many(access, base, max_entries)
        if scope == "BASE":
            return found
        controls = (conn.result or {}).get("controls") or {}
        cookie = ((controls.get(_PAGED_RESULTS) or {}).get("value") or {}).get("cookie") or None
        if not cookie:
            return found


def _too_many(access: DirectoryAccess, base: str, limit: int) -> CollectionError:
    return CollectionError("output", f"the directory of {access.host} holds more than {limit} Exchange server "
                                     f"objects under {base}",
                           hint="no organisation has that many; check --base, or the domain controller")


def _entry(dn: str, raw: Any, wanted: tuple[str, ...]) -> DirectoryEntry:
    values: dict[str, tuple[bytes, ...]] = {}
    oversized = None
    names = {name.casefold(): name for name in wanted}
    for key, items in dict(raw).items():
        name = str(key).casefold()
        if name not in names:
            continue
        items = list(items) if isinstance(items, (list, tuple)) else [items]
        kept = tuple(bytes(v) for v in items[:MAX_VALUES] if isinstance(v, (bytes, bytearray)))
        if len(items) > MAX_VALUES:
            oversized = f"{names[name]} has {len(items)} values (at most {MAX_VALUES} are read)"
        elif any(len(v) > MAX_VALUE_BYTES for v in kept):
            oversized = f"a value of {names[name]} is longer than {MAX_VALUE_BYTES} bytes"
        values[name] = tuple(v for v in kept if len(v) <= MAX_VALUE_BYTES)
    return DirectoryEntry(dn, values, oversized)


def directory_text(raw: bytes) -> str | None:
    """A directory string value (UTF-8, RFC 4517) without control characters, or None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return None
    return text


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"

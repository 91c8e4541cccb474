"""`cas-audit preflight`: is each server ready for a scan? Checked without running the
collector, in the order a scan needs them, each problem with one remediation hint.

1. Reachability: a TCP connection to the inventory's port, or, without one, to WinRM 2.0's
   port and, when that is refused, WinRM 1.1's (inventory.DEFAULT_PORTS). Says which port
   answered.
2. The TLS certificate (https): verified as the scan verifies it (ca_bundle, else the CA
   certificates requests ships), with subject, issuer and expiry.
3. WinRM stack: an unauthenticated WS-Management Identify (HTTP header
   `WSMANIDENTIFY: unauthenticated`); its ProductVersion reads "OS: 0.0.0 SP: 0.0 Stack: 2.0"
   (the OS zeroed without logon).
4. The authentication schemes the server's 401 challenge offers (WWW-Authenticate), against
   the inventory's `auth`.
5. The account: an authenticated Identify (the real OS: "OS: 5.2.3790 SP: 2.0 Stack: 1.1"),
   then a shell created and deleted (collect/winrm_client.py).
6. PowerShell: psversion.ps1 started exactly as the collector is, printing $Host.Version.

Every connection, handshake and request goes through `httpguard`, the one module that
opens connections, under one wall-clock deadline per server (`--timeout`): a peer that
trickles or stalls is cut off at the deadline, and SIGINT/SIGTERM abandon every check in
flight (`check_inventory`'s `stop`). Everything a server sends is untrusted: responses
are size-capped while they stream and parsed by the hardened parser; texts shown are
shortened and stripped of control characters.

Whatever one server does, every other server is checked and reported. The I/O layer
(httpguard, winrm_client) turns each failure of the network or of the peer into a
CollectionError with its kind: that becomes the server's problem, with a hint. Any other
exception is a bug of ours: it is logged with its traceback (the error log), the server
is reported with an "internal error" problem, `internal` is set, and the command exits 4
after printing the report of every server.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import certifi

from scanner import collect as collector
from scanner.collect import httpguard, winrm_client
from scanner.errors import CollectionError
from scanner.inventory import DEFAULT_PORTS, Target
from scanner.util import testhooks
from scanner.util.timefmt import iso_utc
from scanner.util.xmlsafe import UntrustedXMLError, parse_untrusted

log = logging.getLogger(__name__)

NS_WSMID = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"
MAX_RESPONSE = 64 * 1024
_PRODUCT_VERSION = re.compile(r"OS:\s*([\d.]+)\s+SP:\s*([\d.]+)\s+Stack:\s*([\d.]+)", re.ASCII)
#: Windows releases by OS version (major.minor), for the table and the JSON's "windows".
WINDOWS = {"5.2": "Windows Server 2003 (R2)", "6.0": "Windows Server 2008", "6.1": "Windows Server 2008 R2"}
#: WWW-Authenticate schemes that serve each inventory `auth` (pywinrm's transports).
SCHEMES_FOR_AUTH = {"basic": ("basic",), "ntlm": ("negotiate", "ntlm"), "kerberos": ("negotiate", "kerberos")}
_LIMIT = 200


@dataclass(frozen=True)
class Problem:
    what: str
    hint: str


@dataclass(frozen=True)
class Certificate:
    """The server's TLS certificate and whether this machine trusts it."""

    verified: bool
    error: str | None  # why verification failed
    subject: str | None
    issuer: str | None
    not_after: str | None  # yyyy-mm-ddThh:mm:ssZ

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.verified, "error": self.error, "subject": self.subject,
                "issuer": self.issuer, "not_after": self.not_after}


@dataclass
class Readiness:
    """What preflight found out about one server."""

    name: str
    address: str
    scheme: str
    port: int | None = None  # the port that answered
    winrm_stack: str | None = None  # Identify's "Stack:" as sent ("1.1", "2.0")
    os_version: str | None = None  # "5.2.3790 SP 2.0"; None when only the zeroed OS was seen
    auth_offered: list[str] = field(default_factory=list)
    powershell_version: str | None = None  # $Host.Version as printed ("1.0.0.0", "2.0")
    certificate: Certificate | None = None
    problems: list[Problem] = field(default_factory=list)
    internal: bool = False  # a bug of ours stopped the checks (logged with its traceback)
    interrupted: bool = False  # SIGINT/SIGTERM ended its checks: not checked

    @property
    def ready(self) -> bool:
        return not self.problems

    @property
    def winrm(self) -> str | None:
        """The contract's value: "1.1" | "2.0" | None (another stack is in winrm_stack)."""
        return self.winrm_stack if self.winrm_stack in ("1.1", "2.0") else None

    @property
    def powershell(self) -> str | None:
        """The contract's value: "1.0" | "2.0" | None (the full text is in powershell_version)."""
        if self.powershell_version is None:
            return None
        short = ".".join(self.powershell_version.split(".")[:2])
        return short if short in ("1.0", "2.0") else None

    @property
    def windows(self) -> str | None:
        if self.os_version is None:
            return None
        return WINDOWS.get(".".join(self.os_version.split(".")[:2]))

    def problem(self, what: str, hint: str) -> None:
        self.problems.append(Problem(what, hint))

    def as_dict(self) -> dict[str, Any]:
        """The JSON of docs/contracts.md, plus port, scheme, windows, winrm_stack,
        powershell_version and certificate."""
        return {
            "name": self.name,
            "address": self.address,
            "ready": self.ready,
            "winrm": self.winrm,
            "os": self.os_version,
            "auth_offered": list(self.auth_offered),
            "powershell": self.powershell,
            "problems": [{"what": p.what, "hint": p.hint} for p in self.problems],
            "port": self.port,
            "scheme": self.scheme,
            "windows": self.windows,
            "winrm_stack": self.winrm_stack,
            "powershell_version": self.powershell_version,
            "certificate": self.certificate.as_dict() if self.certificate else None,
        }


def _clip(text: str, limit: int = _LIMIT) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class _Stop(Exception):
    """The remaining checks cannot run (a problem was recorded)."""


# -- 1. reachability -------------------------------------------------------------------------


def _quickconfig_hint(scheme: str) -> str:
    v2, v11 = DEFAULT_PORTS[scheme]
    transport = " -transport:https" if scheme == "https" else ""
    return (f"enable WinRM on the server: `winrm quickconfig{transport}` (WinRM 1.1 listens on port {v11}, "
            f"WinRM 2.0 on {v2}); if it listens elsewhere, set port in the inventory")


def _reach(target: Target, result: Readiness, guard: httpguard.Guard) -> int:
    refused: list[int] = []
    for port in target.candidate_ports:
        try:
            httpguard.reach(target.address, port, guard)
            return port
        except httpguard.Unreachable as exc:
            if exc.reason == "refused":
                refused.append(port)
                continue
            if exc.reason == "unresolved":
                hint = "check the server's address in the inventory and this machine's DNS"
            elif exc.reason == "timeout":
                hint = f"check that firewalls let TCP port {port} through to the server"
            else:
                hint = "check the address in the inventory and the network route to the server"
            result.problem(_clip(exc.message), hint)
            raise _Stop from None
    ports = " or ".join(str(p) for p in refused)
    result.problem(f"nothing listens on {target.address} port {ports} (connection refused)",
                   _quickconfig_hint(target.scheme))
    raise _Stop


def _left(guard: httpguard.Guard, cap: float) -> float:
    """The time a step may take: at most `cap`, never past the server's deadline."""
    guard.check()
    return max(0.5, min(cap, guard.remaining()))


# -- 2. TLS ------------------------------------------------------------------------------------


def _ca_file(target: Target) -> str:
    if target.ca_bundle:
        return target.ca_bundle
    return certifi.where()


def _describe(der: bytes) -> tuple[str | None, str | None, str | None]:
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None, None, None
    expiry = iso_utc(cert.not_valid_after_utc)
    return _clip(cert.subject.rfc4514_string()), _clip(cert.issuer.rfc4514_string()), expiry


def _tls(target: Target, result: Readiness, guard: httpguard.Guard) -> None:
    assert target.port is not None
    try:
        seen = httpguard.peer_certificate(target.address, target.port, guard, ca_file=_ca_file(target))
    except CollectionError as exc:
        if exc.kind != "tls":
            raise
        result.problem(_clip(exc.message),
                       "the port does not speak https: use scheme = \"http\", or create an HTTPS listener "
                       "(`winrm quickconfig -transport:https`)")
        raise _Stop from None
    subject, issuer, not_after = _describe(seen.der)
    error = _clip(seen.error) if seen.error is not None else None
    result.certificate = Certificate(seen.verified, error, subject, issuer, not_after)
    if seen.verified or not target.verify_tls:
        return
    what = f"the TLS certificate of {target.address} is not trusted: {error}"
    if seen.code == 10:
        hint = "renew the WinRM HTTPS listener's certificate on the server"
    elif seen.code == 62:
        hint = "address the server by a name its certificate carries (address in the inventory)"
    else:
        hint = ("trust the CA that issued it on this machine, or set ca_bundle = \"path/to/ca.pem\" in the "
                "inventory (verify_tls = false only for a lab)")
    result.problem(what, hint)
    raise _Stop


# -- 3. and 4. Identify and the challenge -----------------------------------------------------


def _post(target: Target, headers: dict[str, str], guard: httpguard.Guard) -> httpguard.Answer:
    """An Identify through the guarded exchange (the scan's deadline and size cap)."""
    verify: bool | str = _ca_file(target) if target.verify_tls else False
    return httpguard.post(target.endpoint, winrm_client.IDENTIFY_REQUEST.encode("utf-8"),
                          {"Content-Type": "application/soap+xml;charset=UTF-8", **headers}, guard, verify=verify)


def parse_identify(body: bytes) -> tuple[str | None, str | None]:
    """(os_version, stack) from an IdentifyResponse; os_version None for the zeroed OS of an
    unauthenticated answer ("OS: 0.0.0 SP: 0.0 Stack: 2.0")."""
    try:
        root = parse_untrusted(body, max_bytes=MAX_RESPONSE)
    except UntrustedXMLError:
        return None, None
    element = root.find(f".//{{{NS_WSMID}}}IdentifyResponse/{{{NS_WSMID}}}ProductVersion")
    match = _PRODUCT_VERSION.search(element.text or "") if element is not None else None
    if match is None:
        return None, None
    os_version, sp, stack = match.groups()
    if not os_version.strip("0."):
        return None, stack
    return f"{os_version} SP {sp}", stack


def _identify_anonymously(target: Target, result: Readiness, guard: httpguard.Guard) -> None:
    response = _post(target, {"WSMANIDENTIFY": "unauthenticated"}, guard)
    if response.status == 404:
        result.problem(f"{target.address} port {target.port} answers HTTP, but WS-Management is not at "
                       f"{target.path} (HTTP 404)", _quickconfig_hint(target.scheme))
        raise _Stop
    if response.status == 200:
        _, stack = parse_identify(response.body)
        result.winrm_stack = stack
    # 401: this server answers Identify only after logon (step 5 asks again)


_SCHEME_TOKEN = re.compile(r"(?:^|,)\s*([A-Za-z][A-Za-z0-9_-]*)(?=\s|,|$)")


def offered_schemes(values: list[str]) -> list[str]:
    """The scheme names of WWW-Authenticate header values ('Basic realm="WSMAN"', 'Negotiate',
    'Negotiate, Kerberos'), in order, without duplicates."""
    names: list[str] = []
    for value in values:
        unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', value)
        for match in _SCHEME_TOKEN.finditer(unquoted):
            word = match.group(1)
            if word.casefold() not in {n.casefold() for n in names}:
                names.append(_clip(word, 40))
    return names[:10]


def _challenge(target: Target, result: Readiness, guard: httpguard.Guard) -> None:
    response = _post(target, {}, guard)
    result.auth_offered = offered_schemes(list(response.challenges))
    wanted = SCHEMES_FOR_AUTH.get(target.auth)
    if response.status != 401 or wanted is None:
        return
    if not any(name.casefold() in wanted for name in result.auth_offered):
        offered = ", ".join(result.auth_offered) or "nothing"
        if target.auth == "basic":
            hint = ("enable Basic on the server (`winrm set winrm/config/service/auth @{Basic=\"true\"}`; it works "
                    "for local accounts only), or use auth = \"ntlm\"")
        else:
            hint = "enable Negotiate on the server (`winrm set winrm/config/service/auth @{Negotiate=\"true\"}`)"
        result.problem(f"the server does not offer {target.auth} authentication (it offers {offered})", hint)
        raise _Stop


# -- 5. the account ----------------------------------------------------------------------------


def _auth_hint(target: Target) -> str:
    if target.auth == "basic" and target.scheme == "http":
        return ("check user name and CAS_AUDIT_PASSWORD; Basic works only for a local account and over http "
                "only with AllowUnencrypted (`winrm set winrm/config/service @{AllowUnencrypted=\"true\"}`): "
                "prefer https, or auth = \"ntlm\" for a domain account")
    if target.auth == "basic":
        return ("check user name and CAS_AUDIT_PASSWORD; Basic works only for a local account: use "
                "auth = \"ntlm\" for a domain account")
    return "check user name (DOMAIN\\user) and CAS_AUDIT_PASSWORD; the account must be an administrator of the server"


def _shell_hint(error: CollectionError) -> str:
    text = error.message.lower()
    if "quota" in text or "concurrent shells" in text:
        return ("close the account's idle shells or raise the quota "
                "(`winrm set winrm/config/winrs @{MaxShellsPerUser=\"10\"}`)")
    if "access" in text and "denied" in text:
        return "make the account a member of the server's local Administrators group (WinRS admits only them)"
    return "run `winrm get winrm/config/winrs` on the server: remote shell access must be allowed (AllowRemoteShellAccess)"


def _account(target: Target, password: str | None, result: Readiness, guard: httpguard.Guard) -> None:
    try:
        probe = winrm_client.probe_account(target, password, timeout_s=_left(guard, 60.0))
    except CollectionError as exc:
        if exc.kind in ("internal", "interrupted"):
            raise  # a bug of ours, or an interrupt: check_server says it
        if exc.kind == "auth":
            result.problem(f"the server refused the logon of {target.username or 'the account'} "
                           f"({target.auth})", _auth_hint(target))
        elif exc.kind == "tls":
            result.problem(_clip(exc.message), "trust the CA that issued the certificate, or set ca_bundle")
        else:
            result.problem(f"the authenticated Identify failed: {_clip(exc.message)}",
                           exc.hint or "check the server's WinRM service (`winrm enumerate winrm/config/listener`)")
        raise _Stop from None
    os_version, stack = parse_identify(probe.identify)
    result.os_version = os_version
    result.winrm_stack = result.winrm_stack or stack
    if probe.shell_error is not None:
        result.problem(f"the account cannot open a shell: {_clip(probe.shell_error.message)}",
                       _shell_hint(probe.shell_error))
        raise _Stop


# -- 6. PowerShell ---------------------------------------------------------------------------


def _powershell(target: Target, password: str | None, result: Readiness, guard: httpguard.Guard) -> None:
    hint = ("Windows PowerShell 1.0 (KB926139) or 2.0 (Windows Management Framework) must be installed; run "
            "`winrs -r:<server> powershell -NoProfile -Command $Host.Version` to see the error")
    try:
        output = winrm_client.run_collector(target, password, script=collector.version_script(), env={},
                                            timeout_s=_left(guard, 60.0), max_output=64 * 1024)
    except CollectionError as exc:
        if exc.kind in ("internal", "interrupted"):
            raise
        result.problem(f"PowerShell did not start through WinRS: {_clip(exc.message)}", hint)
        return
    lines = output.stdout.decode("utf-8", errors="replace").splitlines()
    version = next((line.strip() for line in lines if re.fullmatch(r"\s*\d+(\.\d+){1,3}\s*", line)), None)
    if output.exit_code != 0 or version is None or collector.END_MARKER not in (ln.strip() for ln in lines):
        detail = winrm_client.stderr_summary(output.stderr) or f"exit code {output.exit_code}"
        result.problem(f"PowerShell did not report its version: {_clip(detail)}", hint)
        return
    result.powershell_version = version


# -- per server and for the inventory ----------------------------------------------------------


def check_server(target: Target, password: str | None, *, timeout_s: float) -> Readiness:
    """Every check for one server, within `timeout_s`; never raises for the server's faults
    nor for a bug of ours (`internal`, module docstring)."""
    result = Readiness(target.name, target.address, target.scheme)
    guard = httpguard.Guard(timeout_s, max_body=MAX_RESPONSE, what=target.address)
    try:
        result.port = _reach(target, result, guard)
        reached = replace(target, port=result.port, port_given=True)
        testhooks.fail_at("preflight")
        if reached.scheme == "https":
            _tls(reached, result, guard)
        _identify_anonymously(reached, result, guard)
        _challenge(reached, result, guard)
        _account(reached, password, result, guard)
        _powershell(reached, password, result, guard)
    except _Stop:
        pass
    except CollectionError as exc:
        _failed(target, result, exc, timeout_s)
    except Exception as exc:
        log.error("internal error while checking %s", target.name, exc_info=exc)
        _internal(result, f"{type(exc).__name__}: {exc}")
    finally:
        # whichever step the interruption cut short, and whatever it made of that
        result.interrupted = guard.ended == "interrupted"
        guard.close()
    return result


def _internal(result: Readiness, detail: str) -> None:
    result.internal = True
    result.problem(f"internal error while checking this server ({_clip(detail)})",
                   "a bug of cas-audit, not of the server: report it with the error log")


def _failed(target: Target, result: Readiness, exc: CollectionError, timeout_s: float) -> None:
    """The server's problem for what the I/O layer raised (a bug of ours for kind "internal",
    which winrm_client logged with its traceback)."""
    where = f"{target.address} port {result.port}"
    if exc.kind == "internal":
        _internal(result, exc.message)
    elif exc.kind == "timeout":
        result.problem(f"no complete answer from {target.address} within {timeout_s:g} s",
                       "raise --timeout, or check the server's load and the network")
    elif exc.kind == "interrupted":
        result.problem(f"not checked: {_clip(exc.message)}", "run preflight again")
    elif exc.kind == "tls":
        result.problem(_clip(exc.message),
                       "trust the CA that issued the certificate, or set ca_bundle in the inventory")
    else:
        result.problem(f"HTTP with {where} failed: {_clip(exc.message)}",
                       exc.hint or "check that WinRM, not another service, listens on this port (`winrm enumerate "
                       "winrm/config/listener`)")


def check_inventory(targets: tuple[Target, ...], password: Callable[[Target], str | None], *,
                    timeout_s: float, concurrency: int = 8,
                    stop: threading.Event | None = None) -> list[Readiness]:
    """check_server for every target, `concurrency` at once, in inventory order.

    When `stop` is set (SIGINT, SIGTERM), no more servers start, the exchanges in flight
    are shut down (httpguard.abort_all) and only the servers whose checks finished without
    the interruption are returned;
    the workers still running are not waited for (the caller exits)."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(targets))),
                              thread_name_prefix="cas-audit-preflight")
    futures: list[Future[Readiness]] = [pool.submit(check_server, t, password(t), timeout_s=timeout_s)
                                        for t in targets]
    pending = set(futures)
    while pending and not (stop is not None and stop.is_set()):
        _done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
    if stop is not None and stop.is_set():
        # the signal handler may have ended the exchanges in flight before this loop saw it:
        # a server whose checks the interruption cut short was not checked either way
        httpguard.abort_all()
        pool.shutdown(wait=False, cancel_futures=True)
        done = [f.result() for f in futures if f.done() and not f.cancelled()]
        return [r for r in done if not r.interrupted]
    pool.shutdown(wait=True)
    return [f.result() for f in futures]

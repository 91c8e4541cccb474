"""One simulated host's WinRM HTTP listener: Basic, NTLM or Kerberos (with message encryption).

`LabServer` runs a `ThreadingHTTPServer` (HTTP/1.1 keep-alive, one thread per connection)
on a loopback address, authenticates like WinRM on Windows Server 2003/2008, decrypts
[MS-WSMV] 2.2.9.1.1 multipart/encrypted bodies and hands the SOAP to `WSManService`.

NTLM: pyspnego's acceptor reads user credentials from the file named by the environment
variable NTLM_USER_FILE (Heimdal format, one `DOMAIN:USER:PASSWORD` a line).
scanner/lab/credentials.py keeps ONE such file per process (mode 0600, in a private temp directory, removed at exit)
holding every NTLM user of every LabServer started in the process, and points
os.environ["NTLM_USER_FILE"] at it before any acceptor context exists. Several LabServers
may therefore share one process; two servers that name the same DOMAIN\\USER must use the
same password (a ConfigError otherwise).

Kerberos: Negotiate with a Kerberos token (what pywinrm's `kerberos` transport sends:
a raw krb5 AP-REQ, mutual authentication), accepted by pyspnego through the keytab named by
KRB5_KTNAME, for the service principal HTTP/<fqdn> of the host; message encryption as for
NTLM ([MS-WSMV] 2.2.9.1.1, protocol application/HTTP-SPNEGO-session-encrypted as pywinrm's
winrm/encryption.py sends it), but with the GSS wrap header (60 bytes for AES) in place of
the 16-byte NTLM signature (scanner/lab/msgcrypt.py). Like NTLM_USER_FILE, KRB5_KTNAME is process-wide: every
Kerberos LabServer of a process must use the same keytab. Only the lab account's principal
(`username`, in realm `domain` when one is given) is let in; a lab with auth "kerberos"
accepts no NTLM (a choice of the lab: it holds no password to check one against).

Choices where Windows' exact answer is not pinned down here: an unencrypted SOAP body on an
NTLM endpoint (WinRM with AllowUnencrypted=false) gets 401 with `WWW-Authenticate: Negotiate`
and drops the connection's security context (pywinrm raises InvalidCredentialsError); an
encrypted body that does not decrypt gets 400 and the connection is closed; a body over
MAX_HTTP_BODY gets 413 (read and discarded up to MAX_DRAIN, else the connection is closed).
Handshake requests and rejected logons are counted in HostStats.actions["auth"].

https (HostConfig tls_cert/tls_key): each connection's TLS handshake, then the same logons
with SOAP in the clear inside TLS (no message encryption), and the service's
CbtHardeningLevel for channel binding tokens (scanner/lab/tlsbind.py).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hmac
import logging
import socket
import ssl
import struct
import threading
import time
import typing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import spnego

from scanner.errors import ConfigError
from scanner.lab.credentials import register_ntlm_user, use_keytab
from scanner.lab.msgcrypt import ENCRYPTED_CONTENT_TYPE, SOAP_CONTENT_TYPE, decrypt, encrypt, is_encrypted
from scanner.lab.platforms import DEFAULT_PLATFORM, Platform, platform
from scanner.lab.tlsbind import CBT_LEVELS, acceptor_bindings, certificate_bindings, channel_bound, server_context
from scanner.lab.wsman import CommandRunner, Reply, WSManService
from scanner.lab.wsman_identify import (
    IDENTIFY_HEADER,
    anonymous_product_version,
    identify_response,
    is_identify,
)
from scanner.lab.wsman_soap import MAX_SOAP_BYTES

log = logging.getLogger(__name__)

FAULTS = ("", "refuse", "timeout", "reset", "auth", "soap-fault", "slow")
AUTHS = ("basic", "ntlm", "kerberos")
SLOW_DELAY_S = 60.0                 # fault "slow": each response waits this long (or until stop)
MAX_HTTP_BODY = MAX_SOAP_BYTES + 8192   # encrypted framing adds a few hundred bytes
HANDSHAKE_TIMEOUT_S = 10.0
MAX_DRAIN = 8 * 1024 * 1024         # larger bodies are not read: 413 and close


@dataclass
class HostConfig:
    """How one simulated host listens and authenticates."""

    name: str
    address: str                # 127.x.y.z
    port: int
    auth: str                   # "basic" | "ntlm" | "kerberos"
    username: str
    password: str
    runner: CommandRunner
    latency_ms: int = 0         # added before each HTTP response
    fault: str = ""             # "" | refuse | timeout | reset | auth | soap-fault | slow
    domain: str = ""            # NTLM domain, or the Kerberos realm of `username` (may be empty)
    platform: Platform = field(default_factory=lambda: platform(DEFAULT_PLATFORM))
    account: str = "local"      # local | domain: the kind of account `username` is
    allow_unencrypted: bool = True  # WinRM service AllowUnencrypted (the lab's Basic demo is http)
    env_ignored: bool = False   # UNCONFIRMED switch: shell environment variables are ignored
    fqdn: str = ""              # Kerberos: the host of the service principal HTTP/<fqdn>
    keytab: str = ""            # Kerberos: the keytab holding HTTP/<fqdn>'s key
    admin_username: str = ""    # a second account allowed to write ([lab] admin_username); "" = none
    admin_password: str = ""
    tls_cert: str = ""          # https: the certificate (PEM) and key the listener serves
    tls_key: str = ""
    cbt_hardening: str = "relaxed"  # WinRM's CbtHardeningLevel over https (scanner/lab/tlsbind.py)
    anonymous_identify: bool = True  # Identify with WSMANIDENTIFY: unauthenticated is answered
                                     # without logon (UNCONFIRMED on WinRM 1.1: docs/lab.md)


@dataclass
class HostStats:
    """Request counters of one server; update them through `add()` (thread-safe)."""

    requests: int = 0
    connections: int = 0
    shells_created: int = 0
    shells_deleted: int = 0
    shells_open: int = 0
    commands: int = 0
    receives: int = 0
    sends: int = 0
    signals: int = 0
    auth_failures: int = 0
    actions: collections.Counter[str] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counter: str, n: int = 1) -> None:
        """Add n to one integer counter."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + n)

    def action(self, name: str) -> None:
        """Count one request under a WS-Man action short name (or "auth")."""
        with self._lock:
            self.actions[name] += 1

    def set_open(self, n: int) -> None:
        """Record the number of open shells."""
        with self._lock:
            self.shells_open = n


# -- HTTP ----------------------------------------------------------------------------------


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    lab: LabServer

    def get_request(self) -> tuple[socket.socket, typing.Any]:
        conn, address = super().get_request()
        if self.lab._tls is not None:  # the handshake runs in the connection's own thread (setup)
            conn = self.lab._tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    server: _Listener

    # per-connection NTLM state: NTLM authenticates the connection, not the request
    _ctx: typing.Any = None
    _authenticated = False

    def setup(self) -> None:
        lab = self.server.lab
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.settimeout(HANDSHAKE_TIMEOUT_S)
                self.request.do_handshake()
                self.request.settimeout(None)
            except (OSError, ValueError):
                self.close_connection = True
                self.handle = lambda: None  # type: ignore[method-assign]  # no HTTP without TLS
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lab.stats.add("connections")
        lab._track(self.connection, add=True)
        if lab._stopping.is_set():
            self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.server.lab._track(self.connection, add=False)

    def handle_one_request(self) -> None:
        if self.server.lab._stopping.is_set():
            self.close_connection = True
            return
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    def log_message(self, format: str, *args: typing.Any) -> None:
        log.debug("lab %s: %s", self.server.lab.config.name, format % args)

    # -- methods ------------------------------------------------------------------------

    def do_POST(self) -> None:
        self._serve(post=True)

    def do_GET(self) -> None:
        self._serve(post=False)

    do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _serve(self, *, post: bool) -> None:
        lab = self.server.lab
        lab.stats.add("requests")
        body = self._read_body()
        if body is None:
            return
        fault = lab.config.fault
        if fault == "reset":
            # Abortive close: SO_LINGER 0 makes close() send RST, the client sees a reset.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if fault == "timeout":
            lab._stopping.wait()
            self.close_connection = True
            return
        if urlsplit(self.path).path.lower() != "/wsman":
            self._send(404, b"", {})
            return
        if not post:
            self._send(405, b"", {"Allow": "POST"})
            return
        if (lab.config.anonymous_identify and not self.headers.get("Authorization")
                and self.headers.get(IDENTIFY_HEADER, "").strip().lower() == "unauthenticated"
                and is_identify(body)):
            lab.stats.action("Identify")
            version = anonymous_product_version(lab.config.platform.winrm)
            self._send(200, identify_response(version), {"Content-Type": SOAP_CONTENT_TYPE})
            return
        if lab.config.auth == "basic":
            self._serve_basic(body)
        else:
            self._serve_ntlm(body)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(411, b"", {"Connection": "close"})
            self.close_connection = True
            return None
        raw = self.headers.get("Content-Length", "0").strip() or "0"
        if not raw.isdigit() or len(raw) > 12:
            self._send(400, b"", {"Connection": "close"})
            self.close_connection = True
            return None
        length = int(raw)
        if length > MAX_HTTP_BODY:
            if length <= MAX_DRAIN:   # read and discard, so the connection stays usable
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        self.close_connection = True
                        return None
                    remaining -= len(chunk)
                self._send(413, b"", {})
            else:
                self._send(413, b"", {"Connection": "close"})
                self.close_connection = True
            return None
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True
            return None
        return body

    # -- Basic --------------------------------------------------------------------------

    def _serve_basic(self, body: bytes) -> None:
        lab = self.server.lab
        scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "basic" or not token:
            lab.stats.action("auth")
            self._send(401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return
        if (lab.config.fault == "auth" or not lab._basic_ok(token.strip())
                or lab.config.account != "local" or not (lab.config.allow_unencrypted or lab._tls is not None)):
            # Basic logs on local accounts only, and the service refuses it over plain HTTP
            # while AllowUnencrypted is false (docs/lab.md, [BASIC]); over https it does not.
            lab.stats.action("auth")
            lab.stats.add("auth_failures")
            self._send(401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return
        reply = lab._dispatch(body, admin=lab._basic_user(token.strip()) == "admin")
        self._send(reply.status, reply.body, {"Content-Type": SOAP_CONTENT_TYPE})

    # -- NTLM / Negotiate ---------------------------------------------------------------

    def _serve_ntlm(self, body: bytes) -> None:
        lab = self.server.lab
        scheme, _, token_b64 = self.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and token_b64.strip():
            self._handshake(token_b64.strip(), body)
            return
        if not self._authenticated:
            lab.stats.action("auth")
            self._send(401, b"", {"WWW-Authenticate": "Negotiate"})
            return
        if lab._tls is not None and body and not is_encrypted(self.headers.get("Content-Type", "")):
            self._dispatch_plain(body, {})  # https: TLS protects the body, no message encryption
            return
        if not body:
            # pywinrm's setup_encryption() may send an empty POST on an authenticated connection
            lab.stats.action("auth")
            self._send(200, b"", {})
            return
        if not is_encrypted(self.headers.get("Content-Type", "")):
            self._reject_unencrypted()
            return
        kerberos = lab.config.auth == "kerberos"
        try:
            plain = decrypt(self._ctx, body, kerberos=kerberos)
        except ValueError as exc:
            log.info("lab %s: rejected an encrypted body: %s", lab.config.name, exc)
            self._authenticated, self._ctx = False, None
            self._send(400, b"", {"Connection": "close"})
            self.close_connection = True
            return
        # Kerberos with a forwarded ticket: the logon holds credentials it may pass on
        # (GSS_C_DELEG_FLAG in the AP-REQ); NTLM never does (docs/lab.md, "The domain").
        delegated = kerberos and bool(self._ctx.context_attr & spnego.ContextReq.delegate)
        reply = lab._dispatch(plain, delegated=delegated, admin=lab._is_admin(self._ctx))
        if not reply.body:  # e.g. 413 for a request over MaxEnvelopeSizekb: nothing to seal
            self._send(reply.status, b"", {})
            return
        self._send(reply.status, encrypt(self._ctx, reply.body, kerberos=kerberos), {"Content-Type": ENCRYPTED_CONTENT_TYPE})

    def _handshake(self, token_b64: str, body: bytes) -> None:
        lab = self.server.lab
        lab.stats.action("auth")
        try:
            token = base64.b64decode(token_b64, validate=True)
        except (binascii.Error, ValueError):
            token = b""
        fresh = token.startswith(b"NTLMSSP\x00\x01\x00\x00\x00") or token[:1] == b"\x60"
        if self._ctx is None or self._authenticated or fresh:
            self._authenticated = False
            kerberos = lab.config.auth == "kerberos"
            hostname = (lab.config.fqdn or lab.config.name) if kerberos else lab.config.name
            bindings = acceptor_bindings(lab.config.cbt_hardening, lab.config.auth, lab._bindings)
            self._ctx = spnego.server(hostname=hostname, service="HTTP", protocol="negotiate",
                                      channel_bindings=bindings)
        try:
            out = self._ctx.step(token)
        except Exception as exc:  # pyspnego raises several types for bad tokens/passwords
            log.info("lab %s: logon failed: %s: %s", lab.config.name, type(exc).__name__, exc)
            self._fail_auth()
            return
        if not self._ctx.complete:
            value = "Negotiate " + base64.b64encode(out or b"").decode("ascii")
            self._send(401, b"", {"WWW-Authenticate": value})
            return
        if (lab.config.fault == "auth" or not lab._principal_ok(self._ctx)
                or (lab._tls is not None and not channel_bound(self._ctx, lab.config.cbt_hardening, lab.config.auth))):
            self._fail_auth()
            return
        self._authenticated = True
        headers = {"WWW-Authenticate": "Negotiate " + base64.b64encode(out).decode("ascii")} if out else {}
        if body and lab._tls is not None:
            self._dispatch_plain(body, headers)
            return
        if body:
            # the authenticating request itself carried a SOAP body: it cannot be encrypted
            self._reject_unencrypted()
            return
        self._send(200, b"", headers)

    def _dispatch_plain(self, body: bytes, headers: dict[str, str]) -> None:
        lab = self.server.lab
        delegated = lab.config.auth == "kerberos" and bool(self._ctx.context_attr & spnego.ContextReq.delegate)
        reply = lab._dispatch(body, delegated=delegated, admin=lab._is_admin(self._ctx))
        self._send(reply.status, reply.body, {**headers, "Content-Type": SOAP_CONTENT_TYPE} if reply.body else headers)

    def _fail_auth(self) -> None:
        lab = self.server.lab
        lab.stats.add("auth_failures")
        self._ctx, self._authenticated = None, False
        self._send(401, b"", {"WWW-Authenticate": "Negotiate"})

    def _reject_unencrypted(self) -> None:
        # WinRM with AllowUnencrypted=false answers an unencrypted body on HTTP with 401
        # (the client sees "credentials rejected"); the connection must authenticate again.
        lab = self.server.lab
        lab.stats.action("auth")
        lab.stats.add("auth_failures")
        self._ctx, self._authenticated = None, False
        self._send(401, b"", {"WWW-Authenticate": "Negotiate"})

    # -- response -----------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        lab = self.server.lab
        delay = lab.config.latency_ms / 1000.0
        if lab.config.fault == "slow":
            delay += SLOW_DELAY_S
        if delay > 0 and lab._stopping.wait(delay):
            self.close_connection = True     # stopped while delaying: no answer
            return
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True


# -- the server ------------------------------------------------------------------------------


class LabServer:
    """One listening WinRM endpoint for one simulated host (a ThreadingHTTPServer in a daemon thread)."""

    def __init__(self, config: HostConfig) -> None:
        if config.fault not in FAULTS:
            raise ConfigError(f"lab host {config.name}: unknown transport fault {config.fault!r}",
                              hint="one of: " + ", ".join(f or '""' for f in FAULTS))
        if config.auth not in AUTHS:
            raise ConfigError(f"lab host {config.name}: unknown auth {config.auth!r}",
                              hint="basic, ntlm or kerberos")
        if config.cbt_hardening not in CBT_LEVELS:
            raise ConfigError(f"lab host {config.name}: unknown cbt_hardening {config.cbt_hardening!r}",
                              hint=", ".join(CBT_LEVELS))
        self.config = config
        self._tls = server_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        self._bindings = certificate_bindings(config.tls_cert) if config.tls_cert else None
        self.stats = HostStats()
        self._stopping = threading.Event()
        self._listener: _Listener | None = None
        self._blocker: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._port = config.port
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self.service = WSManService(config.name, config.runner, self.endpoint,
                                    stopping=self._stopping, deny_create=config.fault == "soap-fault",
                                    windows=config.platform, env_ignored=config.env_ignored)

    @property
    def endpoint(self) -> str:
        """The URL clients use: http://address:port/wsman."""
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self.config.address}:{self._port}/wsman"

    def start(self) -> None:
        """Bind and listen (fault "refuse": bind only, so connecting is refused)."""
        if self._listener is not None or self._blocker is not None:
            raise RuntimeError("LabServer already started")
        cfg = self.config
        self._stopping.clear()
        if cfg.auth == "ntlm" and cfg.fault != "auth":
            register_ntlm_user(cfg.domain, cfg.username, cfg.password)
            if cfg.admin_username:
                register_ntlm_user(cfg.domain, cfg.admin_username, cfg.admin_password)
        if cfg.auth == "kerberos":
            use_keytab(cfg.keytab)
        if cfg.fault == "refuse":
            # A bound socket that never listens: connections get RST, and the port stays ours.
            blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            blocker.bind((cfg.address, cfg.port))
            self._blocker = blocker
            self._port = blocker.getsockname()[1]
        else:
            listener = _Listener((cfg.address, cfg.port), _Handler)
            listener.lab = self
            self._listener = listener
            self._port = listener.server_address[1]
            self._thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"lab-{cfg.name}", daemon=True)
            self._thread.start()
        self.service.endpoint = self.endpoint

    def stop(self) -> None:
        """Stop listening, cut open connections and release waiting handler threads."""
        self._stopping.set()
        if self._blocker is not None:
            self._blocker.close()
            self._blocker = None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown()
            listener.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self._conn_lock:
            conns = list(self._conns.items())
        for conn, _ in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for _, thread in conns:
            if thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def reset_stats(self) -> None:
        """Zero every counter (shells_open keeps the number of shells still open)."""
        self.stats = HostStats(shells_open=self.service.open_shells)

    def __enter__(self) -> LabServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._conns[conn] = threading.current_thread()
            else:
                self._conns.pop(conn, None)

    def _principal_ok(self, ctx: typing.Any) -> bool:
        """Kerberos: only the lab account's principal gets in (NTLM: the user file decided)."""
        if self.config.auth != "kerberos":
            return True
        if ctx.negotiated_protocol != "kerberos":
            return False
        name, _, realm = str(ctx.client_principal or "").rpartition("@")
        if self.config.domain and realm != self.config.domain.upper():
            return False
        return hmac.compare_digest(name.casefold().encode(), self.config.username.casefold().encode())

    def _is_admin(self, ctx: typing.Any) -> bool:
        """NTLM: whether the logon is the lab's admin account (the one allowed to write)."""
        admin = self.config.admin_username
        if not admin or self.config.auth != "ntlm":
            return False
        user = str(ctx.client_principal or "").rpartition("\\")[2]
        return hmac.compare_digest(user.casefold().encode(), admin.casefold().encode())

    def _basic_ok(self, token: str) -> bool:
        return self._basic_user(token) != ""

    def _basic_user(self, token: str) -> str:
        """Which lab account a Basic token logs on: "scan", "admin", or "" (none)."""
        cfg = self.config
        if self._basic_match(token, cfg.username, cfg.password):
            return "scan"
        if cfg.admin_username and self._basic_match(token, cfg.admin_username, cfg.admin_password):
            return "admin"
        return ""

    def _basic_match(self, token: str, username: str, expected: str) -> bool:
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        cfg = self.config
        names = {username.casefold()}
        if cfg.domain:
            names.add(f"{cfg.domain}\\{username}".casefold())
        user_ok = any(hmac.compare_digest(user.casefold().encode(), n.encode()) for n in names)
        password_ok = hmac.compare_digest(password.encode(), expected.encode())
        return user_ok and password_ok

    def _dispatch(self, soap: bytes, *, delegated: bool = False, admin: bool = False) -> Reply:
        if is_identify(soap):  # authenticated: the real OS version
            self.stats.action("Identify")
            return Reply(200, identify_response(self.config.platform.product_version), "Identify", True)
        reply = self.service.handle(soap, delegated=delegated, admin=admin)
        stats = self.stats
        stats.action(reply.action)
        counter = {"Command": "commands", "Receive": "receives", "Send": "sends", "Signal": "signals"}.get(reply.action)
        if counter:
            stats.add(counter)
        if reply.ok and reply.action == "Create":
            stats.add("shells_created")
        if reply.ok and reply.action == "Delete":
            stats.add("shells_deleted")
        stats.set_open(self.service.open_shells)
        return reply

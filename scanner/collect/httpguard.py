"""The one place a connection to a server under audit is opened: every TCP connection,
TLS handshake and HTTP exchange of the scanner with the servers it audits, bounded by a
wall-clock deadline and a size cap.

pywinrm's HTTP (winrm_client.py) runs on a requests Session this module's adapter is
mounted on (`install`), so its connections are opened here; preflight's own probes (a TCP
connection, the TLS certificate, an unauthenticated POST) are `reach`, `peer_certificate`
and `post`. No other module of `scanner/` outside the lab (the server side) imports
socket, ssl, requests, urllib3 or http.client to open a connection (tests/test_layout.py
checks it); the one other connection, to a domain controller for `inventory discover
--ldap`, is ldap3's in ldapclient.py.

requests' `timeout` bounds each socket read, not the exchange: a peer that sends one
byte every half second, or a body that never ends, keeps a read going forever. A
`Guard` holds one collection's deadline. While it is installed on a requests Session
(`install`), or passed to `reach`, `peer_certificate` or `post`:

- every connection opened is registered with the guard, and at the deadline the watchdog
  (one thread for every guard of the process) shuts those sockets down, so a read blocked
  on any peer returns at once;
- every response body is read as it streams and refused past `max_body` bytes, before
  more is buffered;
- a request started after the deadline, or after `abort()`, fails at once.

`abort_all()` ends every guarded exchange of the process (SIGINT/SIGTERM).
What a failure of the network or of the peer raises is a CollectionError with its kind;
anything else escaping these functions is a bug of ours. A TLS handshake is bounded
too, although urllib3 registers its socket only once the handshake is done: Python's ssl
applies a socket's timeout to the whole handshake, not to each read, and every timeout
here is at most the time left (tests/test_deadline.py, a trickled ServerHello).
Limitation: name resolution (getaddrinfo) is bounded only by the system resolver's own
timeout.

With verify_tls = false urllib3 would warn on every request (InsecureRequestWarning,
printed raw on stderr): that warning is silenced here, and the command line says once,
in its own format, which servers' certificates are not verified.
"""

from __future__ import annotations

import contextvars
import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.hooks import default_hooks
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from scanner.errors import CollectionError, CollectorOutputError

CHUNK = 64 * 1024
AUTH_CHALLENGES = (401, 407)
MAX_CHALLENGE_BYTES = 64 * 1024


def size_text(limit: int) -> str:
    """A byte limit as people read it: "17 MiB", "64 KiB", "100 bytes" (never "0 MiB")."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"
_current: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("cas_audit_http_guard", default=None)
_live: weakref.WeakSet[Guard] = weakref.WeakSet()
_live_lock = threading.Lock()
# verify_tls = false is the user's choice, said once by the command line (module docstring)
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)


class Guard:
    """The deadline and body cap of one server's collection."""

    def __init__(self, timeout_s: float, *, max_body: int, what: str) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.max_body = max_body
        self.what = what
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection | socket.socket] = []
        self._ended: str | None = None  # "timeout" | "interrupted"
        self._unwatched = False
        with _live_lock:
            _live.add(self)
        _watchdog.watch(self)

    # -- state --------------------------------------------------------------------

    @property
    def ended(self) -> str | None:
        """Why the guard ended the exchange ("timeout", "interrupted"), None while it runs."""
        return self._ended

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def error(self) -> CollectionError:
        """The error for an exchange this guard ended."""
        if self._ended == "interrupted":
            return CollectionError("interrupted", f"{self.what}: abandoned, the command was interrupted")
        return CollectionError("timeout", f"{self.what} did not finish within the per-server time limit")

    def check(self) -> None:
        """Raise if the deadline has passed or the guard was aborted."""
        if self._ended is None and self.remaining() <= 0:
            self.abort("timeout")
        if self._ended is not None:
            raise self.error()

    # -- ending -------------------------------------------------------------------

    def abort(self, why: str = "interrupted") -> None:
        """End every exchange of this guard now: shut its sockets down (idempotent)."""
        with self._lock:
            if self._ended is None:
                self._ended = why
            connections = list(self._connections)
        for conn in connections:
            _shutdown(conn)

    def close(self) -> None:
        """Stop watching the deadline (the collection is over)."""
        _watchdog.forget(self)
        with self._lock:
            self._connections.clear()
        with _live_lock:
            _live.discard(self)

    def _register(self, conn: HTTPConnection | socket.socket) -> None:
        """Shut `conn` (a connection, or a bare socket) down with this guard's exchanges."""
        with self._lock:
            self._connections.append(conn)
            ended = self._ended is not None
        if ended:
            _shutdown(conn)


def _shutdown(conn: HTTPConnection | socket.socket) -> None:
    sock = conn if isinstance(conn, socket.socket) else getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        # the plain socket's shutdown, also for a TLS socket: ssl.SSLSocket.shutdown would
        # drop its TLS state under a thread still reading through it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _Watchdog:
    """Ends each guard at its deadline (`Guard.abort("timeout")`): one daemon thread for the
    whole process, waiting for the earliest deadline, where a timer thread per guard cost a
    thread's start and end per server (bench/README.md, "CPU per server")."""

    def __init__(self) -> None:
        self._wake = threading.Condition(threading.Lock())
        self._due: list[tuple[float, int, Guard]] = []  # a heap by deadline
        self._order = itertools.count()
        self._forgotten = 0  # closed guards still in the heap
        self._thread: threading.Thread | None = None

    def watch(self, guard: Guard) -> None:
        with self._wake:
            if self._forgotten > 64 and self._forgotten * 2 > len(self._due):
                self._due = [entry for entry in self._due if not entry[2]._unwatched]
                heapq.heapify(self._due)
                self._forgotten = 0
            heapq.heappush(self._due, (guard.deadline, next(self._order), guard))
            if self._thread is None or not self._thread.is_alive():  # first guard (or after a fork)
                self._thread = threading.Thread(target=self._run, name="cas-audit-deadlines", daemon=True)
                self._thread.start()
            elif self._due[0][2] is guard:
                self._wake.notify()

    def forget(self, guard: Guard) -> None:
        with self._wake:
            if not guard._unwatched:
                guard._unwatched = True
                self._forgotten += 1

    def _next_due(self) -> Guard:
        with self._wake:
            while True:
                while self._due and self._due[0][2]._unwatched:
                    heapq.heappop(self._due)
                    self._forgotten -= 1
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    guard = heapq.heappop(self._due)[2]
                    guard._unwatched = True  # watched no more
                    return guard
                self._wake.wait(self._due[0][0] - now if self._due else None)

    def _run(self) -> None:
        while True:
            self._next_due().abort("timeout")


_watchdog = _Watchdog()


def abort_all() -> None:
    """Abandon every guarded exchange in this process (used on SIGINT/SIGTERM)."""
    with _live_lock:
        guards = list(_live)
    for guard in guards:
        guard.abort("interrupted")


class _OneWrite(HTTPConnection):
    """A request's header block leaves with the start of its body, in one write, where
    urllib3 writes them apart: a socket send (and its poll, the socket having a timeout)
    less per request (bench/README.md, "System time")."""

    _holding = False
    _held: bytes | None = None

    def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        self._holding = True  # http.client writes the header block with self.send
        try:
            super().endheaders(message_body, encode_chunked=encode_chunked)
        finally:
            self._holding = False

    def send(self, data: Any) -> None:
        if self._holding and isinstance(data, bytes) and self._held is None:
            self._held = data
            return
        held, self._held = self._held, None
        if held is not None:
            if isinstance(data, bytes | bytearray):
                data = held + data
            else:
                super().send(held)
        super().send(data)

    def getresponse(self) -> Any:  # a request without a body: its header block alone
        if self._held is not None:
            self.send(b"")
        return super().getresponse()

    def close(self) -> None:
        self._held = None
        super().close()


class _GuardedHTTPConnection(_OneWrite):
    def connect(self) -> None:
        super().connect()
        guard = _current.get()
        if guard is not None:
            guard._register(self)


class _GuardedHTTPSConnection(_OneWrite, HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        guard = _current.get()
        if guard is not None:
            guard._register(self)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_POOLS: Mapping[str, type[HTTPConnectionPool]] = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class GuardedAdapter(HTTPAdapter):
    """A requests transport adapter that enforces a Guard on every request."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, PoolManager):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        guard = self.guard
        guard.check()
        limit = max(0.1, guard.remaining())
        if isinstance(timeout, tuple):
            timeout = tuple(limit if t is None else min(float(t), limit) for t in timeout)
        else:
            timeout = limit if timeout is None else min(float(timeout), limit)
        token = _current.set(guard)
        try:
            response = super().send(request, stream=True, timeout=timeout, verify=verify, cert=cert,
                                    proxies=proxies)
            if response.status_code in AUTH_CHALLENGES:
                _check_challenge(response, guard)
            else:
                _read_capped(response, guard)
        except CollectionError:
            raise
        except Exception:
            if guard.ended is not None or guard.remaining() <= 0:
                guard.abort("timeout")
                raise guard.error() from None
            raise
        finally:
            _current.reset(token)
        return response


def _check_challenge(response: requests.Response, guard: Guard) -> None:
    """An authentication challenge is left unread: the auth handler (NTLM, Kerberos) reads
    it together with the connection's TLS certificate. Only a small, announced body is
    accepted (HTTP.sys sends an empty one)."""
    declared = response.headers.get("Content-Length", "")
    if not declared.isdigit() or int(declared) > MAX_CHALLENGE_BYTES:
        response.close()
        raise CollectionError(
            "protocol", f"{guard.what} answered HTTP {response.status_code} with an unbounded body; refused")


def _read_capped(response: requests.Response, guard: Guard) -> None:
    """Read the body as it streams; refuse it past the guard's cap; keep it as the content."""
    chunks: list[bytes] = []
    size = 0
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > guard.max_body:
        response.close()
        raise CollectorOutputError(
            f"{guard.what} announced a response of {int(declared)} bytes, more than the "
            f"{size_text(guard.max_body)} accepted; refused")
    try:
        for chunk in response.raw.stream(CHUNK, decode_content=True):
            size += len(chunk)
            if size > guard.max_body:
                response.close()
                raise CollectorOutputError(
                    f"{guard.what} sent a response larger than {size_text(guard.max_body)}; refused")
            chunks.append(chunk)
            if guard.ended is not None:
                break
    except urllib3.exceptions.ReadTimeoutError:
        response.close()
        if guard.ended is None:
            raise CollectionError("timeout", f"{guard.what} stopped sending in the middle of a response") from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError, OSError):
        response.close()
        if guard.ended is None:
            raise CollectionError("reset", f"{guard.what} broke off a response") from None
    if guard.ended is not None:
        response.close()
        raise guard.error()
    response._content = b"".join(chunks)
    response._content_consumed = True


def install(session: requests.Session, guard: Guard) -> None:
    """Route every request of `session` through `guard` (idempotent)."""
    current = session.adapters.get("http://")
    if isinstance(current, GuardedAdapter) and current.guard is guard:
        return
    adapter = GuardedAdapter(guard)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


# -- preflight's probes: a TCP connection, the TLS certificate, one POST -------------------------


class Unreachable(CollectionError):
    """No TCP connection: `reason` is "refused", "unresolved", "timeout" or "unreachable"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__("timeout" if reason == "timeout" else "refused", message)
        self.reason = reason


def _per_step(guard: Guard, cap: float) -> float:
    """A socket timeout for one step: at most `cap`, never past the guard's deadline."""
    guard.check()
    return max(0.1, min(cap, guard.remaining()))


def _connect(address: str, port: int, guard: Guard, cap: float) -> socket.socket:
    """A TCP connection registered with `guard` (its watchdog shuts it down at the deadline)."""
    where = f"{address} port {port}"
    try:
        sock = socket.create_connection((address, port), timeout=_per_step(guard, cap))
    except ConnectionRefusedError:
        raise Unreachable("refused", f"nothing listens on {where} (connection refused)") from None
    except socket.gaierror:
        raise Unreachable("unresolved", f"cannot resolve {address}") from None
    except TimeoutError:
        guard.check()
        raise Unreachable("timeout", f"no answer from {where} (connection timed out)") from None
    except OSError as exc:
        guard.check()
        text = " ".join(str(exc.strerror or exc).split())[:200]
        raise Unreachable("unreachable", f"cannot connect to {where}: {text}") from None
    guard._register(sock)
    return sock


def reach(address: str, port: int, guard: Guard, *, cap: float = 10.0) -> None:
    """Open a TCP connection to `address`:`port` and close it; Unreachable says why not."""
    _connect(address, port, guard, cap).close()


@dataclass(frozen=True)
class PeerCertificate:
    """The certificate a server sends, and whether this machine trusts it for `address`."""

    der: bytes
    verified: bool
    error: str | None  # why verification failed
    code: int  # OpenSSL's verify code (10 expired, 62 wrong host name), 0 when none


def _handshake(address: str, port: int, guard: Guard, context: ssl.SSLContext, cap: float) -> bytes:
    raw = _connect(address, port, guard, cap)
    try:
        # the TLS socket takes the descriptor over: registered before its handshake starts
        with context.wrap_socket(raw, server_hostname=address, do_handshake_on_connect=False) as tls:
            guard._register(tls)
            tls.do_handshake()
            return tls.getpeercert(binary_form=True) or b""
    finally:
        raw.close()


def peer_certificate(address: str, port: int, guard: Guard, *, ca_file: str, cap: float = 10.0) -> PeerCertificate:
    """Two handshakes: one that accepts any certificate, to see it as sent; one that verifies
    it against `ca_file` and `address`, as the scan does. CollectionError("tls") when the
    port does not complete a TLS handshake at all."""
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain.check_hostname = False
    plain.verify_mode = ssl.CERT_NONE
    try:
        der = _handshake(address, port, guard, plain, cap)
    except (ssl.SSLError, OSError) as exc:
        guard.check()
        if isinstance(exc, Unreachable):
            raise
        text = " ".join(str(exc).split())[:200]
        raise CollectionError("tls", f"no TLS handshake with {address} port {port}: {text}") from None
    try:
        _handshake(address, port, guard, ssl.create_default_context(cafile=ca_file), cap)
    except ssl.SSLCertVerificationError as exc:
        guard.check()
        return PeerCertificate(der, False, str(exc.verify_message or exc), int(exc.verify_code or 0))
    except (ssl.SSLError, OSError) as exc:
        guard.check()
        if isinstance(exc, Unreachable):
            raise
        return PeerCertificate(der, False, " ".join(str(exc).split())[:200], 0)
    return PeerCertificate(der, True, None, 0)


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read within the guard: status, WWW-Authenticate values, body."""

    status: int
    challenges: tuple[str, ...]
    body: bytes


def post(url: str, body: bytes, headers: Mapping[str, str], guard: Guard, *, verify: bool | str) -> Answer:
    """POST `body` to `url` through a guarded session (no redirect followed). An
    authentication challenge's body is not read (its headers are the answer)."""
    session = requests.Session()
    install(session, guard)
    try:
        response = session.post(url, data=body, headers=dict(headers), verify=verify, allow_redirects=False,
                                timeout=_per_step(guard, 15.0))
        challenges = tuple(response.raw.headers.getlist("WWW-Authenticate")) if response.raw is not None else ()
        answer = Answer(response.status_code, challenges,
                        b"" if response.status_code in AUTH_CHALLENGES else response.content)
        response.close()
        return answer
    except CollectionError:
        raise
    except requests.exceptions.SSLError:
        raise CollectionError("tls", f"TLS with {url} failed: certificate not trusted or handshake refused") from None
    except (requests.exceptions.Timeout, TimeoutError):
        raise CollectionError("timeout", f"{url} did not answer in time") from None
    except (requests.exceptions.ConnectionError, ConnectionError):
        raise CollectionError("reset", f"{url} closed the connection or could not be reached") from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
            OSError) as exc:
        raise CollectionError("protocol", f"HTTP with {url} failed: {type(exc).__name__}") from None
    finally:
        session.close()


# -- an authentication library that cannot read what the server sent -------------------------

#: Libraries that read the server's authentication tokens (NTLM, SPNEGO) for pywinrm.
AUTH_LIBRARIES = ("spnego", "requests_ntlm", "ntlm_auth")


def unreadable_auth_token(exc: BaseException, what: str) -> CollectionError | None:
    """The server's fault, when `exc` was raised inside an authentication library below
    the last frame of our own code: the library was reading the server's challenge (or
    its encrypted answer) and could not, e.g. a KeyError from pyspnego for a 401 carrying
    `Negotiate <random hex>`. None otherwise (a bug of ours stays one).

    Only the frames after our last one count, so a bug in this module's adapter, which
    the library calls back to send the next leg, is never blamed on the server."""
    frames: list[str] = []
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frames.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    ours = [i for i, name in enumerate(frames) if name == "scanner" or name.startswith("scanner.")]
    below = frames[ours[-1] + 1:] if ours else frames
    if not any(name.split(".")[0] in AUTH_LIBRARIES for name in below):
        return None
    return CollectionError("protocol", f"{what} sent an authentication challenge that cannot be read "
                           f"({type(exc).__name__} in the NTLM library): not a valid NTLM or Negotiate token",
                           hint="check what answers on this port: WinRM sends a well-formed NTLM challenge")


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An auth that changes nothing: a template prepared without the session's auth."""
    return request


def prepare_once(session: requests.Session) -> Callable[[requests.Request], requests.PreparedRequest]:
    """`session.prepare_request` that prepares pywinrm's plain POST once per session.

    requests merges the session's headers, cookies, hooks and auth and parses the URL for
    every request (0.15-0.25 ms each, four to seven per server; bench/README.md, "CPU per
    server"). pywinrm's messages differ only in their body: a template is prepared by
    requests itself, without the auth, and kept; each message is a copy of it with its own
    body, then the session's auth applied to it as requests applies it (`prepare_auth`, on
    every request: Basic's header, NTLM's and Kerberos's per-request hooks and headers).
    Only while nothing the template came from changed (same method and URL, no per-request
    settings, the same session headers, no hooks, no cookies, no netrc lookup); anything
    else is prepared by requests as before."""
    templates: dict[tuple[str, str], tuple[requests.PreparedRequest, dict[str, str]]] = {}

    def prepare_request(request: requests.Request) -> requests.PreparedRequest:
        plain = (isinstance(request.data, bytes) and not (request.files or request.json or request.params
                 or request.headers or request.cookies or request.auth)
                 and not any(request.hooks.values()) and not any(session.hooks.values())
                 and not session.cookies and (session.auth is not None or not session.trust_env)
                 and isinstance(request.url, str) and request.method == "POST")
        if not plain:
            return requests.Session.prepare_request(session, request)
        key = (str(request.method), str(request.url))
        kept = templates.get(key)
        headers = dict(session.headers)
        if kept is None or kept[1] != headers:
            template = requests.Session.prepare_request(
                session, requests.Request(request.method, request.url, data=b"", auth=_no_auth))
            kept = templates[key] = (template, headers)
        prepared = kept[0].copy()
        prepared.hooks = default_hooks()  # its own, as requests gives each request
        prepared.prepare_body(request.data, None)
        prepared.prepare_auth(session.auth)
        return prepared

    return prepare_request

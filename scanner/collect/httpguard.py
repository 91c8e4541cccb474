"""The one place a connection to a server under audit is opened: every TCP connection,
TLS handshake and HTTP exchange of the scanner with the servers it audits, bounded by a
wall-clock deadline and a size cap.

pywinrm's HTTP (winrm_client.py) runs on a requests Session this module's adapter is
mounted on (`install`), so its connections are opened here: plain http on the adapter's
own keep-alive connection, written and read by httpwire.py; https and proxied requests
through urllib3. Preflight's own probes (a TCP connection, the TLS certificate, an
unauthenticated POST) are `reach`, `peer_certificate` and `post`. No other module of
`scanner/` outside the lab (the server side) imports socket, ssl, requests, urllib3 or
http.client to open a connection (tests/test_layout.py checks it); the one other
connection, to a domain controller for `inventory discover --ldap`, is ldap3's in
ldapclient.py.

requests' `timeout` bounds each socket read, not the exchange: a peer that sends one
byte every half second, or a body that never ends, keeps a read going forever. A
`Guard` (deadline.py) holds one collection's deadline. While it is installed on a
requests Session (`install`), or passed to `reach`, `peer_certificate` or `post`:

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
import functools
import http.client
import select
import socket
import ssl
import struct
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.hooks import default_hooks
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers, select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from scanner.collect import httpwire
from scanner.collect.deadline import Guard as Guard
from scanner.collect.deadline import abort_all as abort_all
from scanner.collect.httpwire import AUTH_CHALLENGES, MAX_CHALLENGE_BYTES
from scanner.errors import CollectionError

CHUNK = 64 * 1024
# verify_tls = false is the user's choice, said once by the command line (module docstring)
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
_current: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("cas_audit_http_guard", default=None)


def watch(guard: Guard, conn: HTTPConnection | socket.socket) -> None:
    """Shut `conn` (a connection, or a bare socket) down when `guard` ends."""
    guard.on_end(functools.partial(_shutdown, conn))


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
            watch(guard, self)


class _GuardedHTTPSConnection(_OneWrite, HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        guard = _current.get()
        if guard is not None:
            watch(guard, self)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_POOLS: Mapping[str, type[HTTPConnectionPool]] = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class GuardedAdapter(HTTPAdapter):
    """A requests transport adapter that enforces a Guard on every request.

    A plain-http request without a proxy goes over the adapter's own keep-alive
    connection, written and read by httpwire (`_send_plain`); https (urllib3's TLS
    policy, and the certificate that NTLM's and Kerberos's channel binding read from
    urllib3's socket) and a proxied request go through urllib3, its connections opened by
    `_GuardedHTTPConnection` / `_GuardedHTTPSConnection` and registered with the guard."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._plain: _Plain | None = None
        self._urls: dict[str, tuple[str, int, str, str]] = {}  # url -> host, port, path, Host field
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, PoolManager):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def close(self) -> None:
        self._drop()
        super().close()

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        guard = self.guard
        guard.check()
        limit = max(0.1, guard.remaining())
        if isinstance(timeout, tuple):
            timeout = tuple(limit if t is None else min(float(t), limit) for t in timeout)
        else:
            timeout = limit if timeout is None else min(float(timeout), limit)
        url = request.url
        if (isinstance(url, str) and url.startswith("http://") and isinstance(request.body, (bytes, type(None)))
                and (not proxies or select_proxy(url, proxies) is None)):
            return self._send_plain(request, url, timeout)
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

    # -- plain http: one keep-alive connection of the adapter's own --------------------------

    def _where(self, url: str) -> tuple[str, int, str, str]:
        if (where := self._urls.get(url)) is None:
            parts = urllib3.util.parse_url(url)
            host, port = (parts.host or "").strip("[]"), parts.port or 80
            where = self._urls[url] = (host, port, parts.request_uri, httpwire.host_header(host, port, 80))
        return where

    def _drop(self) -> None:
        plain, self._plain = self._plain, None
        if plain is not None:
            plain.sock.close()

    def _connection(self, host: str, port: int, connect_timeout: float | None) -> _Plain:
        plain = self._plain
        if plain is not None and (plain.host, plain.port) == (host, port) and plain.idle():
            return plain
        self._drop()
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError as exc:
            raise requests.exceptions.ConnectTimeout(exc) from None
        except OSError as exc:  # refused, unresolved, unreachable: the words _translate reads
            raise requests.exceptions.ConnectionError(exc) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as urllib3 sets it
        watch(self.guard, sock)
        self._plain = _Plain(host, port, sock)
        return self._plain

    def _send_plain(self, request: requests.PreparedRequest, url: str, timeout: Any) -> requests.Response:
        guard = self.guard
        connect_timeout, read_timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        host, port, path, host_field = self._where(url)
        method = str(request.method)
        body = request.body
        assert body is None or isinstance(body, bytes)  # send() takes only those here
        wire = httpwire.write_request(method, path, host_field, request.headers, body)
        received = 0

        def recv() -> bytes:
            nonlocal received
            data = sock.recv(CHUNK)
            received += len(data)
            return data

        try:
            plain = self._connection(host, port, connect_timeout)
            plain.set_timeout(read_timeout)
            sock = plain.sock
            sock.sendall(wire)
            reply = httpwire.read_reply(recv, method, max_body=guard.max_body, what=guard.what)
        except BaseException as exc:
            self._drop()
            if guard.ended is not None or guard.remaining() <= 0:
                guard.abort("timeout")
                raise guard.error() from None
            if isinstance(exc, (TimeoutError, BlockingIOError)):  # BlockingIOError: the kernel's timeout
                if received:
                    raise httpwire.stalled(guard.what) from None
                raise requests.exceptions.ReadTimeout(exc) from None
            if isinstance(exc, OSError):
                if received:
                    raise httpwire.broken(guard.what) from None
                raise requests.exceptions.ConnectionError(f"Connection aborted: {exc}") from None
            raise
        if not reply.reusable:
            self._drop()
        return self._response(request, url, reply)

    def _response(self, request: requests.PreparedRequest, url: str, reply: httpwire.Reply) -> requests.Response:
        """The answer as requests' own adapter builds it (`build_response`)."""
        response = requests.Response()
        response.status_code = reply.status
        response.headers = CaseInsensitiveDict(reply.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = httpwire.Raw(reply)
        response.reason = reply.reason
        response.url = url
        response.request = request
        response.connection = self
        response._content = reply.body
        response._content_consumed = True
        if reply.headers.get("Set-Cookie") is not None:
            requests.cookies.extract_cookies_to_jar(response.cookies, request, response.raw)
        return response


#: Where the kernel keeps a plain connection's timeouts (SO_RCVTIMEO, SO_SNDTIMEO on a
#: blocking socket): each receive and send is one system call, where a socket with a Python
#: timeout polls before each (and hands the GIL over twice). Elsewhere Python's timeout.
KERNEL_TIMEOUTS = sys.platform.startswith("linux")


class _Plain:
    """The adapter's plain-http connection."""

    def __init__(self, host: str, port: int, sock: socket.socket) -> None:
        self.host, self.port, self.sock = host, port, sock
        self.timeout: float | None = None
        if KERNEL_TIMEOUTS:
            sock.settimeout(None)  # blocking; set_timeout gives the kernel the timeout

    def set_timeout(self, seconds: float) -> None:
        """Each receive and send waits at most `seconds` (a failure raises TimeoutError, or
        BlockingIOError from the kernel's timeout); unchanged within a tenth of a second."""
        if self.timeout is not None and abs(self.timeout - seconds) < 0.1:
            return
        self.timeout = seconds
        if not KERNEL_TIMEOUTS:
            self.sock.settimeout(seconds)
            return
        whole = int(seconds)
        value = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)

    def idle(self) -> bool:
        """Nothing to read on it (not closed by the server): urllib3's check before reuse."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable


def _check_challenge(response: requests.Response, guard: Guard) -> None:
    """An authentication challenge is left unread: the auth handler (NTLM, Kerberos) reads
    it together with the connection's TLS certificate. Only a small, announced body is
    accepted (HTTP.sys sends an empty one)."""
    declared = response.headers.get("Content-Length", "")
    if not declared.isdigit() or int(declared) > MAX_CHALLENGE_BYTES:
        response.close()
        raise httpwire.unbounded_challenge(guard.what, response.status_code)


def _read_capped(response: requests.Response, guard: Guard) -> None:
    """Read the body as it streams; refuse it past the guard's cap; keep it as the content."""
    chunks: list[bytes] = []
    size = 0
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > guard.max_body:
        response.close()
        raise httpwire.announced_too_large(guard.what, int(declared), guard.max_body)
    try:
        for chunk in response.raw.stream(CHUNK, decode_content=True):
            size += len(chunk)
            if size > guard.max_body:
                response.close()
                raise httpwire.too_large(guard.what, guard.max_body)
            chunks.append(chunk)
            if guard.ended is not None:
                break
    except urllib3.exceptions.ReadTimeoutError:
        response.close()
        if guard.ended is None:
            raise httpwire.stalled(guard.what) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError, OSError):
        response.close()
        if guard.ended is None:
            raise httpwire.broken(guard.what) from None
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
    watch(guard, sock)
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
            watch(guard, tls)
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

"""A wall-clock deadline and a size cap for every HTTP exchange with one server.

requests' `timeout` bounds each socket read, not the exchange: a peer that sends one
byte every half second, or a body that never ends, keeps a read going forever. A
`Guard` holds one collection's deadline. While it is installed on a requests Session
(`install`):

- every connection the session opens is registered with the guard, and a watchdog
  timer shuts those sockets down at the deadline, so a read blocked on any peer
  returns at once;
- every response body is read as it streams and refused past `max_body` bytes, before
  more is buffered;
- a request started after the deadline, or after `abort()`, fails at once.

`abort_all()` ends every guarded exchange of the process (SIGINT/SIGTERM).
Limitation: during a TLS handshake only the per-read timeout applies (the socket is
registered once the handshake is done).
"""

from __future__ import annotations

import contextvars
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from scanner.errors import CollectionError, CollectorOutputError

CHUNK = 64 * 1024
AUTH_CHALLENGES = (401, 407)
MAX_CHALLENGE_BYTES = 64 * 1024
_current: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("cas_audit_http_guard", default=None)
_live: weakref.WeakSet[Guard] = weakref.WeakSet()
_live_lock = threading.Lock()


class Guard:
    """The deadline and body cap of one server's collection."""

    def __init__(self, timeout_s: float, *, max_body: int, what: str) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.max_body = max_body
        self.what = what
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self._ended: str | None = None  # "timeout" | "interrupted"
        self._timer = threading.Timer(max(0.0, timeout_s), self.abort, args=("timeout",))
        self._timer.daemon = True
        self._timer.start()
        with _live_lock:
            _live.add(self)

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
            return CollectionError("interrupted", f"{self.what}: abandoned, the scan was interrupted")
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
        """Stop the watchdog (the collection is over)."""
        self._timer.cancel()
        with _live_lock:
            _live.discard(self)

    def _register(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._connections.append(conn)
            ended = self._ended is not None
        if ended:
            _shutdown(conn)


def _shutdown(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def abort_all() -> None:
    """Abandon every guarded exchange in this process (used on SIGINT/SIGTERM)."""
    with _live_lock:
        guards = list(_live)
    for guard in guards:
        guard.abort("interrupted")


class _GuardedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        guard = _current.get()
        if guard is not None:
            guard._register(self)


class _GuardedHTTPSConnection(HTTPSConnection):
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
            f"{guard.max_body // (1024 * 1024)} MiB accepted; refused")
    try:
        for chunk in response.raw.stream(CHUNK, decode_content=True):
            size += len(chunk)
            if size > guard.max_body:
                response.close()
                raise CollectorOutputError(
                    f"{guard.what} sent a response larger than {guard.max_body // (1024 * 1024)} MiB; refused")
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

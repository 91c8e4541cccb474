"""A collection's wall-clock deadline (`Guard`), kept by one watchdog thread for the
whole process, and `abort_all` for SIGINT/SIGTERM.

A Guard holds one server's deadline and body cap. Every connection opened for it
(httpguard.py opens them all) is registered with it (`on_end`, through httpguard's
`watch`); at the deadline, or on `abort()`, those sockets are shut down, so a read
blocked on any peer returns at once, and `check()` refuses a request started afterwards.
Nothing here opens a connection.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Callable

from scanner.errors import CollectionError

_live: weakref.WeakSet[Guard] = weakref.WeakSet()
_live_lock = threading.Lock()


class Guard:
    """The deadline and body cap of one server's collection."""

    def __init__(self, timeout_s: float, *, max_body: int, what: str) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.max_body = max_body
        self.what = what
        self._lock = threading.Lock()
        self._on_end: list[Callable[[], None]] = []
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
            callbacks = list(self._on_end)
        for callback in callbacks:
            callback()

    def close(self) -> None:
        """Stop watching the deadline (the collection is over)."""
        _watchdog.forget(self)
        with self._lock:
            self._on_end.clear()
        with _live_lock:
            _live.discard(self)

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call `callback` when this guard ends (at once if it has): httpguard shuts a
        connection down with it (`watch`). The callback must not raise."""
        with self._lock:
            self._on_end.append(callback)
            ended = self._ended is not None
        if ended:
            callback()


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

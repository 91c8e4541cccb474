"""Every Guard's deadline is kept by one watchdog thread (httpguard._Watchdog).

A timer thread per guard cost a thread's start and end per server (bench/README.md, "CPU
per server"). The deadlines must still be kept exactly: each guard ends at its own
deadline, in whatever order the guards were made, and a closed guard is never ended.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from scanner.collect import httpguard


@pytest.fixture
def watched_socket() -> Iterator[Callable[[httpguard.Guard], socket.socket]]:
    """Sockets a guard shuts down when it ends; reading one waits for that (at most 10 s).
    Their other ends stay open meanwhile: only the shutdown ends a read."""
    made: list[socket.socket] = []

    def make(guard: httpguard.Guard) -> socket.socket:
        ours, theirs = socket.socketpair()
        made.extend((ours, theirs))
        httpguard.watch(guard, ours)
        ours.settimeout(10)
        return ours

    yield make
    for sock in made:
        sock.close()


def test_many_guards_share_one_thread() -> None:
    first = httpguard.Guard(60, max_body=1, what="first")  # the watchdog exists from here on
    threads = threading.active_count()
    guards = [httpguard.Guard(60, max_body=1, what=f"server {i}") for i in range(50)]
    try:
        assert threading.active_count() == threads
    finally:
        for guard in [first, *guards]:
            guard.close()


def test_each_guard_ends_at_its_own_deadline_whatever_the_order(
        watched_socket: Callable[[httpguard.Guard], socket.socket]) -> None:
    late = httpguard.Guard(60, max_body=1, what="late")
    closed = httpguard.Guard(0.05, max_body=1, what="closed")
    closed.close()  # its collection finished before the deadline
    soon = httpguard.Guard(0.3, max_body=1, what="soon")  # made after a later deadline
    sock = watched_socket(soon)
    try:
        assert sock.recv(1) == b""  # shut down by the watchdog, well before the 10 s timeout
        assert soon.ended == "timeout"
        assert late.ended is None and closed.ended is None
    finally:
        for guard in (late, soon):
            guard.close()


def test_a_guard_made_past_its_deadline_ends_at_once(
        watched_socket: Callable[[httpguard.Guard], socket.socket]) -> None:
    guard = httpguard.Guard(0, max_body=1, what="no time")
    sock = watched_socket(guard)
    try:
        assert sock.recv(1) == b""
        assert guard.ended == "timeout"
    finally:
        guard.close()

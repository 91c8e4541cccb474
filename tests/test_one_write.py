"""A request's header block leaves with its body in one write (httpguard._OneWrite), where
urllib3 writes them apart: the same bytes on the wire as urllib3's own connection sends,
in one `sendall` instead of two; a request without a body, and a chunked one, still leave
whole (bench/README.md, "System time")."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from rawhttp import CLOSE, CannedPeer
from urllib3.connection import HTTPConnection

from scanner.collect import httpguard


class _CountingSocket:
    """A connected socket that counts its writes (everything else is the socket's own)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes = 0

    def sendall(self, data: Any) -> None:
        self.writes += 1
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.fixture
def server() -> Iterator[CannedPeer]:
    made = CannedPeer([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok" + CLOSE])
    yield made
    made.close()


def _send(cls: type[HTTPConnection], port: int, method: str, body: Any, **kwargs: Any) -> int:
    conn = cls("127.0.0.1", port, timeout=10)
    conn.connect()
    counting = _CountingSocket(conn.sock)
    conn.sock = counting  # type: ignore[assignment]
    conn.request(method, "/wsman", body=body, headers={"Content-Type": "application/soap+xml"}, **kwargs)
    response = conn.getresponse()
    assert (response.status, response.data) == (200, b"ok")
    conn.close()
    return counting.writes


@pytest.mark.parametrize(("method", "body", "chunked", "ours", "urllib3s"), [
    ("POST", b"<s:Envelope>" + b"x" * 20000 + b"</s:Envelope>", False, 1, 2),
    ("POST", b"", False, 1, 1),  # NTLM's empty POST: the header block alone, at getresponse
    ("GET", None, False, 1, 1),
    ("POST", [b"first", b"second"], True, 3, 4),  # chunked: the header block with the first chunk
])
def test_the_same_bytes_in_fewer_writes(server: CannedPeer, method: str, body: Any, chunked: bool, ours: int,
                                         urllib3s: int) -> None:
    theirs = _send(HTTPConnection, server.port, method, body, chunked=chunked)
    mine = _send(httpguard._GuardedHTTPConnection, server.port, method, body, chunked=chunked)
    assert (mine, theirs) == (ours, urllib3s)
    assert len(server.requests) == 2
    assert server.requests[0] == server.requests[1]

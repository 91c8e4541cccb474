"""Test helper: raw HTTP peers on loopback that misbehave below WinRM.

Not a model of Windows (the lab is): these are the network's faults, an odd middlebox or
a broken proxy, that the scanner must survive. Each answers the first request of every
connection in one of these ways:

- "trickle": a valid-looking response, one byte every 0.5 s, for ever;
- "stall": headers announcing 4096 bytes, 100 of them, then silence;
- "endless": a chunked body that never ends, as fast as the client reads;
- "huge-length": headers announcing 2 GiB, then the body as fast as the client reads;
- "not-xml": a complete, small 200 response whose body is not XML;
- "short": headers announcing 4096 bytes, 100 of them, then the connection closed;
- "bad-challenge": every request of the connection answered 401 with a challenge
  `WWW-Authenticate: Negotiate <hex>` that is no NTLM or SPNEGO token at all (hex digits
  are valid base64, so it decodes to bytes no authentication library can read);
- "tls-trickle": for https: after the client's first bytes (its TLS ClientHello), a TLS
  record header announcing 16 KiB of handshake, then one byte every 0.5 s, for ever.

`requested` is set once a request has been read in full (a test waits on it, not on time).

`CannedPeer` answers every request, on every connection, with the next of a list of raw
answers, and keeps each request's bytes: what a client writes, and how it reads what comes
back (tests/test_one_write.py, tests/test_http_wire.py).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

MODES = ("trickle", "stall", "endless", "huge-length", "not-xml", "short", "bad-challenge", "tls-trickle")
#: The token of "bad-challenge": 64 hex digits, as random as any (fixed, so runs agree).
BAD_TOKEN = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml;charset=UTF-8\r\n"


class RawPeer:
    """A TCP server on 127.0.0.1 (free port) answering every request in `mode`."""

    def __init__(self, mode: str) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.sent = 0  # body and header bytes sent, all connections together
        self.requested = threading.Event()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RawPeer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read_request(self, conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        self.requested.set()
        return True

    def _send(self, conn: socket.socket, data: bytes) -> None:
        # counted before sending: a client that has read the answer finds it counted (counted
        # after, a test reading `sent` as soon as the client gave up could see 0 on a loaded machine)
        self.sent += len(data)
        conn.sendall(data)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(1.0)
        try:
            if self.mode == "tls-trickle":
                if conn.recv(65536):  # the ClientHello
                    self.requested.set()
                    self._send(conn, b"\x16\x03\x03\x40\x00")  # handshake record, 16 KiB
                    while not self._stop.wait(0.5):
                        self._send(conn, b"\x02")
                return
            if not self._read_request(conn):
                return
            if self.mode == "trickle":
                response = _HEAD + b"Content-Length: 100000\r\n\r\n" + b"<" * 100000
                for byte in response:
                    if self._stop.wait(0.5):
                        return
                    self._send(conn, bytes([byte]))
            elif self.mode == "stall":
                self._send(conn, _HEAD + b"Content-Length: 4096\r\n\r\n" + b"<" * 100)
                self._stop.wait()
            elif self.mode == "endless":
                self._send(conn, _HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
                block = b"<s:Envelope>" * 5000
                chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
                while not self._stop.is_set():
                    self._send(conn, chunk)
            elif self.mode == "short":
                self._send(conn, _HEAD + b"Content-Length: 4096\r\n\r\n" + b"<" * 100)
            elif self.mode == "bad-challenge":
                challenge = (b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate " + BAD_TOKEN.encode()
                             + b"\r\nContent-Length: 0\r\n\r\n")
                while True:  # the same connection, as NTLM needs: the client hangs up
                    self._send(conn, challenge)
                    if not self._read_request(conn):
                        return
            elif self.mode == "not-xml":
                self._send(conn, _HEAD + b"Content-Length: 15\r\n\r\nthis is no XML.")
            else:
                self._send(conn, _HEAD + f"Content-Length: {2 * 1024 ** 3}\r\n\r\n".encode())
                block = b"<" * 65536
                while not self._stop.is_set():
                    self._send(conn, block)
        except OSError:
            pass  # the client hung up: what the scanner is supposed to do
        finally:
            conn.close()


@contextmanager
def raw_peer(mode: str) -> Iterator[RawPeer]:
    with RawPeer(mode) as peer:
        yield peer


CLOSE = b"<close>"  # a CannedPeer answer ending in this: sent without it, then the connection closed


def request_length(data: bytes) -> int | None:
    """The length of the first whole request in `data` (Content-Length or chunked), None
    while it is incomplete."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.lower().split(b"\r\n")
    if b"transfer-encoding: chunked" in lines:
        end = body.find(b"0\r\n\r\n")
        return None if end < 0 else len(head) + 4 + end + 5
    length = next((int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length:")), 0)
    return len(head) + 4 + length if len(body) >= length else None


class CannedPeer:
    """A TCP listener on 127.0.0.1 answering each request with the next canned answer (raw
    bytes; the last one repeats), recording every request's bytes and counting connections."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0  # connections this side has closed
        self._change = threading.Condition()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def wait_closed(self, count: int) -> None:
        """Until this side has closed `count` connections (at most 10 s)."""
        with self._change:
            assert self._change.wait_for(lambda: self.closed >= count, timeout=10), "the peer did not close"

    def url(self, path: str = "/wsman") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._exchange(conn)
        finally:
            with self._change:
                self.closed += 1
                self._change.notify_all()

    def _exchange(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        data = b""
        while True:
            while (size := request_length(data)) is None:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                data += chunk
            self.requests.append(data[:size])
            data = data[size:]
            answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
            if answer.endswith(CLOSE):
                conn.sendall(answer[: -len(CLOSE)])
                return
            conn.sendall(answer)

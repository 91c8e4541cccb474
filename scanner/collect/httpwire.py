"""HTTP/1.1 as it goes on the wire for the scan's plain-http exchanges: a request written
in one piece, an answer read with its caps. No connection is opened here (httpguard.py
opens them, and calls `write_request` and `read_reply` on them).

Below pywinrm, requests, urllib3 and http.client cost about 0.3 ms of CPU a request, four
requests a server (header validation, the pool, urllib3's and requests' response objects,
the email parser for the header block: bench/README.md, "The HTTP exchange"). A WinRM
exchange needs little of that: one request, one answer with a Content-Length, on a
keep-alive connection. What this module reads, it reads as http.client and urllib3 would,
and no more trustingly:

- the status line `HTTP/1.x NNN reason`, 1xx interim answers skipped; a header block of at
  most 64 KiB and 100 fields (http.client's limit), folded lines joined, repeated fields
  joined with ", " (as requests' headers show them);
- the body framed by `Transfer-Encoding: chunked`, else `Content-Length` (repeated values
  must agree), else up to the connection's close; none for 1xx, 204, 304 or a HEAD;
- `Content-Encoding` gzip or deflate decoded (requests asks for them), every other coding
  left as it is (urllib3 does the same);
- the body capped while it streams, after decoding: past `max_body` it is refused, and
  one announced larger is refused before it is read; an authentication challenge (401,
  407) needs an announced length of at most 64 KiB (HTTP.sys sends an empty one);
- the connection is kept for the next request unless the answer ends it (`Connection:
  close`, HTTP/1.0 without keep-alive, a body read to the close).

What it writes is byte for byte what urllib3's connection writes for the same request
(tests/test_http_wire.py compares them): the request line, Host, the request's own
headers in their order, then the body, in one write.

`unreadable_auth_token` tells an answer no authentication library can read (the server's
fault) from a bug of ours.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import requests

from scanner.errors import CollectionError, CollectorOutputError

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
MAX_CHALLENGE_BYTES = 64 * 1024
AUTH_CHALLENGES = (401, 407)
_CHUNK_LINE = 4096
MAX_INTERIM = 16  # 1xx answers before the real one
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n]*))?\Z")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_ILLEGAL_VALUE = re.compile(r"\n(?![ \t])|\r(?![ \t\n])")  # http.client's
_FIELD_NAME = re.compile(r"[^:\s][^:\r\n]*\Z")  # http.client's


def size_text(limit: int) -> str:
    """A byte limit as people read it: "17 MiB", "64 KiB", "100 bytes" (never "0 MiB")."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


# -- the request -------------------------------------------------------------------------


def host_header(host: str, port: int, default_port: int) -> str:
    """http.client's Host field: the port only when it is not the scheme's."""
    name = f"[{host}]" if ":" in host else host
    return name if port == default_port else f"{name}:{port}"


def write_request(method: str, path: str, host: str, headers: Any, body: bytes | None) -> bytes:
    """The request as urllib3's connection sends it: ValueError for a method, path, header
    name or value http.client would refuse (a control character, a line break)."""
    if not _TOKEN.match(method) or any(c <= " " or c == "\x7f" for c in path):
        raise ValueError(f"refusing to send a request line with a control character or space: {method!r} {path!r}")
    lines = [f"{method} {path} HTTP/1.1"]
    if "host" not in {str(name).lower() for name in headers}:
        lines.append(f"Host: {host}")
    for name, value in headers.items():
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if not _FIELD_NAME.match(str(name)) or _ILLEGAL_VALUE.search(text):
            raise ValueError(f"refusing to send the header {name!r}: not a valid field")
        lines.append(f"{name}: {text}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1") + (body or b"")


# -- the answer --------------------------------------------------------------------------


class Fields(Mapping[str, str]):
    """An answer's header fields, read as urllib3's HTTPHeaderDict reads them: by name in
    any case, a repeated field's values joined with ", " (`fields[name]`) or apart
    (`getlist`, and `get_all` for http.cookiejar)."""

    def __init__(self, pairs: list[list[str]]) -> None:
        self._values: dict[str, list[str]] = {}
        self._names: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            if key in self._values:
                self._values[key].append(value)
            else:
                self._values[key], self._names[key] = [value], name

    def __getitem__(self, name: str) -> str:
        return ", ".join(self._values[name.lower()])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._values)

    def getlist(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), ()))

    def get_all(self, name: str, default: Any = None) -> Any:
        return self.getlist(name) or default


@dataclass(frozen=True)
class Reply:
    """One answer: status, reason, header fields, the decoded body, whether the connection
    may carry the next request."""

    status: int
    reason: str
    version: int  # 10 or 11
    headers: Fields
    body: bytes
    reusable: bool


class _Input:
    """Bytes from a connection, buffered: `recv()` gives the next bytes, b"" at its end.
    What is read stays in `buffer` from `pos` on: taking a line or a chunk moves `pos`
    instead of copying the rest (a body of many small chunks stays linear)."""

    def __init__(self, recv: Callable[[], bytes], what: str) -> None:
        self.recv, self.what = recv, what
        self.buffer = b""
        self.pos = 0

    def left(self) -> int:
        return len(self.buffer) - self.pos

    def rest(self) -> bytes:
        """What is buffered and not taken, taken."""
        data, self.buffer, self.pos = self.buffer[self.pos:], b"", 0
        return data

    def more(self) -> bool:
        data = self.recv()
        if not data:
            return False
        self.buffer = self.buffer[self.pos:] + data if self.pos else self.buffer + data
        self.pos = 0
        return True

    def line(self, limit: int) -> bytes:
        """One line without its CRLF; a missing or overlong line is a broken answer."""
        while True:
            end = self.buffer.find(b"\r\n", self.pos, self.pos + limit + 2)
            if end >= 0:
                line, self.pos = self.buffer[self.pos:end], end + 2
                return line
            if self.left() > limit:
                raise CollectionError("protocol", f"{self.what} sent a line longer than {limit} bytes; refused")
            if not self.more():
                raise broken(self.what)

    def exactly(self, size: int) -> bytes:
        """The next `size` bytes (the caller has bounded `size`)."""
        if self.left() < size:
            parts = [self.rest()]
            have = len(parts[0])
            while have < size:
                data = self.recv()
                if not data:
                    raise broken(self.what)
                parts.append(data)
                have += len(data)
            self.buffer = b"".join(parts)
        data, self.pos = self.buffer[self.pos:self.pos + size], self.pos + size
        return data


def broken(what: str) -> CollectionError:
    return CollectionError("reset", f"{what} broke off a response")


def stalled(what: str) -> CollectionError:
    return CollectionError("timeout", f"{what} stopped sending in the middle of a response")


def too_large(what: str, cap: int) -> CollectorOutputError:
    return CollectorOutputError(f"{what} sent a response larger than {size_text(cap)}; refused")


def announced_too_large(what: str, length: int, cap: int) -> CollectorOutputError:
    return CollectorOutputError(f"{what} announced a response of {length} bytes, more than the "
                                f"{size_text(cap)} accepted; refused")


def unbounded_challenge(what: str, status: int) -> CollectionError:
    """An authentication challenge (401, 407) must announce its length, at most
    MAX_CHALLENGE_BYTES (HTTP.sys sends an empty one)."""
    return CollectionError("protocol", f"{what} answered HTTP {status} with an unbounded body; refused")


def _not_http(what: str) -> CollectionError:
    return CollectionError("protocol", f"{what} answered something that is not HTTP")


def _too_large_head(what: str) -> CollectionError:
    return CollectionError("protocol", f"{what} sent a header block larger than {size_text(MAX_HEAD_BYTES)}; refused")


def _head(source: _Input) -> tuple[int, int, str, Fields]:
    """The status line and header block, interim (1xx) answers skipped."""
    for _ in range(MAX_INTERIM + 1):
        while True:
            end = source.buffer.find(b"\r\n\r\n", source.pos, source.pos + MAX_HEAD_BYTES + 4)
            if end >= 0:
                break
            if source.left() > MAX_HEAD_BYTES:
                raise _too_large_head(source.what)
            if not source.more():
                if not source.left():
                    raise requests.exceptions.ConnectionError(
                        f"Connection aborted: {source.what} closed the connection without an answer")
                raise broken(source.what)
        head, source.pos = source.buffer[source.pos:end], end + 4
        status_line, _, block = head.partition(b"\r\n")
        match = _STATUS.match(status_line)
        if match is None:
            raise _not_http(source.what)
        status = int(match.group(2))
        if 100 <= status < 200 and status != 101:
            continue  # 100 Continue and the like: the answer follows
        pairs: list[list[str]] = []
        for field in block.decode("latin-1").split("\r\n") if block else ():
            if field[:1] in (" ", "\t"):  # an obsolete folded line continues the field before
                if not pairs:
                    raise _not_http(source.what)
                pairs[-1][1] += " " + field.strip(" \t")
                continue
            name, colon, value = field.partition(":")
            if not colon or not _TOKEN.match(name):
                raise _not_http(source.what)
            pairs.append([name, value.strip(" \t")])
        if len(pairs) > MAX_HEADER_FIELDS:
            raise CollectionError("protocol", f"{source.what} sent more than {MAX_HEADER_FIELDS} header fields; "
                                  "refused")
        return 10 + int(match.group(1)), status, (match.group(3) or b"").decode("latin-1"), Fields(pairs)
    raise CollectionError("protocol", f"{source.what} sent more than {MAX_INTERIM} interim (1xx) answers; refused")


class _Decompressor:
    """urllib3's decoders, bounded: gzip (several members; what follows a later member
    that does not decode is dropped, as urllib3 drops it), deflate (zlib, else raw)."""

    def __init__(self, coding: str) -> None:
        self.gzip = coding != "deflate"
        self.engine = zlib.decompressobj(16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS)
        self.undecided = not self.gzip  # deflate: zlib until it fails on the first bytes, then raw
        self.seen = b""
        self.later_member = False
        self.done = False

    def decompress(self, data: bytes, room: int, what: str) -> bytes:
        """At most about `room` bytes out (the caller refuses a body that reaches it)."""
        out: list[bytes] = []
        produced = 0
        if self.undecided:
            self.seen += data
        while data and not self.done:
            try:
                piece = self.engine.decompress(data, max(1, room - produced))
            except zlib.error:
                if self.undecided:
                    self.undecided = False
                    self.engine = zlib.decompressobj(-zlib.MAX_WBITS)
                    data, self.seen = self.seen, b""
                    continue
                if self.later_member:
                    self.done = True
                    break
                raise CollectionError("protocol", f"{what} sent a body that does not decode as "
                                      f"{'gzip' if self.gzip else 'deflate'}") from None
            if piece and self.undecided:
                self.undecided, self.seen = False, b""
            out.append(piece)
            produced += len(piece)
            if produced >= room:
                break
            data = self.engine.unconsumed_tail
            if not data and self.gzip and self.engine.eof and self.engine.unused_data:
                data = self.engine.unused_data  # the next gzip member
                self.engine = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self.later_member = True
        return b"".join(out)

    def flush(self) -> bytes:
        return b"" if self.done else self.engine.flush()


class _Body:
    """The body, its Content-Encoding undone as it arrives (gzip, deflate), capped."""

    def __init__(self, encoding: str, cap: int, what: str) -> None:
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        self.steps = [_Decompressor(c) for c in reversed(codings) if c in ("gzip", "x-gzip", "deflate")]
        self.cap, self.what = cap, what
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        for step in self.steps:
            data = step.decompress(data, self.cap + 1 - self.size, self.what)
        self._keep(data)

    def _keep(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            raise too_large(self.what, self.cap)
        self.parts.append(data)

    def finish(self) -> bytes:
        data = b""
        for step in self.steps:
            data = step.decompress(data, self.cap + 1 - self.size, self.what) + step.flush()
        self._keep(data)
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def read_reply(recv: Callable[[], bytes], method: str, *, max_body: int, what: str) -> Reply:
    """Read one answer from `recv` (see the module docstring for what is accepted)."""
    source = _Input(recv, what)
    version, status, reason, headers = _head(source)
    connection = headers.get("Connection", "").lower()
    reusable = "close" not in connection if version == 11 else "keep-alive" in connection
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Reply(status, reason, version, headers, b"", reusable and not source.left())
    encoding = headers.get("Transfer-Encoding")
    chunked = encoding is not None and encoding.lower().rsplit(",", 1)[-1].strip() == "chunked"
    length: int | None = None
    if encoding is None and "Content-Length" in headers:
        values = {v.strip() for v in headers.getlist("Content-Length")}
        value = values.pop() if len(values) == 1 else ""
        if not value.isdigit():
            raise CollectionError("protocol", f"{what} sent an invalid Content-Length; refused")
        length = int(value)
    if status in AUTH_CHALLENGES:
        if length is None or length > MAX_CHALLENGE_BYTES:
            raise unbounded_challenge(what, status)
    elif length is not None and length > max_body:
        raise announced_too_large(what, length, max_body)
    body = _Body(headers.get("Content-Encoding", ""), max_body, what)
    if chunked:
        _chunked(source, body, max_body)
    elif length is not None:
        body.add(source.exactly(length))
    else:  # to the connection's close
        reusable = False
        body.add(source.rest())
        received = body.size
        while data := recv():
            received += len(data)
            if received > max_body:
                raise too_large(what, max_body)
            body.add(data)
    return Reply(status, reason, version, headers, body.finish(), reusable and not source.left())


def _chunked(source: _Input, body: _Body, cap: int) -> None:
    received = 0
    while True:
        size = source.line(_CHUNK_LINE).split(b";", 1)[0].strip(b" \t")
        if not size or len(size) > 15 or size.strip(b"0123456789abcdefABCDEF"):
            raise CollectionError("protocol", f"{source.what} sent an invalid chunk size; refused")
        length = int(size, 16)
        if length == 0:
            break
        received += length
        if received > cap:
            raise too_large(source.what, cap)
        body.add(source.exactly(length))
        if source.exactly(2) != b"\r\n":
            raise CollectionError("protocol", f"{source.what} sent a chunk without its line end; refused")
    for _ in range(MAX_HEADER_FIELDS + 1):  # the trailer, up to its empty line
        if not source.line(_CHUNK_LINE):
            return
    raise CollectionError("protocol", f"{source.what} sent more than {MAX_HEADER_FIELDS} trailer fields; refused")


class _Original:
    """The header fields, as http.cookiejar reads them (`requests.cookies.MockResponse`)."""

    def __init__(self, headers: Fields) -> None:
        self.msg = headers


class Raw:
    """`response.raw` of an answer read here, with what requests and the auth handlers read
    of it: its header fields (all values of a repeated one: `headers.getlist`), and a
    connection to release, which stays open for the next request (httpguard's adapter
    holds it)."""

    def __init__(self, reply: Reply) -> None:
        self.headers = reply.headers
        self.status, self.reason, self.version = reply.status, reply.reason, reply.version
        self._original_response = _Original(reply.headers) if "Set-Cookie" in reply.headers else None
        self.closed = True

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        return b""

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        return iter(())


# -- an authentication library that cannot read what the server sent -------------------------

#: Libraries that read the server's authentication tokens (NTLM, SPNEGO) for pywinrm.
AUTH_LIBRARIES = ("spnego", "requests_ntlm", "ntlm_auth")


def unreadable_auth_token(exc: BaseException, what: str) -> CollectionError | None:
    """The server's fault, when `exc` was raised inside an authentication library below
    the last frame of our own code: the library was reading the server's challenge (or
    its encrypted answer) and could not, e.g. a KeyError from pyspnego for a 401 carrying
    `Negotiate <random hex>`. None otherwise (a bug of ours stays one).

    Only the frames after our last one count, so a bug in httpguard's adapter, which the
    library calls back to send the next leg, is never blamed on the server."""
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

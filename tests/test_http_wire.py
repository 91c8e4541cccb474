"""The scan's own plain-http exchange (httpwire, under httpguard's adapter) against what
requests over urllib3 does with the same bytes: the same request on the wire, the same
answer read (status, reason, header fields, body, cookies), the connection kept as long
as urllib3 would keep it, and hostile answers refused within their caps."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
import requests
from rawhttp import CannedPeer

from scanner.collect import httpguard, httpwire
from scanner.errors import CollectionError, CollectorOutputError

BODY = b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>'


@pytest.fixture
def canned() -> Iterator[list[CannedPeer]]:
    made: list[CannedPeer] = []
    yield made
    for server in made:
        server.close()


def _serve(canned: list[CannedPeer], *answers: bytes) -> CannedPeer:
    server = CannedPeer(list(answers))
    canned.append(server)
    return server


def _ours(max_body: int = 1024 * 1024) -> tuple[requests.Session, httpguard.Guard]:
    session = requests.Session()
    session.trust_env = False
    guard = httpguard.Guard(10, max_body=max_body, what="the peer")
    httpguard.install(session, guard)
    return session, guard


def _theirs() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def _post(session: requests.Session, url: str, body: bytes = BODY) -> requests.Response:
    return session.post(url, data=body, headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
                        timeout=10)


def _ok(body: bytes, *fields: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(f + b"\r\n" for f in fields) + \
        b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_the_request_leaves_as_urllib3_writes_it(canned: list[CannedPeer]) -> None:
    server = _serve(canned, _ok(b"ok"))
    ours, guard = _ours()
    for body in (BODY, b"", b"x" * 100_000):
        for url in (server.url(), server.url("/wsman?PSVersion=2.0")):
            _post(_theirs(), url, body)
            _post(ours, url, body)
            theirs_sent, ours_sent = server.requests[-2:]
            assert ours_sent == theirs_sent
            assert ours_sent.startswith(b"POST /wsman")
    guard.close()


def test_the_host_field_leaves_out_the_schemes_own_port() -> None:
    assert httpwire.host_header("cas01.contoso.com", 80, 80) == "cas01.contoso.com"
    assert httpwire.host_header("cas01.contoso.com", 5985, 80) == "cas01.contoso.com:5985"
    assert httpwire.host_header("::1", 5985, 80) == "[::1]:5985"


@pytest.mark.parametrize(("method", "path", "name", "value"), [
    ("POST", "/wsman", "X-Evil", "a\r\nInjected: yes"), ("POST", "/wsman", "X", "a\nb"),
    ("POST", "/wsman", "Bad:Name", "v"), ("POST", "/wsman", " Leading", "v"),
    ("POST", "/ws man", "X", "v"), ("POST", "/wsman\r\nX: y", "X", "v"), ("PO ST", "/wsman", "X", "v"),
])
def test_a_request_that_would_split_is_refused_before_a_byte_leaves(method: str, path: str, name: str,
                                                                      value: str) -> None:
    """What http.client refuses (requests checks the fields it prepares itself, not all)."""
    with pytest.raises(ValueError):
        httpwire.write_request(method, path, "cas01:5985", {name: value}, b"x")
    assert httpwire.write_request("POST", "/wsman", "cas01:5985", {"X": "a\r\n continued"}, b"") == \
        b"POST /wsman HTTP/1.1\r\nHost: cas01:5985\r\nX: a\r\n continued\r\n\r\n"  # a fold http.client allows


ANSWERS = {
    "content-length": _ok(b"<answer/>", b"Content-Type: application/soap+xml;charset=UTF-8"),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n<ans\r\n5\r\nwer/>\r\n0\r\n"
               b"X-Trailer: t\r\n\r\n",
    "many small chunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 20000 +
                         b"0\r\n\r\n",
    "gzip": _ok(gzip.compress(b"<gzipped/>" * 50), b"Content-Encoding: gzip"),
    "two gzip members": _ok(gzip.compress(b"<one/>") + gzip.compress(b"<two/>"), b"Content-Encoding: gzip"),
    "deflate (zlib)": _ok(zlib.compress(b"<deflated/>" * 20), b"Content-Encoding: deflate"),
    "deflate (raw)": _ok(zlib.compress(b"<raw/>" * 20)[2:-4], b"Content-Encoding: deflate"),
    "unknown coding": _ok(b"as it is", b"Content-Encoding: br"),
    "100 continue first": b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"after"),
    "repeated and folded fields": _ok(b"", b"WWW-Authenticate: Negotiate", b"WWW-Authenticate: NTLM",
                                      b"X-Folded: first", b" second", b"Server: Microsoft-HTTPAPI/2.0"),
    "no reason": b"HTTP/1.1 500\r\nContent-Length: 4\r\n\r\nfail",
    "to the close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end<close>",
    "http/1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\none",
    "charset": _ok(b"text", b"Content-Type: text/plain; charset=iso-8859-1"),
}


@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_an_answer_reads_as_requests_reads_it(canned: list[CannedPeer], case: str) -> None:
    server = _serve(canned, ANSWERS[case])
    theirs = _post(_theirs(), server.url())
    ours, guard = _ours()
    mine = _post(ours, server.url())
    assert (mine.status_code, mine.reason, mine.content, mine.encoding, mine.url) == \
        (theirs.status_code, theirs.reason, theirs.content, theirs.encoding, theirs.url)
    assert dict(mine.headers) == dict(theirs.headers)
    assert mine.raw.headers.getlist("WWW-Authenticate") == theirs.raw.headers.getlist("WWW-Authenticate")
    assert mine.connection is ours.get_adapter(server.url())
    assert isinstance(mine.raw, httpwire.Raw) and not isinstance(theirs.raw, httpwire.Raw)  # not urllib3 twice
    guard.close()


def test_a_cookie_set_by_the_server_comes_back_as_with_urllib3(canned: list[CannedPeer]) -> None:
    answers = (_ok(b"one", b"Set-Cookie: affinity=cas01; Path=/"), _ok(b"two"))
    for session in (_theirs(), _ours()[0]):
        server = _serve(canned, *answers)
        _post(session, server.url())
        _post(session, server.url())
        assert session.cookies.get("affinity") == "cas01"
        assert b"\r\nCookie: affinity=cas01\r\n" in server.requests[1]


def test_a_redirect_is_followed_as_requests_follows_it_over_urllib3(canned: list[CannedPeer]) -> None:
    """requests decides (Session.resolve_redirects) and our answers carry what it reads."""
    seen = []
    for session in (_theirs(), _ours()[0]):
        server = _serve(canned, b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n", _ok(b"ok"))
        answer = _post(session, server.url())
        seen.append((answer.status_code, answer.content, [r.status_code for r in answer.history],
                     answer.url.rsplit("/", 1)[1], [r.split(b"\r\n")[0] for r in server.requests], server.connections))
    assert seen[0] == seen[1] == (200, b"ok", [302], "elsewhere", [b"POST /wsman HTTP/1.1", b"GET /elsewhere HTTP/1.1"], 1)


def test_one_connection_carries_the_requests_until_the_server_ends_it(canned: list[CannedPeer]) -> None:
    server = _serve(canned, _ok(b"1"), _ok(b"2"), _ok(b"3", b"Connection: close"), _ok(b"4"),
                    _ok(b"5") + b"<close>", _ok(b"6"))
    ours, guard = _ours()
    assert [_post(ours, server.url()).content for _ in range(3)] == [b"1", b"2", b"3"]
    assert server.connections == 1
    assert _post(ours, server.url()).content == b"4"  # after Connection: close, a new one
    assert server.connections == 2
    assert _post(ours, server.url()).content == b"5"  # the server closes it after answering
    server.wait_closed(2)  # (sent before its close arrives, the request would meet a reset, as with urllib3)
    assert _post(ours, server.url()).content == b"6"  # seen closed before the request: a new one
    assert server.connections == 3
    assert len(server.requests) == 6  # no request was sent twice
    guard.close()


HOSTILE = {
    "gzip bomb": (_ok(gzip.compress(b"\0" * 5_000_000), b"Content-Encoding: gzip"), CollectorOutputError,
                  "larger than 1 MiB"),
    "deflate bomb": (_ok(zlib.compress(b"\0" * 5_000_000), b"Content-Encoding: deflate"), CollectorOutputError,
                     "larger than 1 MiB"),
    "announced too large": (b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", CollectorOutputError,
                            "announced a response of 2000000 bytes"),
    "chunks too large": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                         b"80000\r\n" + b"x" * 0x80000 + b"\r\n" + b"80000\r\n" + b"x" * 0x80000 + b"\r\n" +
                         b"1\r\n", CollectorOutputError, "larger than 1 MiB"),
    "to the close, too large": (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1_100_000 + b"<close>", CollectorOutputError,
                                "larger than 1 MiB"),
    "invalid chunk size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", CollectionError,
                           "invalid chunk size"),
    "not http": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", CollectionError, "not HTTP"),
    "field without a colon": (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", CollectionError, "not HTTP"),
    "conflicting lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                            CollectionError, "invalid Content-Length"),
    "too many fields": (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"Content-Length: 0\r\n\r\n",
                        CollectionError, "more than 100 header fields"),
    "endless header block": (b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 70_000, CollectionError,
                             "header block larger than 64 KiB"),
    "endless interim answers": (b"HTTP/1.1 100 Continue\r\n\r\n" * 20, CollectionError, "interim"),
    "unbounded challenge": (b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\n\r\n", CollectionError,
                            "unbounded body"),
    "broken off": (b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n" + b"x" * 100 + b"<close>", CollectionError,
                   "broke off a response"),
    "corrupt gzip": (_ok(b"\x1f\x8b\x08\x00not gzip at all", b"Content-Encoding: gzip"), CollectionError,
                     "does not decode as gzip"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_answer_is_refused_in_one_sentence(canned: list[CannedPeer], case: str) -> None:
    answer, error, words = HOSTILE[case]
    server = _serve(canned, answer)
    ours, guard = _ours()
    with pytest.raises(error) as raised:
        _post(ours, server.url())
    assert words in raised.value.message and raised.value.message.startswith("the peer ")
    guard.close()


def test_an_answer_that_never_comes_is_a_timeout_not_a_hang(canned: list[CannedPeer]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        session = requests.Session()
        guard = httpguard.Guard(0.5, max_body=1024, what="the peer")
        httpguard.install(session, guard)
        with pytest.raises(CollectionError) as raised:
            session.post(f"http://127.0.0.1:{listener.getsockname()[1]}/wsman", data=b"x", timeout=30)
        assert raised.value.kind == "timeout"
        guard.close()
    finally:
        listener.close()


@pytest.mark.parametrize(("answer", "kind", "words"), [
    (b"", requests.exceptions.ReadTimeout, ""),  # accepts the request, never answers
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", CollectionError,
     "stopped sending in the middle of a response"),
])
@pytest.mark.parametrize("kernel", [True, False], ids=["kernel timeouts (Linux)", "Python timeouts (elsewhere)"])
def test_a_silent_peer_ends_at_the_requests_own_timeout_before_the_deadline(
        canned: list[CannedPeer], answer: bytes, kind: type[Exception], words: str, kernel: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The request's read timeout (pywinrm's read_timeout_sec) holds on the plain connection,
    kept by the kernel (httpguard.KERNEL_TIMEOUTS, on Linux) or by Python's socket timeout
    (every other system), well before the guard's deadline: the collection does not wait
    for the whole per-server limit."""
    if kernel and not httpguard.KERNEL_TIMEOUTS:
        pytest.skip("the kernel's socket timeouts are used on Linux only")
    monkeypatch.setattr(httpguard, "KERNEL_TIMEOUTS", kernel)
    release = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)
            release.wait(30)

    threading.Thread(target=serve, daemon=True).start()
    session = requests.Session()
    guard = httpguard.Guard(30, max_body=1024, what="the peer")
    httpguard.install(session, guard)
    started = time.monotonic()
    try:
        with pytest.raises(kind) as raised:
            session.post(f"http://127.0.0.1:{listener.getsockname()[1]}/wsman", data=b"x", timeout=(20, 0.5))  # connect, read
        assert time.monotonic() - started < 5
        if words:
            assert words in str(raised.value)
        assert guard.ended is None  # the read timed out; the deadline did not end the collection
    finally:
        release.set()
        guard.close()
        listener.close()

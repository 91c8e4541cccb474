"""The prepared-request fast path (httpguard.prepare_once) sends what requests would."""

from __future__ import annotations

import pytest
import requests
from requests.auth import HTTPBasicAuth
from winrm.protocol import Protocol

from scanner.collect import httpguard

ENDPOINT = "http://127.0.0.1:5985/wsman"


def _session(transport: str = "plaintext") -> requests.Session:
    protocol = Protocol(endpoint=ENDPOINT, transport=transport, username="lab\\auditor", password="pw",
                        message_encryption="never" if transport == "ntlm" else "auto", ca_trust_path=None)
    session = protocol.transport.build_session()
    session.trust_env = False
    return session


def _same(a: requests.PreparedRequest, b: requests.PreparedRequest) -> None:
    assert (a.method, a.url, a.body, dict(a.headers)) == (b.method, b.url, b.body, dict(b.headers))
    assert a.hooks == b.hooks and a.hooks is not b.hooks


def test_each_body_is_prepared_as_requests_prepares_it() -> None:
    session = _session()
    fast = httpguard.prepare_once(session)
    for body in (b"<s:Envelope>first</s:Envelope>", b"", b"x" * 70000, "é".encode()):
        _same(fast(requests.Request("POST", ENDPOINT, data=body)),
              requests.Session.prepare_request(session, requests.Request("POST", ENDPOINT, data=body)))
    assert fast(requests.Request("POST", ENDPOINT, data=b"abc")).headers["Authorization"].startswith("Basic ")


def test_changed_headers_auth_and_cookies_are_honoured() -> None:
    session = _session()
    fast = httpguard.prepare_once(session)
    fast(requests.Request("POST", ENDPOINT, data=b"one"))
    session.headers["X-Changed"] = "1"
    session.auth = HTTPBasicAuth("other", "secret")
    session.cookies.set("k", "v")
    got = fast(requests.Request("POST", ENDPOINT, data=b"two"))
    assert got.headers["X-Changed"] == "1" and got.headers["Cookie"] == "k=v"
    assert got.headers["Authorization"] == requests.Session.prepare_request(
        session, requests.Request("POST", ENDPOINT, data=b"two")).headers["Authorization"]
    session.cookies.clear()
    _same(fast(requests.Request("POST", ENDPOINT + "?x=1", data=b"three")),
          requests.Session.prepare_request(session, requests.Request("POST", ENDPOINT + "?x=1", data=b"three")))


def test_ntlm_requests_are_prepared_as_requests_prepares_them_hooks_included() -> None:
    session = _session("ntlm")
    fast = httpguard.prepare_once(session)
    for body in (b"--Encrypted Boundary\r\nfirst", b"second", b""):
        got = fast(requests.Request("POST", ENDPOINT, data=body))
        _same(got, requests.Session.prepare_request(session, requests.Request("POST", ENDPOINT, data=body)))
        assert got.hooks["response"] == [session.auth.response_hook]  # type: ignore[union-attr]  # the 401 handler
        assert got.headers["Connection"] == "Keep-Alive" and "Authorization" not in got.headers


class _CountingAuth(requests.auth.AuthBase):
    """An auth whose header changes with every request (as Kerberos's preemptive token may)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self.calls += 1
        request.headers["Authorization"] = f"Token {self.calls} {len(request.body or b'')}"
        return request


def test_the_auth_runs_for_each_request_and_sees_its_body() -> None:
    session = _session()
    session.auth = _CountingAuth()
    fast = httpguard.prepare_once(session)
    headers = [fast(requests.Request("POST", ENDPOINT, data=body)).headers["Authorization"]
               for body in (b"a", b"bb", b"ccc")]
    assert headers == ["Token 1 1", "Token 2 2", "Token 3 3"]


def test_requests_merges_the_session_once_per_session_whatever_the_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the fast path (bench/README.md, "CPU per server"): NTLM's encrypted
    messages, like Basic's, no longer go through requests' whole preparation each."""
    merged: list[str] = []
    prepare = requests.Session.prepare_request

    def counting(self: requests.Session, request: requests.Request) -> requests.PreparedRequest:
        merged.append(str(request.url))
        return prepare(self, request)

    monkeypatch.setattr(requests.Session, "prepare_request", counting)
    for transport in ("plaintext", "ntlm"):
        merged.clear()
        fast = httpguard.prepare_once(_session(transport))
        for body in (b"one", b"two", b"three", b"four"):
            fast(requests.Request("POST", ENDPOINT, data=body))
        assert merged == [ENDPOINT], transport

"""The prepared-request fast path (httpguard.prepare_once) sends what requests would."""

from __future__ import annotations

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


def test_ntlm_requests_are_prepared_by_requests_with_their_hooks() -> None:
    session = _session("ntlm")
    got = httpguard.prepare_once(session)(requests.Request("POST", ENDPOINT, data=b"body"))
    assert got.hooks["response"]  # the NTLM handshake's 401 handler, registered per request
    assert "Authorization" not in got.headers

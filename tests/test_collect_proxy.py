"""The environment's HTTP proxy (http_proxy / no_proxy) is honoured as pywinrm resolves it
when it builds a server's session; the scanner does not resolve it again on every request
(bench/README.md, "CPU per server"), so this checks the resolution still happens."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rawhttp import raw_peer

from scanner.collect.winrm_client import collect_host
from scanner.errors import CollectionError
from scanner.inventory import Target

UNRESOLVABLE = "cas99.invalid"  # RFC 6761: never resolves, so only a proxy can carry the request


def _target() -> Target:
    return Target(name="CAS99", address=UNRESOLVABLE, site=None, username="auditor", auth="basic",
                  scheme="http", port=5985, verify_tls=True, ca_bundle=None, allow_insecure=True,
                  cert_pem=None, cert_key_pem=None)


@pytest.mark.parametrize(("no_proxy", "through_proxy"), [("", True), (UNRESOLVABLE, False)])
def test_the_environment_proxy_carries_the_requests_unless_no_proxy_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, through_proxy: bool
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with raw_peer("not-xml") as proxy:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("no_proxy", no_proxy)
        with pytest.raises(CollectionError) as caught:
            collect_host(_target(), "pw", since=datetime.now(UTC), timeout_s=5)
    answered = proxy.sent  # read once the peer's threads are joined: it counts after sending
    if through_proxy:
        assert answered > 0  # the proxy answered (with something that is no WS-Management)
        assert caught.value.kind != "refused", caught.value
    else:
        assert answered == 0, caught.value

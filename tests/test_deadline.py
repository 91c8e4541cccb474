"""The per-server limit holds whatever the peer does below WinRM: a response trickling
one byte every half second, a body that stalls half-way, a body that never ends. Bodies
are capped while they stream, not after being buffered whole."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from labfleet import cas_audit_here
from rawhttp import raw_peer

from scanner.collect.preflight import check_server
from scanner.collect.winrm_client import collect_host
from scanner.errors import CollectionError
from scanner.inventory import Target

pytestmark = pytest.mark.slow  # waits out per-server deadlines against slow peers

TIMEOUT_S = 2.0
# generous: the machine is shared; without the guard these runs never end at all
BOUND_S = TIMEOUT_S + 10


def _target(port: int, scheme: str = "http") -> Target:
    return Target(name="RAW", address="127.0.0.1", site=None, username="auditor", auth="basic",
                  scheme=scheme, port=port, verify_tls=True, ca_bundle=None, allow_insecure=True,
                  cert_pem=None, cert_key_pem=None)


def _collect(port: int, scheme: str = "http") -> tuple[CollectionError, float]:
    started = time.monotonic()
    with pytest.raises(CollectionError) as caught:
        collect_host(_target(port, scheme), "pw", since=datetime.now(UTC), timeout_s=TIMEOUT_S)
    return caught.value, time.monotonic() - started


def _run_into(ended: list[subprocess.CompletedProcess[str] | BaseException], *args: str, db: str) -> None:
    try:
        ended.append(cas_audit_here(*args, db=db))
    except BaseException as exc:
        ended.append(exc)


@pytest.mark.parametrize("mode", ["trickle", "stall"])
def test_slow_peer_ends_at_the_deadline(mode: str) -> None:
    with raw_peer(mode) as peer:
        error, elapsed = _collect(peer.port)
    assert error.kind == "timeout", error
    assert elapsed < BOUND_S, elapsed


@pytest.mark.parametrize("mode", ["endless", "huge-length"])
def test_endless_body_is_refused_while_it_streams(mode: str) -> None:
    with raw_peer(mode) as peer:
        error, elapsed = _collect(peer.port)
        sent = peer.sent
    assert error.kind == "output", error
    assert "refused" in error.message
    # the scanner hung up after its cap (17 MiB), long before 2 GiB or the end of time
    assert sent < 256 * 1024 * 1024, sent
    assert elapsed < BOUND_S, elapsed


def test_scan_of_a_trickling_peer_ends_within_its_timeout(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.toml"
    with raw_peer("trickle") as peer:
        inventory.write_text(
            '[defaults]\nusername = "auditor"\nauth = "basic"\nscheme = "http"\nallow_insecure = true\n'
            f'[[server]]\nname = "RAW"\naddress = "127.0.0.1"\nport = {peer.port}\n', encoding="utf-8")
        # the command in this process, on a thread: without the limit it would never end
        ended: list[subprocess.CompletedProcess[str] | BaseException] = []
        started = time.monotonic()
        worker = threading.Thread(target=_run_into, args=(ended, "scan", "--inventory", str(inventory),
                                                          "--timeout", f"{TIMEOUT_S:g}"),
                                  kwargs={"db": f"sqlite:///{tmp_path / 'h.db'}"}, daemon=True)
        worker.start()
        worker.join(60)
        elapsed = time.monotonic() - started
    assert ended, "the scan did not end within 60 s"
    (scan,) = ended
    if isinstance(scan, BaseException):
        raise scan
    assert scan.returncode == 3, scan.stderr
    assert "RAW: failed (timeout)" in scan.stderr
    assert elapsed < BOUND_S, elapsed


def test_a_trickled_tls_handshake_ends_at_the_deadline() -> None:
    """A peer trickling its ServerHello is cut at the deadline, in the scan (urllib3's
    handshake: Python's ssl bounds the whole handshake by the socket timeout, which the
    guard keeps within the time left) and in preflight's own certificate check."""
    with raw_peer("tls-trickle") as peer:
        error, elapsed = _collect(peer.port, "https")
        started = time.monotonic()
        readiness = check_server(_target(peer.port, "https"), "pw", timeout_s=TIMEOUT_S)
        preflight_elapsed = time.monotonic() - started
    assert error.kind == "timeout", error
    assert elapsed < BOUND_S, elapsed
    assert [p.what for p in readiness.problems] == [f"no complete answer from 127.0.0.1 within {TIMEOUT_S:g} s"]
    assert preflight_elapsed < BOUND_S, preflight_elapsed

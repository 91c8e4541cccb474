"""A shell the collector opened is deleted however the collection ends, and a Delete that
fails is logged: on WinRM 1.1 a shell not deleted counts against MaxShellsPerUser (5)
until its idle timeout (docs/lab.md, [QUOTA-FAULT]), so timed-out collections must not
use up the quota of the next scan."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from replaylib import Exchange, Recording, load, parse, replaying, text_of

from scanner import collect
from scanner.collect import winrm_client
from scanner.errors import CollectionError
from scanner.inventory import Target
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import Fleet, relocate_fleet
from scanner.lab.serve import Lab

FLEET = Path(__file__).resolve().parent / "fleets" / "platforms.toml"
PASSWORD = "lab-password"
SINCE = datetime(2026, 11, 1, tzinfo=UTC)
NAME = "W8-PS1"   # Windows Server 2008: WinRM 1.1, MaxShellsPerUser 5, IdleTimeout 180 s


def _fleet(base: str, fault: str, auth: str = "basic") -> Fleet:
    """One WinRM 1.1 server of tests/fleets/platforms.toml; for Basic as Windows allows it."""
    fleet = relocate_fleet(load_fleet(FLEET), base, 0)
    if auth == "ntlm":   # the fleet's own: a domain account, every message encrypted
        return replace(fleet, servers=(replace(fleet.server(NAME), fault=fault),))
    server = replace(fleet.server(NAME), fault=fault, account="local", allow_unencrypted=True)
    return replace(fleet, lab=replace(fleet.lab, auth="basic", domain=""), servers=(server,))


def _target(address: str, port: int, name: str = NAME, auth: str = "basic") -> Target:
    return Target(name=name, address=address, site=None, username="CONTOSO\\auditor" if auth == "ntlm" else "auditor",
                  auth=auth, scheme="http", port=port, verify_tls=False, ca_bundle=None,
                  allow_insecure=auth == "basic", cert_pem=None, cert_key_pem=None)


def _timed_out(target: Target) -> CollectionError:
    with pytest.raises(CollectionError) as caught:
        winrm_client.collect_host(target, PASSWORD, since=SINCE, timeout_s=2.0)
    return caught.value


@pytest.mark.slow  # five collections wait out their two-second limit (at once)
@pytest.mark.parametrize(("auth", "base"), [("basic", "127.0.140.1"), ("ntlm", "127.0.140.11")])
def test_timed_out_collections_delete_their_shells_so_the_next_scan_gets_one(
        caplog: pytest.LogCaptureFixture, auth: str, base: str) -> None:
    """With NTLM the Delete after the deadline authenticates its own connection and
    encrypts like the collection did."""
    stuck = _fleet(base, "stuck", auth)    # the collector never finishes
    with Lab(stuck) as lab:
        server = stuck.server(NAME)
        target = _target(server.address, lab.port(NAME), auth=auth)
        quota = server.windows.max_shells_per_user
        with ThreadPoolExecutor(quota) as pool:
            errors = list(pool.map(lambda _: _timed_out(target), range(quota)))
        assert [e.kind for e in errors] == ["timeout"] * quota, errors
        stats = lab.stats(NAME)
        # every collection held a shell when its time ran out, and deleted it afterwards
        assert (stats.shells_created, stats.shells_deleted, stats.shells_open) == (quota, quota, 0)
        lab.replace_fleet(replace(stuck, servers=(replace(server, fault=""),)))
        out = winrm_client.collect_host(target, PASSWORD, since=SINCE, timeout_s=30)
    assert collect.END_MARKER.encode() in out
    assert "could not delete" not in caplog.text


def _delete_refused() -> Recording:
    """A real exchange (pypsrp's winrs_standard) whose Delete the server answers with a
    recorded WS-Management fault (InvalidSelectors, from winrs_bad_cmd_id)."""
    standard, bad = load("winrs_standard"), load("winrs_bad_cmd_id")
    delete = standard.first("Delete")
    fault = bad.first("Receive")
    exchanges = tuple(e for e in standard.exchanges if e.action != "Delete")
    return Recording("delete-refused", standard.source,
                     (*exchanges, Exchange("Delete", fault.status, delete.request, fault.response, delete.path)))


def test_a_delete_that_fails_is_logged_with_server_shell_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    recording = _delete_refused()
    shell_id = text_of(parse(recording.first("Create").response), ".//w:Selector")
    caplog.set_level(logging.WARNING, logger="scanner.collect.winrm_client")
    with replaying(recording) as replay:
        result = winrm_client.run_collector(_target("127.0.0.1", replay.port, "CAS01"), PASSWORD,
                                            script="Write-Output hi", env={}, timeout_s=30)
    assert result.stdout == b"hi\r\n"
    assert replay.served == ["Create", "Command", "Receive", "Delete"]   # one Delete: the server answered
    lines = [r.getMessage() for r in caplog.records if "delete" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert lines[0].startswith(f"could not delete shell {shell_id} on CAS01 (http://127.0.0.1:{replay.port}/wsman): ")
    assert "invalid selectors" in lines[0] or "command identifier" in lines[0], lines[0]
    assert PASSWORD not in caplog.text

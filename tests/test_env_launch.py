"""The script reaches PowerShell intact or through the other launch, never half of it
(docs/launch.md): a `%` in an environment value (WinRM refuses the Create with fault 87), a
value cut short on the way, stdin that PowerShell does not read, and a remembered launch
that stops working."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from winrm.exceptions import WSManFaultError
from winrm.protocol import Protocol

from scanner import collect
from scanner.collect import winrm_client
from scanner.collect.reader import read_collector_output
from scanner.inventory import Target, load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import Fleet, relocate_fleet
from scanner.lab.serve import Lab
from scanner.scan import run_scan
from scanner.store import open_store

FLEET = Path(__file__).resolve().parent / "fleets" / "platforms.toml"
PASSWORD = "lab-password"
SINCE = datetime(2026, 11, 1, tzinfo=UTC)
NAME = "W8-PS2"   # Windows Server 2008, WinRM 1.1, PowerShell 2.0


def _fleet(base: str, **switches: object) -> Fleet:
    """One server of tests/fleets/platforms.toml, Basic as Windows allows it, with `switches`."""
    fleet = relocate_fleet(load_fleet(FLEET), base, 0)
    server = replace(fleet.server(NAME), account="local", allow_unencrypted=True, **switches)  # type: ignore[arg-type]
    return replace(fleet, lab=replace(fleet.lab, auth="basic", domain=""), servers=(server,))


def _target(lab: Lab, fleet: Fleet) -> Target:
    return Target(name=NAME, address=fleet.server(NAME).address, site=None, username="auditor", auth="basic",
                  scheme="http", port=lab.port(NAME), verify_tls=False, ca_bundle=None, allow_insecure=True,
                  cert_pem=None, cert_key_pem=None)


def test_the_lab_refuses_a_percent_in_an_environment_value_as_winrm_does() -> None:
    """rundeck-plugins/py-winrm-plugin#74 (through pywinrm): s:Sender, w:InvalidParameter,
    code 87, "The parameter is incorrect.", HTTP 500; no shell is created."""
    fleet = _fleet("127.0.142.1")
    with Lab(fleet) as lab:
        p = Protocol(f"http://{fleet.server(NAME).address}:{lab.port(NAME)}/wsman", transport="plaintext",
                     username="auditor", password=PASSWORD, read_timeout_sec=30, operation_timeout_sec=20,
                     ca_trust_path=None)  # type: ignore[arg-type]
        with pytest.raises(WSManFaultError) as caught:
            p.open_shell(env_vars={"CASAUDIT_X": "100% sure"})
        fault = caught.value
        assert (fault.code, fault.wsman_fault_code, fault.fault_code, fault.fault_subcode) == \
            (500, 87, "s:Sender", "w:InvalidParameter")
        assert fault.reason.strip() == "The parameter is incorrect."
        assert lab.stats(NAME).shells_created == 0
        p.close_shell(p.open_shell(env_vars={"CASAUDIT_X": "100 per cent"}))


def test_a_percent_in_an_environment_value_never_stops_a_collection() -> None:
    """The Create with the script is refused (fault 87): the client creates a shell without
    the environment and sends the script on stdin, and says so (the scan remembers it)."""
    script = collect.collector_script() + "# 100% of the servers\n"   # PowerShell ignores the comment
    fleet = _fleet("127.0.143.1")
    with Lab(fleet) as lab:
        result = winrm_client.run_collector(_target(lab, fleet), PASSWORD, script=script,
                                            env=collect.shell_environment(script, SINCE), timeout_s=30)
        stats = lab.stats(NAME)
    assert (result.exit_code, result.method) == (0, "stdin"), result
    assert read_collector_output(result.stdout).computer   # the whole document
    assert stats.actions["Create"] == 2 and stats.shells_created == 1 and stats.shells_open == 0
    assert (stats.commands, stats.sends, stats.requests) == (1, 1, 6)   # one Create more than stdin alone


def test_an_environment_value_cut_short_takes_the_stdin_path_instead_of_running_half_a_script() -> None:
    fleet = _fleet("127.0.144.1", env_value_limit=2048)   # the script is about 5,800 characters
    methods: list[str] = []
    with Lab(fleet) as lab:
        out = winrm_client.collect_host(_target(lab, fleet), PASSWORD, since=SINCE, timeout_s=30,
                                        on_method=methods.append)
        stats = lab.stats(NAME)
    assert methods == ["stdin"]
    assert read_collector_output(out).computer
    # the env bootstrap refused the cut script (nothing of it ran), then stdin in the same shell
    assert (stats.shells_created, stats.commands, stats.sends, stats.shells_open) == (1, 2, 1, 0)
    assert stats.requests == 7


def test_a_remembered_stdin_launch_that_fails_is_retried_through_the_environment_and_forgotten(
        tmp_path: Path) -> None:
    """PowerShell that does not read stdin (an unconfirmed switch): the remembered "stdin"
    launch reports an empty script, the env launch runs, and the history remembers "env"."""
    fleet = _fleet("127.0.145.1", stdin_ignored=True)
    db = f"sqlite:///{tmp_path / 'history.db'}"
    with Lab(fleet) as lab, open_store(db) as store:
        inventory_path = tmp_path / "inventory.toml"
        lab.write_inventory(inventory_path)
        inventory = load_inventory(inventory_path)
        store.remember_launch(NAME, "stdin")
        outcome = run_scan(inventory, store=store, password=PASSWORD, policy=Policy.default(),
                           catalog=load_catalog(), timeout_s=30)
        remembered = store.launch_methods()
        stats = lab.stats(NAME)
    assert (outcome.scanned, outcome.failed) == (1, 0), outcome
    assert remembered == {NAME.casefold(): "env"}
    # stdin in a first shell (refused by the bootstrap), deleted; env in a second one
    assert (stats.shells_created, stats.shells_deleted, stats.commands, stats.sends) == (2, 2, 2, 1)
    assert stats.requests == 9   # the stdin launch (5) and the env launch in a new shell (4)

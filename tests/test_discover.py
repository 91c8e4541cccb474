"""`inventory discover`: Get-ExchangeServer on one management host of the lab, over NTLM,
becomes an inventory that lists every CAS with its site and no password."""

from __future__ import annotations

from pathlib import Path

import pytest
from labfleet import cas_audit, demo_fleet, running

from scanner.collect.discovery import discover_inventory
from scanner.errors import ConfigError
from scanner.inventory import load_inventory

pytestmark = pytest.mark.slow  # a running lab and the cas-audit subprocess


def test_discover_writes_an_inventory_of_every_cas(tmp_path: Path) -> None:
    with running(demo_fleet("127.0.17.1", "ntlm"), tmp_path) as (lab, _inventory):
        port = lab.port("CAS01")
        out = tmp_path / "discovered.toml"
        result = cas_audit("inventory", "discover", "--from", "127.0.17.1", "--username", "CONTOSO\\auditor",
                           "--scheme", "http", "--port", str(port), "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert "9 Client Access Server(s)" in result.stderr
        refused = cas_audit("inventory", "discover", "--from", "127.0.17.1", "--username", "CONTOSO\\auditor",
                            "--scheme", "http", "--port", str(port), "--out", str(tmp_path / "x.toml"),
                            password="wrong")
    inventory = load_inventory(out)
    assert [(t.name, t.site) for t in inventory.targets] == [
        ("CAS01", "Berlin"), ("CAS02", "Berlin"), ("CAS03", "Berlin"), ("CAS04", "Berlin"),
        ("CAS05", "Hamburg"), ("CAS06", "Hamburg"), ("CAS07", "Hamburg"), ("CAS08", "Hamburg"),
        ("CAS09", "Berlin")]
    assert inventory.targets[0].address == "cas01.contoso.lab"  # the Fqdn Exchange reports
    assert {(t.auth, t.scheme, t.username) for t in inventory.targets} == {("ntlm", "http", "CONTOSO\\auditor")}
    assert "lab-password" not in out.read_text(encoding="utf-8")
    assert refused.returncode == 3  # the host could not be reached as asked
    assert "rejected the credentials" in refused.stderr
    assert not (tmp_path / "x.toml").exists()


def test_discover_refuses_basic_over_plain_http_before_connecting(tmp_path: Path) -> None:
    out = tmp_path / "discovered.toml"
    with pytest.raises(ConfigError, match="plain http") as caught:
        discover_inventory("127.0.17.9", out, username="CONTOSO\\auditor", auth="basic", scheme="http", port=1,
                           allow_insecure=False, verify_tls=True, password="secret", timeout_s=5)
    assert caught.value.hint is not None and "--allow-insecure" in caught.value.hint
    assert not out.exists()

"""Inputs are bounded before they are read and validated at load: a wrong inventory is
exit 2 naming file and line, never a failed scan later; a UTF-8 byte order mark (as
Windows editors write) is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from labfleet import cas_audit_here

from scanner.errors import ConfigError
from scanner.inventory import load_inventory
from scanner.judge.policy import load_policy

HEAD = '[defaults]\nusername = "auditor"\n\n'


def _inventory(tmp_path: Path, servers: str, prefix: bytes = b"") -> Path:
    path = tmp_path / "cas.toml"
    path.write_bytes(prefix + (HEAD + servers).encode("utf-8"))
    return path


@pytest.mark.parametrize("option", ["--inventory", "--policy"])
def test_an_endless_input_fails_fast_with_exit_2(tmp_path: Path, option: str, monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = _inventory(tmp_path, '[[server]]\nname = "CAS01"\n')
    args = ["--inventory", "/dev/zero"] if option == "--inventory" else ["--inventory", str(inventory),
                                                                          "--policy", "/dev/zero"]
    monkeypatch.chdir(tmp_path)
    result = cas_audit_here("scan", *args, password=None, db=f"sqlite:///{tmp_path / 'h.db'}")
    assert result.returncode == 2, result.stderr
    assert "/dev/zero is larger than" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("address", ["h:5985", "https://cas01/wsman", "cas 01", "cas01/x", "-cas01", "a" * 300])
def test_an_address_with_a_port_or_scheme_is_refused_at_load(tmp_path: Path, address: str) -> None:
    path = _inventory(tmp_path, f'[[server]]\nname = "CAS00"\n\n[[server]]\nname = "CAS01"\naddress = "{address}"\n')
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert f"{path}:8: server 'CAS01'" in caught.value.message
    assert "is not a host name or an IP address" in caught.value.message
    assert len(caught.value.message) < 300


def test_good_addresses_pass(tmp_path: Path) -> None:
    servers = "".join(f'[[server]]\nname = "S{i}"\naddress = "{a}"\n'
                      for i, a in enumerate(["cas01", "cas01.contoso.local", "10.0.0.7", "fe80::1", "CAS_02."]))
    assert [t.address for t in load_inventory(_inventory(tmp_path, servers)).targets][3] == "fe80::1"


def test_a_10000_character_name_is_refused_at_load(tmp_path: Path) -> None:
    path = _inventory(tmp_path, f'[[server]]\nname = "{"N" * 10_000}"\n')
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert f"{path}:5: server 'NNNN" in caught.value.message
    assert "10000 characters" in caught.value.message
    assert len(caught.value.message) < 300


def test_a_name_with_a_slash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="contains a space or one of"):
        load_inventory(_inventory(tmp_path, '[[server]]\nname = "CAS/01"\n'))


def test_a_port_out_of_range_names_the_line(tmp_path: Path) -> None:
    path = _inventory(tmp_path, '[[server]]\nname = "CAS01"\nport = 70000\n')
    with pytest.raises(ConfigError, match=rf"{path}:5: server 'CAS01': port must be"):
        load_inventory(path)


def test_a_byte_order_mark_is_accepted_in_inventory_and_policy(tmp_path: Path) -> None:
    inventory = load_inventory(_inventory(tmp_path, '[[server]]\nname = "CAS01"\n', prefix=b"\xef\xbb\xbf"))
    assert [t.name for t in inventory.targets] == ["CAS01"]
    policy = tmp_path / "policy.toml"
    policy.write_bytes(b"\xef\xbb\xbf[baseline]\nallow_cross_site = true\n")
    load_policy(policy)  # no "Invalid statement (at line 1, column 1)"

"""Lab platforms: the fleet's platform/powershell fields and the per-platform description."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_lab_fleet import LAB, one, write

from scanner.errors import ConfigError
from scanner.lab.fleet import load_fleet
from scanner.lab.fleet_model import listen_port, relocate_fleet


def test_a_bare_server_is_2008r2_with_powershell_2(tmp_path: Path) -> None:
    server = one(tmp_path, "")
    assert (server.platform, server.powershell, server.account, server.allow_unencrypted) == \
        ("2008r2", "2.0", "local", False)
    assert server.sysroot == "C:\\Windows" and server.windows.winrm == "2.0" and not server.env_ignored


def test_older_platforms_default_to_powershell_1(tmp_path: Path) -> None:
    server = one(tmp_path, 'platform = "2003r2"\nsystem_root = \'D:\\WINNT\'\n')
    assert (server.platform, server.powershell, server.sysroot) == ("2003r2", "1.0", "D:\\WINNT")
    assert one(tmp_path, 'platform = "2008"\npowershell = "2.0"\n').powershell == "2.0"


def test_lab_table_gives_defaults_a_server_overrides(tmp_path: Path) -> None:
    lab = LAB + 'domain = "CONTOSO"\nplatform = "2008"\npowershell = "2.0"\nallow_unencrypted = true\n'
    body = '[[server]]\nname = "CAS01"\n[[server]]\nname = "CAS02"\nplatform = "2003r2"\npowershell = "1.0"\n' \
           'account = "local"\nallow_unencrypted = false\n[[server]]\nname = "CAS03"\nplatform = "2008r2"\n'
    a, b, c = load_fleet(write(tmp_path, body, lab)).servers
    assert (a.platform, a.powershell, a.account, a.allow_unencrypted) == ("2008", "2.0", "domain", True)
    assert (b.platform, b.powershell, b.account, b.allow_unencrypted) == ("2003r2", "1.0", "local", False)
    assert (c.platform, c.powershell) == ("2008r2", "2.0")


def test_listening_port_follows_server_then_lab_then_platform(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, '[[server]]\nname = "A"\nplatform = "2003r2"\n'
                                       '[[server]]\nname = "B"\n[[server]]\nname = "C"\nport = 8080\n'))
    assert [listen_port(fleet.lab, s) for s in fleet.servers] == [80, 5985, 8080]
    moved = relocate_fleet(fleet, "127.0.9.1", 0)
    assert [listen_port(moved.lab, s) for s in moved.servers] == [0, 0, 0]


@pytest.mark.parametrize(("server", "field"), [
    ('platform = "2012"\n', "platform"),
    ('powershell = "3.0"\n', "powershell"),
    ('platform = "2008r2"\npowershell = "1.0"\n', "powershell"),
    ('account = "guest"\n', "account"),
    ('allow_unencrypted = "yes"\n', "allow_unencrypted"),
    ('env_ignored = 1\n', "env_ignored"),
    ('system_root = "Windows"\n', "system_root"),
    ('port = 70000\n', "port"),
])
def test_platform_errors_name_file_line_server_and_field(tmp_path: Path, server: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        one(tmp_path, server)
    text = str(caught.value)
    assert "fleet.toml:5:" in text and "CAS01" in text and field in text


@pytest.mark.parametrize(("lab", "field"), [
    ('platform = "nt4"\n', "platform"),
    ('powershell = "5.1"\n', "powershell"),
    ('account = "machine"\n', "account"),
    ('allow_unencrypted = "no"\n', "allow_unencrypted"),
])
def test_lab_platform_defaults_are_validated(tmp_path: Path, lab: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_fleet(write(tmp_path, '[[server]]\nname = "CAS01"\n', LAB + lab))
    assert "fleet.toml:1: [lab]" in str(caught.value) and field in str(caught.value)

"""The inventory contract of docs/contracts.md: what a user writes and the errors they get."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.inventory import load_inventory

GOOD = """
[defaults]
username = 'CONTOSO\\auditor'
auth = "ntlm"
scheme = "https"
port = 5986
verify_tls = true

[[server]]
name = "CAS01"
address = "cas01.contoso.local"
site = "Berlin"

[[server]]
name = "CAS02"
auth = "basic"
scheme = "http"
port = 5985
allow_insecure = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_apply_and_servers_override(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, GOOD))
    first, second = inventory.targets
    assert (first.name, first.address, first.site, first.username) == (
        "CAS01", "cas01.contoso.local", "Berlin", "CONTOSO\\auditor")
    assert first.endpoint == "https://cas01.contoso.local:5986/wsman"
    assert first.verify_tls is True
    assert (second.address, second.auth, second.endpoint) == ("CAS02", "basic", "http://CAS02:5985/wsman")
    assert second.site is None
    assert len(inventory.sha256) == 64


def test_only_site_is_case_insensitive(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, GOOD))
    assert [t.name for t in inventory.only_site("berlin").targets] == ["CAS01"]
    with pytest.raises(ConfigError, match="no server of site 'Hamburg'"):
        inventory.only_site("Hamburg")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[server]]\nname = "A"\nusername = "u"\nauth = "basic"\nscheme = "http"\n', "plain http"),
        ('[[server]]\nname = "A"\nusername = "u"\nauth = "digest"\n', "auth must be one of"),
        ('[[server]]\nname = "A"\nusername = "u"\nport = 70000\n', "port must be"),
        ('[[server]]\nname = "A"\nusername = "u"\nadress = "x"\n', "unknown key 'adress'"),
        ('[[server]]\nname = "A"\nusername = "u"\n[[server]]\nname = "a"\nusername = "u"\n', "appears twice"),
        ('[[server]]\naddress = "x"\nusername = "u"\n', "'name' is required"),
        ('[[server]]\nname = "A"\n', "'username' is required"),
        ('[defaults]\nusername = "u"\n', "no \\[\\[server\\]\\]"),
        ('[[server]\nname = "A"\n', "inventory.toml"),
        ('[[server]]\nname = "A"\nusername = "u"\nauth = "certificate"\n', "certificate auth needs"),
        ('[[server]]\nname = "CAS01"\nusername = "u@C.COM"\nauth = "kerberos"\n', "Kerberos needs the server's FQDN"),
        ('[[server]]\nname = "A"\naddress = "10.0.0.5"\nusername = "u@C.COM"\nauth = "kerberos"\n',
         "Kerberos needs the server's FQDN"),
        ('[[server]]\nname = "A"\naddress = "a.c.com"\nusername = \'C\\u\'\nauth = "kerberos"\n',
         "Kerberos names the user as user@REALM"),
    ],
)
def test_bad_inventories_are_refused_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_inventory(write(tmp_path, text))


def test_kerberos_takes_an_fqdn_and_user_at_realm(tmp_path: Path) -> None:
    text = '[[server]]\nname = "CAS01"\naddress = "cas01.contoso.com"\nusername = "auditor@CONTOSO.COM"\n' \
           'auth = "kerberos"\nscheme = "http"\n'
    target = load_inventory(write(tmp_path, text)).targets[0]
    assert (target.auth, target.endpoint) == ("kerberos", "http://cas01.contoso.com:5985/wsman")


def test_error_names_file_and_line_of_the_server(tmp_path: Path) -> None:
    text = '[defaults]\nusername = "u"\n\n[[server]]\nname = "CAS09"\nport = 0\n'
    with pytest.raises(ConfigError) as info:
        load_inventory(write(tmp_path, text))
    assert "inventory.toml:5: server 'CAS09'" in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_inventory(tmp_path / "nope.toml")

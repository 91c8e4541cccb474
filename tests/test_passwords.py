"""Where the password comes from, and why there is none: a keyring that fails is reported
with its error, never taken for an empty keyring (scanner/cli/app.py, `_password`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from click.testing import CliRunner
from keyring.backends import fail

from scanner.cli import cli

INVENTORY = '''
[defaults]
username = "{user}"
auth = "{auth}"

[[server]]
name = "CAS01"
address = "{address}"
'''


@pytest.fixture
def failing_keyring(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """keyring's own backend for "no usable keyring on this machine" (e.g. no D-Bus
    session): every read raises NoKeyringError. No password anywhere else."""
    monkeypatch.delenv("CAS_AUDIT_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(before)


def _scan(tmp_path: Path, user: str, auth: str, address: str) -> tuple[int, str]:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY.format(user=user.replace("\\", "\\\\"), auth=auth, address=address),
                         encoding="utf-8")
    result = CliRunner().invoke(cli, ["scan", "--inventory", str(inventory), "--db",
                                      f"sqlite:///{tmp_path / 'history.db'}"], prog_name="cas-audit")
    return result.exit_code, result.stderr


def test_a_failing_keyring_is_named_in_the_no_password_error(failing_keyring: None, tmp_path: Path) -> None:
    code, stderr = _scan(tmp_path, "CONTOSO\\auditor", "ntlm", "127.0.141.1")
    assert code == 2, stderr
    text = " ".join(stderr.split())
    assert "no password for CONTOSO\\auditor: the keyring failed (NoKeyringError: No recommended backend" in text


def test_a_failing_keyring_is_a_warning_where_kinit_takes_over(failing_keyring: None, tmp_path: Path) -> None:
    """A Kerberos account goes on with kinit's cache (here: none, so the scan records an
    auth failure for the server), and the keyring's error is not swallowed."""
    code, stderr = _scan(tmp_path, "auditor@CONTOSO.COM", "kerberos", "cas01.contoso.invalid")
    text = " ".join(stderr.split())
    assert "no password for auditor@CONTOSO.COM from the keyring: the keyring failed (NoKeyringError" in text
    assert "using kinit's ticket cache" in text
    assert code == 3, stderr   # the server was not scanned (no ticket)

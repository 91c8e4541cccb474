"""`inventory discover`: the command line's choice of source, and `--from` only where it can
work. Get-ExchangeServer on a management host reads Active Directory with the WinRM logon's
credentials, which only a delegated Kerberos ticket carries on (the second hop): every other
`--from` logon is refused before connecting, and a failure on the host names the second hop.
The directory itself (`--ldap`) is tested against a real DC in tests/test_discover_ldap.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from scanner.cli import cli
from scanner.collect import END_MARKER
from scanner.collect.discovery import discover_inventory
from scanner.collect.reader import read_discovery_output
from scanner.errors import CollectionError, ConfigError


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["inventory", "discover", *args], env={"CAS_AUDIT_PASSWORD": "secret"},
                              prog_name="cas-audit")


@pytest.mark.parametrize("auth", ["ntlm", "basic"])
def test_from_without_a_delegated_ticket_is_refused_naming_the_second_hop(tmp_path: Path, auth: str) -> None:
    out = tmp_path / "cas.toml"
    result = run("--from", "127.0.17.9", "--port", "1", "--username", "CONTOSO\\auditor", "--auth", auth,
                 "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "second hop" in result.output
    assert "inventory discover --ldap DC" in result.output
    assert not out.exists()


def test_from_with_kerberos_needs_delegate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Kerberos without delegation") as caught:
        discover_inventory("exmgmt01.contoso.local", tmp_path / "cas.toml", username="auditor@CONTOSO.LOCAL",
                           auth="kerberos", scheme="https", port=1, allow_insecure=False, verify_tls=True,
                           password="secret", timeout_s=5)
    assert "second hop" in caught.value.message
    assert caught.value.hint is not None and "--delegate" in caught.value.hint


def test_discover_refuses_basic_over_plain_http_before_connecting(tmp_path: Path) -> None:
    out = tmp_path / "discovered.toml"
    with pytest.raises(ConfigError, match="plain http") as caught:
        discover_inventory("127.0.17.9", out, username="CONTOSO\\auditor", auth="basic", scheme="http", port=1,
                           allow_insecure=False, verify_tls=True, password="secret", timeout_s=5)
    assert caught.value.hint is not None and "--allow-insecure" in caught.value.hint
    assert not out.exists()


def _discovery_output(stage: str, message: str) -> bytes:
    document = f'<casdiscovery><error stage="{stage}" message="{message}"/><end/></casdiscovery>'
    return f"{document}\n{END_MARKER}\n".encode()


def test_get_exchangeserver_failing_on_the_host_names_the_second_hop() -> None:
    output = _discovery_output("servers", "Active Directory server is not available")
    with pytest.raises(CollectionError, match="stage 'servers'") as caught:
        read_discovery_output(output)
    assert caught.value.hint is not None
    assert "second hop" in caught.value.hint and "inventory discover --ldap DC" in caught.value.hint


def test_missing_management_tools_are_not_blamed_on_the_second_hop() -> None:
    with pytest.raises(CollectionError) as caught:
        read_discovery_output(_discovery_output("snapin", "No snap-ins have been registered"))
    assert caught.value.hint is not None and "management tools" in caught.value.hint
    assert "second hop" not in caught.value.hint


@pytest.mark.parametrize(("args", "words"), [
    ((), "either --ldap DC"),
    (("--ldap", "dc01.contoso.local", "--from", "exmgmt01.contoso.local"), "either --ldap DC"),
    (("--from", "exmgmt01.contoso.local", "--base", "CN=Services,CN=Configuration,DC=contoso,DC=local"),
     "go with --ldap"),
    (("--ldap", "dc01.contoso.local", "--delegate"), "--delegate goes with --from"),
    (("--ldap", "dc01.contoso.local", "--ldap-auth", "ntlm", "--username", "auditor@CONTOSO.LOCAL"),
     "DOMAIN\\user"),
    (("--ldap", "dc01.contoso.local", "--ldap-auth", "kerberos"), "user@REALM"),
    (("--ldap", "dc01.contoso.local", "--base", "not a dn"), "is not a distinguished name"),
    (("--ldap", "dc01.contoso.local", "--base", "CN=" + "x" * 3000), "is longer than 2048"),
    (("--ldap", "dc01.contoso.local", "--ldap-ca-bundle", "/nonexistent/ca.pem"), "no such file"),
])
def test_usage_errors_exit_2_before_any_connection(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    out = tmp_path / "cas.toml"
    user = () if "--username" in args else ("--username", "CONTOSO\\auditor")
    result = run(*args, *user, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not out.exists()


def test_ldap_transport_has_no_plaintext_choice(tmp_path: Path) -> None:
    result = run("--ldap", "dc01.contoso.local", "--ldap-transport", "none", "--username", "CONTOSO\\auditor",
                 "--out", str(tmp_path / "cas.toml"))
    assert result.exit_code == 2
    assert "'ldaps'" in result.output and "'starttls'" in result.output


def test_a_domain_controller_that_refuses_is_named(tmp_path: Path) -> None:
    result = run("--ldap", "127.0.0.1", "--ldap-port", "1", "--username", "CONTOSO\\auditor",
                 "--out", str(tmp_path / "cas.toml"))
    assert result.exit_code == 3, result.output
    assert "the domain controller 127.0.0.1:1 refused the connection" in result.output


@pytest.mark.slow   # waits for the timeout, twice
@pytest.mark.parametrize("transport", ["ldaps", "starttls"])
def test_a_domain_controller_that_never_answers_times_out(tmp_path: Path, transport: str) -> None:
    """A listener that accepts and stays silent: the TLS handshake (LDAPS) or the StartTLS
    request never gets an answer; the command ends after --timeout with a timeout, never a
    certificate complaint."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        result = run("--ldap", "127.0.0.1", "--ldap-port", str(port), "--ldap-transport", transport,
                     "--username", "CONTOSO\\auditor", "--timeout", "1", "--out", str(tmp_path / "cas.toml"))
    assert result.exit_code == 3, result.output
    assert "did not answer in time" in result.output
    assert "certificate" not in result.output

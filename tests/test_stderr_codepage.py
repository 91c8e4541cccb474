"""stderr reaches the client as the server's console wrote it: in the shell's code page
(WINRS_CODEPAGE, 437 as the client asks), not UTF-8."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from replaylib import Exchange, Recording, load, replaying

from scanner import collect
from scanner.collect import winrm_client
from scanner.errors import CollectionError
from scanner.inventory import Target

#: PowerShell's error for an unknown command on a German Windows (the seed server's language).
GERMAN_ERROR = ('Die Benennung "Get-ExchangeServer" wurde nicht als Name eines Cmdlet, einer Funktion, einer '
                'Skriptdatei oder eines ausführbaren Programms erkannt.\r\n')


def _with_stderr(data: bytes) -> Recording:
    """pypsrp's recorded winrs_stderr_rc (stdout, stderr, exit code 1) with the stderr
    stream's bytes replaced by `data`, as an OEM-code-page console writes them."""
    recording = load("winrs_stderr_rc")
    encoded = base64.b64encode(data).decode("ascii")
    exchanges = []
    for e in recording.exchanges:
        response = e.response
        if e.action == "Receive":
            response = re.sub(r'(<rsp:Stream Name="stderr" CommandId="[^"]+">)[^<]+(</rsp:Stream>)',
                              rf"\g<1>{encoded}\g<2>", response)
            assert encoded in response
        exchanges.append(Exchange(e.action, e.status, e.request, response, e.path))
    return Recording("stderr-cp437", recording.source, tuple(exchanges))


def test_collector_error_text_is_decoded_with_the_shells_code_page() -> None:
    target = Target(name="CAS01", address="127.0.0.1", site=None, username="auditor", auth="basic",
                    scheme="http", port=0, verify_tls=False, ca_bundle=None, allow_insecure=True,
                    cert_pem=None, cert_key_pem=None)
    assert collect.SHELL_CODEPAGE == 437
    with replaying(_with_stderr(GERMAN_ERROR.encode("cp437"))) as replay:
        with pytest.raises(CollectionError) as caught:
            winrm_client.collect_host(replace(target, port=replay.port), "pw",
                                      since=datetime(2026, 1, 1, tzinfo=UTC), timeout_s=30)
    assert replay.problems == []
    assert caught.value.kind == "script-error"
    assert str(caught.value) == ("the collector failed on CAS01 (exit code 1): "
                                 + GERMAN_ERROR.strip())
    assert "ausführbaren" in str(caught.value)


@pytest.mark.parametrize("codepage", [437, 850])
def test_stderr_summary_decodes_each_oem_code_page(codepage: int) -> None:
    text = "Zugriff verweigert: Ø ü é"   # Ø is 0x9D in 850, not in 437
    data = text.encode(f"cp{codepage}", errors="replace")
    assert winrm_client.stderr_summary(data, codepage=codepage) == text.encode(
        f"cp{codepage}", errors="replace").decode(f"cp{codepage}")
    assert "ü é" in winrm_client.stderr_summary(data, codepage=codepage)

"""The per-server fix scripts (scanner/collect/fix.ps1 filled in by fixscript.render_script):
PowerShell 1.0 only, no '%', hostile names kept inert, the data block read back exactly as
written, the result document checked against fixresult.xsd."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pslint
import pytest
from lxml import etree

from scanner.collect import script_length, stdin_bootstrap, strip_script
from scanner.collect.fixscript import (
    APPLY_ENV_VAR,
    RESULT_END_MARKER,
    TICKET_ENV_VAR,
    ScriptChange,
    ScriptData,
    read_result,
    read_script_data,
    render_script,
    safe_file_stem,
    script_environment,
    sendable_script,
    valid_ticket,
)
from scanner.util.xmlsafe import UntrustedXMLError

FOLDER = Path(__file__).resolve().parents[1] / "scanner" / "collect"
HOSTILE_PATH = "C:\\Program Files\\Microsoft\\Exchange Server\\ClientAccess\\PopImap\\x'@\n$(evil) 100%<&>\".config"


def _data(kind: str = "apply", server: str = "CAS01", path: str = HOSTILE_PATH) -> ScriptData:
    old, new = b"<configuration/>", b"<configuration><appSettings/></configuration>"
    return ScriptData(
        kind=kind, server=server, run_id=7, created_at="2026-12-06T02:00:00Z",  # type: ignore[arg-type]
        changes=(
            ScriptChange("pop3", path, hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest(), new),
            ScriptChange("imap4", "C:\\x\\Microsoft.Exchange.Imap4.exe.config", "", "", None),
        ),
    )


@pytest.mark.parametrize("kind", ["apply", "rollback"])
@pytest.mark.parametrize("server", ["CAS01", "CAS'@\r\n%PATH%$(x)`\x1b[31m"])
def test_generated_script_passes_the_powershell_1_lint(kind: str, server: str) -> None:
    text = render_script(_data(kind, server))
    assert pslint.syntax_errors(text) == []
    assert pslint.lint(text) == []
    sent = sendable_script(text)
    assert pslint.syntax_errors(sent) == [] and pslint.lint(sent) == []
    assert "\x1b" not in text and "%" not in text


def test_template_passes_the_lint() -> None:
    text = (FOLDER / "fix.ps1").read_text(encoding="utf-8")
    assert pslint.syntax_errors(text) == [] and pslint.lint(text) == []


@pytest.mark.parametrize("kind", ["apply", "rollback"])
def test_data_block_reads_back_exactly(kind: str) -> None:
    data = _data(kind, "CAS'@\n%x%\x1b")
    text = render_script(data)
    for form in (text, sendable_script(text), strip_script(text)):
        back = read_script_data(form)
        assert back.server == data.server.replace("\x1b", "?") and back.kind == kind and back.run_id == 7
        assert [c.path for c in back.changes] == [c.path for c in data.changes]
        assert [c.before_sha256 for c in back.changes] == [c.before_sha256 for c in data.changes]
        expected = [c.content for c in data.changes] if kind == "apply" else [None, None]
        assert [c.content for c in back.changes] == expected


def test_the_data_block_is_one_here_string_the_parser_sees_as_a_string() -> None:
    """tree-sitter sees the data as one string literal: nothing in it becomes code."""
    text = render_script(_data())
    tree = pslint.parse(text)
    strings = [pslint.node_text(n) for n in pslint.walk(tree.root_node) if n.type == "string_literal"]
    here = [s for s in strings if s.startswith("@'")]
    assert len(here) == 1 and "$(evil)" in here[0]
    code = [pslint.node_text(n) for n in pslint.walk(tree.root_node) if n.type == "sub_expression"]
    assert not any("evil" in c for c in code)


def test_control_characters_in_a_path_are_refused() -> None:
    with pytest.raises(ValueError, match="control character"):
        render_script(_data(path="C:\\a\x01b.config"))


@pytest.mark.parametrize(
    ("server", "stem"),
    [("CAS01", "CAS01"), ("..\\..\\evil", "_.._evil"), ("a/b", "a_b"), ("CON", "_CON"), ("com1.lab", "_com1.lab"),
     ("", "server"), ("...", "server"), ("x" * 100, "x" * 64), ("nul", "_nul"), ("CAS\x1b[31m", "CAS__31m")],
)
def test_file_stems_from_hostile_server_names(server: str, stem: str) -> None:
    assert safe_file_stem(server) == stem


def test_tickets() -> None:
    assert valid_ticket("CHG-1234") and valid_ticket("a.b_c")
    for bad in ("", "-x", "a b", "a/b", "a%b", "x" * 65, "CHG'1"):
        assert not valid_ticket(bad)
    with pytest.raises(ValueError):
        script_environment("x", apply=True, restart=False, ticket="a b")


def test_script_environment_and_stdin_bootstrap_carry_the_switches() -> None:
    script = sendable_script(render_script(_data()))
    env = script_environment(script, apply=True, restart=False, ticket="CHG-1")
    assert env[APPLY_ENV_VAR] == "1" and env[TICKET_ENV_VAR] == "CHG-1"
    assert script_length(script) < 32_767
    boot = stdin_bootstrap(env, script)
    assert "$env:CASAUDIT_FIX_APPLY = '1'" in boot and "$env:CASAUDIT_FIX_TICKET = 'CHG-1'" in boot


def _result(changes: str, **attrs: str) -> bytes:
    head = {"kind": "apply", "mode": "check", "server": "CAS01", "computer": "CAS01", "ticket": "", "time": "20261206T020000Z"}
    head.update(attrs)
    text = "".join(f' {k}="{v}"' for k, v in head.items())
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<fixResult xmlns="urn:cas-audit:fix-result:1"{text}>\n'
            f"{changes}</fixResult>\n{RESULT_END_MARKER}\n").encode()


_H = "a" * 64
_CHANGE = (f'<change protocol="pop3" path="C:\\x" status="ready" expected="{_H}" planned="{_H}" found="{_H}" '
           f'now="{_H}" backup="" restart="none" service="Running" message=""/>\n')


def test_result_document_is_read_and_checked() -> None:
    result = read_result(_result(_CHANGE))
    assert result.ok and result.changes[0].status == "ready" and result.changes[0].service == "Running"
    failed = read_result(_result(_CHANGE.replace('status="ready"', 'status="changed"'), mode="apply"))
    assert not failed.ok
    with pytest.raises(UntrustedXMLError, match="end marker"):
        read_result(_result(_CHANGE).replace(RESULT_END_MARKER.encode(), b""))
    with pytest.raises(UntrustedXMLError, match="fixresult.xsd"):
        read_result(_result(_CHANGE.replace('status="ready"', 'status="fine"')))
    with pytest.raises(UntrustedXMLError, match="fixresult.xsd"):
        read_result(_result(_CHANGE.replace(f'found="{_H}"', 'found="zz"')))


def test_script_writes_exactly_the_schema_attributes() -> None:
    """Every attribute the script writes (`T 'name' ...`) is in fixresult.xsd, and the reverse."""
    text = (FOLDER / "fix.ps1").read_text(encoding="utf-8")
    written = set(re.findall(r"\(T '([A-Za-z]+)'", text))
    xsd = etree.parse(str(FOLDER / "fixresult.xsd"))
    declared = {a.get("name") for a in xsd.iter("{http://www.w3.org/2001/XMLSchema}attribute")}
    assert written == declared


def test_the_script_checks_the_ticket_with_the_same_pattern() -> None:
    """The script's -match pattern is TICKET_PATTERN anchored with \\z ($ would let a
    ticket ending in a line feed through, and the ticket names files)."""
    from scanner.collect.fixscript import TICKET_PATTERN

    text = (FOLDER / "fix.ps1").read_text(encoding="utf-8")
    found = re.search(r"\$Ticket -match '([^']*)'", text)
    assert found is not None and found.group(1) == "^" + TICKET_PATTERN.pattern + "\\z"

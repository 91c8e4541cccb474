"""The PowerShell collector and discovery scripts: they parse, use only PowerShell 1.0,
write exactly the elements and attributes of their schemas, and fit the limits of the
way they are sent (bootstrap command line, shell environment variable, WS-Man envelope)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pslint
import pytest
from lxml import etree

import scanner.collect as collector

HERE = Path(collector.__file__).parent
SCRIPTS = {
    "collect.ps1": ("schema.xsd", "casaudit"),
    "discover.ps1": ("discover.xsd", "casdiscovery"),
}
XS = "{http://www.w3.org/2001/XMLSchema}"
ATTRIBUTE_HELPER = "T"


def source(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_parses_without_errors(name: str) -> None:
    text = source(name)
    assert text.isascii(), "keep the script ASCII: it travels in an environment variable"
    assert pslint.syntax_errors(text) == []


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_stripped_script_has_the_same_tokens(name: str) -> None:
    original = source(name)
    stripped = collector.collector_script() if name == "collect.ps1" else collector.discover_script()
    assert "#" not in "".join(line[:1] for line in stripped.splitlines())
    assert pslint.syntax_errors(stripped) == []

    def tokens(text: str) -> list[str]:
        return [
            pslint.node_text(n)
            for n in pslint.walk(pslint.parse(text).root_node)
            if n.child_count == 0 and n.type != "comment" and pslint.node_text(n).strip()
        ]

    assert tokens(stripped) == tokens(original)
    assert len(stripped) < len(original)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_passes_the_powershell_1_lint(name: str) -> None:
    assert pslint.lint(source(name)) == []


@pytest.mark.parametrize("script", [collector.collector_script, collector.discover_script, collector.version_script])
def test_no_percent_sign_travels_in_an_environment_value(script) -> None:  # type: ignore[no-untyped-def]
    """WinRM refuses a Create whose environment value holds a % (docs/launch.md): every
    shipped script as sent, and the values beside it, are free of it."""
    assert pslint.percent_signs(script()) == []
    env = collector.shell_environment(script(), datetime(2026, 11, 20, tzinfo=UTC))
    assert not any("%" in value for value in env.values())


BAD_SAMPLES = {
    "try { Get-Item x } catch { 1 }": "try/catch",
    "$x | ConvertTo-Json": "ConvertTo-Json",
    "Add-Type -TypeDefinition 'class A {}'": "Add-Type",
    "Invoke-Command -ScriptBlock { 1 }": "Invoke-Command",
    "Get-WinEvent -LogName Application": "Get-WinEvent",
    "Select-Xml -Path a.xml -XPath /x": "Select-Xml",
    "$x | ConvertTo-Xml": "ConvertTo-Xml",
    "$x | ConvertTo-Csv": "ConvertTo-Csv",
    "$h = [ordered]@{ a = 1 }": "[ordered]",
    "$o = [pscustomobject]@{ a = 1 }": "[pscustomobject]",
    "if ('a' -in $list) { 1 }": "-in",
    "if ('a' -notin $list) { 1 }": "-notin",
    "$v = $PSVersionTable.PSVersion": "$PSVersionTable",
    "Get-EventLog -LogName Application -Source MSExchangePOP3": "-source",
    "Get-EventLog Application -After (Get-Date)": "-after",
    "& ([ScriptBlock]::Create($env:X))": "[ScriptBlock]::Create",
    "$parts = $s -split ','": "-split",
    "$s = $parts -join ','": "-join",
    "Get-Item @params": "splatting",
    "function f { [CmdletBinding()] param($x) }": "CmdletBinding",
    "Get-Service | Where-Object Status -eq Running": "script block",
    "New-Object PSObject -Property @{ a = 1 }": "-Property",
    "<# note #>\n$x = 1": "block comments",
    "Get-Service | % { $_.Name }": "% in a shipped script",
    "$odd = $n % 2": "% in a shipped script",
    "$s = '100%'": "% in a shipped script",
    "# 100% of the servers": "% in a shipped script",
}


@pytest.mark.parametrize("sample", sorted(BAD_SAMPLES))
def test_lint_finds_each_forbidden_construct(sample: str) -> None:
    findings = pslint.lint(sample)
    assert findings, f"lint missed {sample!r}"
    assert any(BAD_SAMPLES[sample].lower() in f.reason.lower() for f in findings), findings


def test_lint_ignores_comments_and_strings() -> None:
    text = "# try { } catch { } ConvertTo-Json -in\n$s = 'Add-Type [ordered] -split $PSVersionTable'\n"
    assert pslint.lint(text) == []


def schema_elements(xsd: str) -> dict[str, set[str]]:
    """element name -> its attribute names, from an XSD."""
    tree = etree.parse(str(HERE / xsd), etree.XMLParser(resolve_entities=False, no_network=True))
    result: dict[str, set[str]] = {}
    for element in tree.iter(f"{XS}element"):
        attributes = {
            a.get("name")
            for a in element.iter(f"{XS}attribute")
            if next(a.iterancestors(f"{XS}element")) is element
        }
        result.setdefault(element.get("name"), set()).update(attributes)
    return result


def literal_value(node) -> str:  # type: ignore[no-untyped-def]
    text = pslint.node_text(node)
    return text[1:-1]


def script_elements(text: str) -> dict[str, set[str]]:
    """element name -> attribute names the script writes, read from its syntax tree.

    Element names come from string literals starting a tag ('<config', '</config>');
    every call of the attribute helper T is assigned to the tag opened last before it.
    """
    tree = pslint.parse(text)
    result: dict[str, set[str]] = {}
    current: str | None = None
    for node in pslint.walk(tree.root_node):
        if node.type == "string_literal":
            for closing, tag in re.findall(r"<(/?)([A-Za-z][\w-]*)", literal_value(node)):
                if not closing:
                    current = tag
                    result.setdefault(tag, set())
            if '="' in literal_value(node):
                function = next(
                    (a for a in _ancestors(node) if a.type == "function_statement"), None
                )
                assert function is not None and _function_name(function) == ATTRIBUTE_HELPER, (
                    f"attribute markup outside the helper: {pslint.node_text(node)}"
                )
        elif node.type == "command" and _command_name(node) == ATTRIBUTE_HELPER:
            first = _elements(node)[0]
            literals = [n for n in pslint.walk(first) if n.type == "string_literal"]
            assert literals and pslint.node_text(first) == pslint.node_text(literals[0]), (
                f"attribute name is not a string literal: {pslint.node_text(node)}"
            )
            assert current is not None, f"attribute before any element: {pslint.node_text(node)}"
            result[current].add(literal_value(literals[0]))
    return result


def _ancestors(node):  # type: ignore[no-untyped-def]
    while node.parent is not None:
        node = node.parent
        yield node


def _function_name(function) -> str:  # type: ignore[no-untyped-def]
    return next(pslint.node_text(c) for c in function.children if c.type == "function_name")


def _command_name(command) -> str:  # type: ignore[no-untyped-def]
    return next((pslint.node_text(c) for c in command.children if c.type == "command_name"), "")


def _elements(command):  # type: ignore[no-untyped-def]
    elements = next(c for c in command.children if c.type == "command_elements")
    return [c for c in elements.named_children if c.type != "command_argument_sep"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_writes_exactly_the_schema(name: str) -> None:
    xsd, root = SCRIPTS[name]
    written = script_elements(source(name))
    expected = schema_elements(xsd)
    assert root in written
    assert written == expected


def test_attribute_extraction_notices_a_missing_attribute() -> None:
    # The comparison above must be able to fail: drop one attribute and it differs.
    text = source("collect.ps1").replace("+ (T 'startmode' $sm) ", "")
    assert text != source("collect.ps1")
    written = script_elements(text)
    assert "startmode" not in written["service"]
    assert written != schema_elements("schema.xsd")


def test_attribute_extraction_refuses_a_computed_name() -> None:
    with pytest.raises(AssertionError, match="not a string literal"):
        script_elements("A ('<host' + (T $name $cn) + '/>')")


# --- how it is sent -------------------------------------------------------------

CMD_LINE_LIMIT = 8_191
ENV_LIMIT = 32_767
ENVELOPE_LIMIT = 153_600  # WinRM MaxEnvelopeSizekb default (150 KB), pywinrm's DEFAULT_MAX_ENV_SIZE


def _encoded_text(line: str) -> str:
    words = line.split()
    return base64.b64decode(words[words.index("-EncodedCommand") + 1]).decode("utf-16-le")


def test_launch_runs_powershell_by_full_path_through_cmd_with_stdin_closed() -> None:
    line = collector.launch_command("env")
    # cmd.exe expands %SystemRoot% (never a guessed C:\Windows) and applies `< NUL`.
    assert line.startswith('"%SystemRoot%\\system32\\WindowsPowerShell\\v1.0\\powershell.exe" ')
    assert line.endswith(" < NUL") and "C:\\" not in line
    assert line.split()[1:5] == ["-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand"]
    text = _encoded_text(line)
    assert "$env:CASAUDIT_PS" in text and "NewScriptBlock" in text and collector.NOENV_MARKER in text
    assert collector.BADSCRIPT_MARKER in text and "SHA1CryptoServiceProvider" in text
    assert pslint.lint(text) == [] and pslint.syntax_errors(text) == []
    assert len(line) < CMD_LINE_LIMIT // 4
    words = line.split()[1:6]
    assert collector.decode_bootstrap(words) == text
    assert collector.decode_bootstrap([" ".join(words)]) == text  # as pywinrm joins them
    assert collector.SHELL_CODEPAGE != 65001  # 65001 breaks cmd.exe before 2008 R2


def test_stdin_launch_sets_the_inputs_and_reads_the_script_from_stdin() -> None:
    env = collector.shell_environment(collector.collector_script(), datetime(2026, 11, 20, tzinfo=UTC), 7)
    line = collector.launch_command("stdin", env)
    assert "< NUL" not in line and len(line) < CMD_LINE_LIMIT // 4
    text = _encoded_text(line)
    assert pslint.lint(text) == [] and pslint.syntax_errors(text) == []
    assert "$input" in text and collector.collector_script()[:40] not in text
    sent = collector.stdin_text(collector.collector_script())
    assert collector.parse_stdin_bootstrap(text) == (
        {"CASAUDIT_SINCE": "2026-11-20T00:00:00Z", "CASAUDIT_MAX_EVENTS": "7"},
        collector.script_length(sent), collector.script_digest(sent))
    assert collector.BADSCRIPT_MARKER in text
    assert collector.parse_stdin_bootstrap("$env:CASAUDIT_PS = 'x'; " + text.split("; ", 2)[2]) is None
    assert collector.parse_stdin_bootstrap("Get-Process") is None
    assert collector.parse_env_bootstrap(text) is None
    with pytest.raises(ValueError):
        collector.launch_command("wmi")


@pytest.mark.parametrize("script", [collector.collector_script, collector.discover_script])
def test_scripts_are_ascii_so_stdin_carries_them_in_any_code_page(script) -> None:  # type: ignore[no-untyped-def]
    assert script().isascii()


@pytest.mark.parametrize(
    "arguments",
    [
        [],
        ["-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand"],
        ["-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand", "not base64!"],
        ["-NoProfile", "-Command", "& $ExecutionContext.InvokeCommand.NewScriptBlock($env:CASAUDIT_PS)"],
    ],
)
def test_decode_bootstrap_refuses_other_commands(arguments: list[str]) -> None:
    assert collector.decode_bootstrap(arguments) is None


@pytest.mark.parametrize("script", [collector.collector_script, collector.discover_script])
def test_script_fits_an_environment_variable(script) -> None:  # type: ignore[no-untyped-def]
    text = script()
    assert len(text.encode("utf-16-le")) // 2 < ENV_LIMIT // 2, "keep a wide margin under the env var limit"
    assert script() is text  # cached


def test_shell_environment() -> None:
    since = datetime(2026, 11, 20, 10, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    env = collector.shell_environment(collector.collector_script(), since, 50)
    assert env == {
        "CASAUDIT_PS": collector.collector_script(),
        "CASAUDIT_SINCE": "2026-11-20T09:00:00Z",
        "CASAUDIT_MAX_EVENTS": "50",
    }
    with pytest.raises(ValueError):
        collector.shell_environment("x" * 40_000, since)
    with pytest.raises(ValueError):
        collector.shell_environment("x", since, -1)


def test_create_envelope_with_the_script_fits_winrm() -> None:
    from winrm.protocol import Protocol

    sent: list[str] = []

    class Captured(Exception):
        pass

    def capture(message: str) -> bytes:
        sent.append(message)
        raise Captured

    protocol = Protocol("http://127.0.0.1:1/wsman", username="u", password="p")
    protocol.send_message = capture  # type: ignore[method-assign]
    env = collector.shell_environment(collector.collector_script(), datetime.now(UTC))
    with pytest.raises(Captured):
        protocol.open_shell(env_vars=env, codepage=collector.SHELL_CODEPAGE, noprofile=True)
    envelope = sent[0].encode("utf-8")
    assert b"CASAUDIT_PS" in envelope
    assert len(envelope) < ENVELOPE_LIMIT // 4
    # The script survives the XML round trip unchanged.
    root = etree.fromstring(envelope, etree.XMLParser(resolve_entities=False, no_network=True))
    variables = {v.get("Name"): v.text for v in root.iter("{*}Variable")}
    assert variables["CASAUDIT_PS"] == collector.collector_script()


def test_schema_paths_are_package_data() -> None:
    assert collector.schema_path().read_bytes().startswith(b"<?xml")
    assert b"casdiscovery" in collector.discovery_schema_path().read_bytes()

"""A lint for Windows PowerShell 1.0: finds constructs that later versions added.

Matches the tree-sitter-powershell syntax tree (never text inside comments or
strings). Needs the test extras `tree-sitter` and `tree-sitter-powershell`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Cmdlets that do not exist in PowerShell 1.0, with the version that added them.
FORBIDDEN_COMMANDS: dict[str, str] = {
    "convertto-json": "ConvertTo-Json is PowerShell 3.0; build the output text yourself",
    "convertfrom-json": "ConvertFrom-Json is PowerShell 3.0",
    "add-type": "Add-Type is PowerShell 2.0",
    "invoke-command": "Invoke-Command is PowerShell 2.0 (remoting)",
    "new-pssession": "New-PSSession is PowerShell 2.0 (remoting)",
    "enter-pssession": "Enter-PSSession is PowerShell 2.0 (remoting)",
    "get-winevent": "Get-WinEvent is PowerShell 2.0; use Get-EventLog piped to Where-Object",
    "select-xml": "Select-Xml is PowerShell 2.0",
    "convertto-xml": "ConvertTo-Xml is PowerShell 2.0",
    "convertto-csv": "ConvertTo-Csv is PowerShell 2.0",
    "convertfrom-csv": "ConvertFrom-Csv is PowerShell 2.0",
    "convertfrom-stringdata": "ConvertFrom-StringData is PowerShell 2.0",
    "import-module": "Import-Module is PowerShell 2.0; use Add-PSSnapin",
    "start-job": "Start-Job is PowerShell 2.0",
    "get-random": "Get-Random is PowerShell 2.0",
    "test-connection": "Test-Connection is PowerShell 2.0",
    "out-gridview": "Out-GridView is PowerShell 2.0",
    "get-ciminstance": "Get-CimInstance is PowerShell 3.0; use Get-WmiObject",
    "invoke-webrequest": "Invoke-WebRequest is PowerShell 3.0",
    "invoke-restmethod": "Invoke-RestMethod is PowerShell 3.0",
}

# Operators added after 1.0.
FORBIDDEN_OPERATORS: dict[str, str] = {
    "-in": "-in is PowerShell 3.0; use -contains with the operands swapped",
    "-notin": "-notin is PowerShell 3.0; use -notcontains with the operands swapped",
    "-split": "-split is PowerShell 2.0; use the String.Split method",
    "-join": "-join is PowerShell 2.0; use [string]::Join",
    "-shl": "-shl is PowerShell 3.0",
    "-shr": "-shr is PowerShell 3.0",
}
for _op in ("in", "notin", "split", "join"):
    for _prefix in ("c", "i"):
        FORBIDDEN_OPERATORS[f"-{_prefix}{_op}"] = FORBIDDEN_OPERATORS[f"-{_op}"]

# Type names (type literals and attributes) added after 1.0.
FORBIDDEN_TYPES: dict[str, str] = {
    "ordered": "[ordered] is PowerShell 3.0",
    "pscustomobject": "[pscustomobject] is PowerShell 3.0; use New-Object PSObject with Add-Member",
    "system.management.automation.pscustomobject": "[pscustomobject] is PowerShell 3.0",
    "cmdletbinding": "[CmdletBinding()] (advanced functions) is PowerShell 2.0",
    "parameter": "[Parameter()] (advanced functions) is PowerShell 2.0",
}

FORBIDDEN_VARIABLES: dict[str, str] = {
    "$psversiontable": "$PSVersionTable is PowerShell 2.0; use $Host.Version",
    "$psscriptroot": "$PSScriptRoot is PowerShell 2.0/3.0",
    "$pscommandpath": "$PSCommandPath is PowerShell 3.0",
    "$psitem": "$PSItem is PowerShell 3.0; use $_",
}

FORBIDDEN_NODES: dict[str, str] = {
    "try_statement": "try/catch/finally is PowerShell 2.0; use trap { ...; continue }",
    "class_statement": "class is PowerShell 5.0",
    "enum_statement": "enum is PowerShell 5.0",
}

# Get-EventLog in 1.0 has only these parameters (plus the common ones); -Source,
# -After, -Before, -InstanceId, -EntryType, ... came with 2.0.
_GET_EVENTLOG_PARAMETERS = ("logname", "newest", "list", "asstring")
_COMMON_PARAMETERS = (
    "verbose", "debug", "erroraction", "errorvariable", "warningaction",
    "warningvariable", "outvariable", "outbuffer", "ea", "ev", "ov", "ob",
)
_SCRIPTBLOCK_TYPES = ("scriptblock", "system.management.automation.scriptblock")


@dataclass(frozen=True)
class LintFinding:
    """One construct PowerShell 1.0 cannot run."""

    line: int  # 1-based
    text: str
    reason: str


@functools.cache
def _parser() -> Any:
    import tree_sitter
    import tree_sitter_powershell

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def parse(source: str) -> Any:
    """The tree-sitter tree of a PowerShell source text."""
    return _parser().parse(source.encode("utf-8"))


def walk(node: Any) -> Iterator[Any]:
    """Every node below and including `node`, in source order."""
    yield node
    for child in node.children:
        yield from walk(child)


def node_text(node: Any) -> str:
    return node.text.decode("utf-8", "replace")


def syntax_errors(source: str) -> list[LintFinding]:
    """ERROR and MISSING nodes: places tree-sitter could not parse."""
    found = []
    for node in walk(parse(source).root_node):
        if node.is_error or node.is_missing:
            kind = "missing" if node.is_missing else "syntax error"
            found.append(LintFinding(node.start_point[0] + 1, node_text(node)[:60], f"{kind} ({node.type})"))
    return found


def _parameter_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    # PowerShell accepts any unambiguous prefix of a parameter name.
    return any(full.startswith(name) for full in allowed + _COMMON_PARAMETERS)


def _command_findings(node: Any) -> Iterator[str]:
    name_node = node.child_by_field_name("command_name") or next(
        (c for c in node.children if c.type == "command_name"), None
    )
    if name_node is None:
        return
    name = node_text(name_node).lower()
    if name in FORBIDDEN_COMMANDS:
        yield FORBIDDEN_COMMANDS[name]
    parameters = [
        node_text(p).lstrip("-").rstrip(":").lower()
        for p in walk(node)
        if p.type == "command_parameter" and p.parent is not None and p.parent.parent == node
    ]
    if name == "get-eventlog":
        for p in parameters:
            if not _parameter_allowed(p, _GET_EVENTLOG_PARAMETERS):
                yield f"Get-EventLog -{p} is PowerShell 2.0; filter with Where-Object"
    if name == "new-object" and any(p and "property".startswith(p) and len(p) > 1 for p in parameters):
        yield "New-Object -Property is PowerShell 2.0"
    if name in ("where-object", "where", "?", "foreach-object", "foreach", "%"):
        for p in parameters:
            if not _parameter_allowed(p, ("filterscript", "process", "begin", "end", "inputobject")):
                yield f"{name} without a script block (-{p}) is PowerShell 3.0 syntax"


#: Why a shipped script may not hold a `%` anywhere (code, strings, comments: the script
#: travels whole in a shell environment variable).
PERCENT_REASON = ("% in a shipped script: it travels in a shell environment variable and WinRM refuses a Create "
                  "whose value holds a % (fault 87, rundeck-plugins/py-winrm-plugin#74); write ForEach-Object "
                  "for the % alias, $a - [Math]::Floor($a / $b) * $b for the modulus")


def percent_signs(source: str) -> list[LintFinding]:
    """Every line with a `%` (not a syntax question: the text as sent)."""
    return [LintFinding(number, line.strip()[:60], PERCENT_REASON)
            for number, line in enumerate(source.splitlines(), 1) if "%" in line]


def lint(source: str) -> list[LintFinding]:
    """Every PowerShell-2.0-or-later construct found in `source`, and every `%`."""
    found: list[LintFinding] = percent_signs(source)

    def add(node: Any, reason: str) -> None:
        found.append(LintFinding(node.start_point[0] + 1, node_text(node)[:60], reason))

    for node in walk(parse(source).root_node):
        kind = node.type
        if kind in FORBIDDEN_NODES:
            add(node, FORBIDDEN_NODES[kind])
        elif kind == "comment" and node_text(node).startswith("<#"):
            add(node, "<# block comments #> are PowerShell 2.0; use # lines")
        elif kind == "command":
            for reason in _command_findings(node):
                add(node, reason)
        elif kind == "comparison_operator":
            op = node_text(node).lower()
            if op in FORBIDDEN_OPERATORS:
                add(node, FORBIDDEN_OPERATORS[op])
        elif kind in ("type_literal", "attribute_name"):
            spec = next((c for c in node.children if c.type == "type_spec"), node)
            type_name = node_text(spec).strip("[]").lower()
            if type_name in FORBIDDEN_TYPES:
                add(node, FORBIDDEN_TYPES[type_name])
            elif type_name in _SCRIPTBLOCK_TYPES and kind == "type_literal":
                member = node.next_named_sibling
                if member is not None and member.type == "member_name" and node_text(member).lower() == "create":
                    add(node.parent, "[ScriptBlock]::Create is PowerShell 2.0; use $ExecutionContext.InvokeCommand.NewScriptBlock")
        elif kind == "variable":
            text = node_text(node).lower()
            if text in FORBIDDEN_VARIABLES:
                add(node, FORBIDDEN_VARIABLES[text])
            elif text.startswith("@"):
                add(node, "splatting (@variable) is PowerShell 2.0")
            elif text.startswith("$using:"):
                add(node, "$using: is PowerShell 3.0")
    return found

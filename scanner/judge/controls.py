"""The controls each rule serves: frameworks and mappings of rules/catalog.toml, validated at load.

The catalog names each framework once (`[framework."NIST SP 800-53"]`: the document, its
address, and the controls it uses with their titles and sections) and each rule the controls
it serves (`controls = [{ framework, id, match }]`, style.md #14: mappings are data beside
the rule). Loading refuses, naming the file and line: a framework cas-audit does not know,
an id that does not have that framework's shape, a control the framework table does not
list, a match that is not exact or closest, an unknown field, a mapping given twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scanner.errors import ConfigError
from scanner.facts import CONTROL_FRAMEWORKS, CONTROL_MATCHES, PROTOCOLS
from scanner.judge.results import Control

#: The shape of a control id in each framework, with an example for the error message.
ID_SHAPES: dict[str, tuple[str, str]] = {
    "NIST SP 800-53": (r"[A-Z]{2}-\d{1,2}(\(\d{1,2}\))?", "CM-6 or SI-2(2)"),
    "CIS Controls v8": (r"\d{1,2}\.\d{1,2}", "4.8 (a safeguard)"),
    "ISO/IEC 27001:2022": (r"A\.[5-8]\.\d{1,2}", "A.8.9 (an Annex A control)"),
    "DISA STIG": (r"V-\d{4,6}", "V-33570 (a Vuln ID)"),
}
MAPPING_KEYS = frozenset({"framework", "id", "match", "protocol"})

Fail = Callable[..., ConfigError]
LineOf = Callable[..., "int | None"]


@dataclass(frozen=True)
class Framework:
    """One [framework."<name>"] table: its document, address and the controls it uses."""

    name: str
    document: str
    url: str
    controls: Mapping[str, tuple[str, str]]  # id -> (title, section)


def parse_frameworks(table: Any, fail: Fail, line_of: LineOf) -> dict[str, Framework]:
    """The [framework.*] tables of the catalog."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise fail("[framework.\"<name>\"] must be tables", line_of(r"^\s*framework\s*="))
    frameworks: dict[str, Framework] = {}
    for name, entry in table.items():
        line = line_of(r"^\s*\[\s*framework\s*\.\s*[\"']" + re.escape(name) + r"[\"']\s*\]")
        if name not in CONTROL_FRAMEWORKS:
            raise fail(f"unknown framework {name!r}", line, hint=f"known: {', '.join(CONTROL_FRAMEWORKS)}")
        if not isinstance(entry, dict):
            raise fail(f"framework {name!r} must be a table", line)
        extra = sorted(set(entry) - {"document", "url", "control"})
        if extra:
            raise fail(f"framework {name!r}: unknown field {extra[0]!r}", line, hint="fields: document, url, control")
        document, url = entry.get("document"), entry.get("url", "")
        if not isinstance(document, str) or not document.strip():
            raise fail(f"framework {name!r}: document (the source's title and version) is required", line)
        if not isinstance(url, str) or (url and not url.startswith("https://")):
            raise fail(f"framework {name!r}: url must be an https:// address", line)
        controls = entry.get("control", {})
        if not isinstance(controls, dict) or not controls:
            raise fail(f"framework {name!r}: [framework.\"{name}\".control] must list its controls", line)
        known: dict[str, tuple[str, str]] = {}
        for control_id, about in controls.items():
            at = line_of(r"^\s*[\"']" + re.escape(control_id) + r"[\"']\s*=", line or 1) or line
            _check_id(name, control_id, fail, at)
            if (not isinstance(about, dict) or set(about) != {"title", "section"}
                    or not all(isinstance(v, str) and v.strip() for v in about.values())):
                raise fail(f"framework {name!r} control {control_id}: give exactly a title and a section", at)
            known[control_id] = (about["title"].strip(), about["section"].strip())
        frameworks[name] = Framework(name, document.strip(), url, known)
    return frameworks


def parse_controls(
    value: Any, rule_id: str, frameworks: Mapping[str, Framework], fail: Fail, line_of: LineOf, start: int | None
) -> tuple[Control, ...]:
    """The `controls = [...]` of one rule (`start`: the rule's first line, for error lines)."""
    if value is None:
        return ()
    at_key = line_of(r"^\s*controls\s*=", start or 1) or start
    if not isinstance(value, list):
        raise fail(f"rule {rule_id}: controls must be a list of {{ framework, id, match }}", at_key)
    controls: list[Control] = []
    seen: set[tuple[str, str, str | None]] = set()
    for entry in value:
        control_id = entry.get("id") if isinstance(entry, dict) else None
        at = (line_of(r"""id\s*=\s*["']""" + re.escape(control_id) + r"""["']""", at_key or 1)
              if isinstance(control_id, str) else None) or at_key
        if not isinstance(entry, dict):
            raise fail(f"rule {rule_id}: each control must be {{ framework, id, match }}", at)
        extra = sorted(set(entry) - MAPPING_KEYS)
        if extra:
            raise fail(f"rule {rule_id}: control field {extra[0]!r} is unknown", at,
                       hint=f"fields: {', '.join(sorted(MAPPING_KEYS))}")
        name = entry.get("framework")
        if name not in CONTROL_FRAMEWORKS:
            raise fail(f"rule {rule_id}: unknown framework {name!r}", at, hint=f"known: {', '.join(CONTROL_FRAMEWORKS)}")
        framework = frameworks.get(name)
        if framework is None:
            raise fail(f"rule {rule_id}: framework {name!r} has no [framework.\"{name}\"] table in the catalog", at)
        if not isinstance(control_id, str):
            raise fail(f"rule {rule_id}: a {name} control needs an id", at)
        _check_id(name, control_id, fail, at, rule_id)
        if control_id not in framework.controls:
            raise fail(f"rule {rule_id}: {name} control {control_id} is not listed in [framework.\"{name}\".control]",
                       at, hint="add it there with its title and section")
        match = entry.get("match")
        if match not in CONTROL_MATCHES:
            raise fail(f"rule {rule_id}: {name} {control_id}: match must be one of {', '.join(CONTROL_MATCHES)}, "
                       f"not {match!r}", at)
        protocol = entry.get("protocol")
        if protocol is not None and protocol not in PROTOCOLS:
            raise fail(f"rule {rule_id}: {name} {control_id}: protocol must be one of {', '.join(PROTOCOLS)}", at)
        if (name, control_id, protocol) in seen:
            raise fail(f"rule {rule_id}: {name} {control_id} is mapped twice", at)
        seen.add((name, control_id, protocol))
        title, section = framework.controls[control_id]
        controls.append(Control(
            framework=name, id=control_id, match=match, title=title,
            source=f"{framework.document}, {section}", url=framework.url, protocol=protocol,
        ))
    return tuple(controls)


def _check_id(framework: str, control_id: Any, fail: Fail, line: int | None, rule_id: str | None = None) -> None:
    shape, example = ID_SHAPES[framework]
    if not isinstance(control_id, str) or not re.fullmatch(shape, control_id):
        who = f"rule {rule_id}: " if rule_id else ""
        raise fail(f"{who}{framework} control id {control_id!r} does not look like {example}", line)

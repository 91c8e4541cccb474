"""The rule catalog (rules/catalog.toml): ids, severities, texts in English and German.

Loaded and validated before any scan: a TOML syntax error, an unknown or missing field,
a duplicate id, a bad severity, a missing language, a template naming a field its check
does not provide, a catalog id without logic in `scanner.judge.checks` or logic without a
catalog entry: each is a ConfigError naming the file and line. The controls each rule
serves are validated by `scanner.judge.controls`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner.errors import ConfigError
from scanner.facts import LANGUAGES, SEVERITIES
from scanner.judge.checks import CHECKS, COMMON_FIELDS
from scanner.judge.controls import Framework, parse_controls, parse_frameworks
from scanner.judge.results import Control, RuleInfo
from scanner.util.paths import data_dir
from scanner.util.tomlfile import SourceLines, read_text

TEXT_KEYS: dict[str, frozenset[str]] = {  # shared sentences and the fields they may use
    "waived": frozenset({"expires", "approver", "justification", "scope", "created"}),
    "waiver_expired": frozenset({"expires", "approver", "justification", "scope", "created"}),
    "not_rescanned": frozenset({"as_of_run", "server"}),
}
RULE_TEXT_KEYS: tuple[str, ...] = ("title", "message", "rationale", "remediation")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def rules_dir() -> Path:
    """The folder holding catalog.toml and baseline.toml for this installation."""
    return data_dir("rules")


def template_fields(template: str) -> set[str]:
    """The {name} placeholders of a template."""
    return set(_FIELD.findall(template))


def render(template: str, fields: Mapping[str, Any], generic: Mapping[str, str] | None = None) -> str:
    """Fill {name} placeholders; a missing or None field gets its generic wording, else <name>."""
    generic = generic or {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        value = fields.get(name)
        if value is None or value == "":
            return generic.get(name, f"<{name}>")
        return str(value)

    return _FIELD.sub(fill, template)


@dataclass(frozen=True)
class Reference:
    title: str
    url: str

    def __str__(self) -> str:
        return f"{self.title} <{self.url}>" if self.url else self.title


@dataclass(frozen=True)
class RuleText:
    title: str
    message: str
    rationale: str
    remediation: str


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    references: tuple[Reference, ...]
    texts: Mapping[str, RuleText]
    line: int
    controls: tuple[Control, ...] = ()

    def text(self, lang: str) -> RuleText:
        return self.texts[lang if lang in self.texts else "en"]

    @property
    def title(self) -> dict[str, str]:
        """The title by language."""
        return {lang: text.title for lang, text in self.texts.items()}


@dataclass(frozen=True)
class Catalog:
    """The validated catalog; `rules` in id order."""

    version: str
    rules: tuple[Rule, ...]
    texts: Mapping[str, Mapping[str, str]]  # lang -> shared sentences
    generic: Mapping[str, Mapping[str, str]]  # lang -> generic wording of fields
    path: str
    frameworks: Mapping[str, Framework] = field(default_factory=dict)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)

    def __contains__(self, rule_id: object) -> bool:
        return any(r.id == rule_id for r in self.rules)

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise ConfigError(f"rule {rule_id!r} is not in the catalog {self.path}")

    def title(self, rule_id: str, lang: str = "en") -> str:
        return self.rule(rule_id).text(lang).title

    def controls(self, rule_id: str, protocol: str | None = None) -> tuple[Control, ...]:
        """The controls `rule_id` serves; with a protocol, those that apply to its findings."""
        return tuple(c for c in self.rule(rule_id).controls if c.applies_to(protocol))

    def message(self, rule_id: str, fields: Mapping[str, Any], lang: str = "en") -> str:
        """The finding's sentence in `lang`."""
        return render(self.rule(rule_id).text(lang).message, fields, self._generic(lang)).strip()

    def remediation(self, rule_id: str, fields: Mapping[str, Any] | None = None, lang: str = "en") -> str:
        """The procedure, filled in for one finding, or in its generic wording without fields."""
        return render(self.rule(rule_id).text(lang).remediation, fields or {}, self._generic(lang)).strip()

    def sentence(self, key: str, fields: Mapping[str, Any], lang: str = "en") -> str:
        """A shared sentence ([text.<lang>]: waived, waiver_expired, not_rescanned)."""
        table = self.texts.get(lang) or self.texts["en"]
        return render(table[key], fields, self._generic(lang)).strip()

    def finding_message(
        self,
        rule_id: str,
        fields: Mapping[str, Any],
        lang: str,
        *,
        state: str,
        waiver: Mapping[str, Any] | None,
        not_rescanned: Mapping[str, Any] | None,
    ) -> str:
        """The finding's sentence plus what its waiver and a missed scan add to it (shared by
        evaluation, which stores it, and reports, which render it again in their language)."""
        parts = [self.message(rule_id, fields, lang)]
        if not_rescanned:
            parts.append(self.sentence("not_rescanned", {**fields, **not_rescanned}, lang))
        if waiver and state == "waived":
            parts.append(self.sentence("waived", waiver, lang))
        elif waiver and state == "waiver-expired":
            parts.append(self.sentence("waiver_expired", waiver, lang))
        return " ".join(parts)

    def rule_info(self, rule_id: str, lang: str = "en", severity: str | None = None) -> RuleInfo:
        """The catalog entry as report data (severity after policy overrides when given)."""
        rule = self.rule(rule_id)
        text = rule.text(lang)
        return RuleInfo(
            id=rule.id,
            title=text.title,
            severity=severity or rule.severity,
            default_severity=rule.severity,
            rationale=" ".join(text.rationale.split()),
            remediation=self.remediation(rule_id, None, lang),
            references=tuple(str(r) for r in rule.references),
            controls=rule.controls,
        )

    def rule_infos(self, lang: str = "en", severity: Mapping[str, str] | None = None) -> list[RuleInfo]:
        severity = severity or {}
        return [self.rule_info(r.id, lang, severity.get(r.id)) for r in self.rules]

    def _generic(self, lang: str) -> Mapping[str, str]:
        return self.generic.get(lang) or self.generic.get("en") or {}


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Load and validate the catalog (default: catalog.toml of `rules_dir()`)."""
    path = Path(path) if path is not None else rules_dir() / "catalog.toml"
    return parse_catalog(read_text(path, "rule catalog"), str(path))


def parse_catalog(text: str, source: str) -> Catalog:
    """Validate catalog text; `source` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    source_lines = SourceLines(text)
    line_of = source_lines.find

    def fail(problem: str, line: int | None, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{source}:{line}: {problem}" if line else f"{source}: {problem}", hint=hint)

    unknown = sorted(set(data) - {"catalog_version", "text", "framework", "rule"})
    if unknown:
        raise fail(f"unknown top-level field {unknown[0]!r}", line_of(rf"^\s*\[*\s*{re.escape(unknown[0])}\b"))
    version = data.get("catalog_version")
    if not isinstance(version, str) or not version.strip():
        raise fail("catalog_version (a non-empty string) is required", line_of(r"^\s*catalog_version\b") or 1)

    texts, generic = _shared_texts(data.get("text"), fail, line_of)
    frameworks = parse_frameworks(data.get("framework"), fail, line_of)

    entries = data.get("rule")
    if not isinstance(entries, list) or not entries:
        raise fail("no [[rule]] entries", None)
    rules: dict[str, Rule] = {}
    for index, entry in enumerate(entries):
        block = source_lines.table("rule", index)
        block_start = block[0] if block else None
        rule_id = entry.get("id") if isinstance(entry, dict) else None
        id_line = line_of(rf"""^\s*id\s*=\s*["']{re.escape(rule_id)}["']""", block_start or 1) if isinstance(rule_id, str) else None
        where = id_line or block_start

        def at_key(key: str, start: int | None = where) -> int | None:
            found = line_of(rf"^\s*{re.escape(key)}\s*=", start or 1)
            return found or start

        if not isinstance(entry, dict):
            raise fail("a [[rule]] must be a table", block_start)
        extra = sorted(set(entry) - {"id", "severity", "references", "controls", *LANGUAGES})
        if extra:
            raise fail(f"rule {rule_id}: unknown field {extra[0]!r}", at_key(extra[0]))
        if not isinstance(rule_id, str) or not re.fullmatch(r"XS-\d{3}", rule_id):
            raise fail(f"rule #{index + 1}: id must look like \"XS-001\", not {rule_id!r}", where)
        if rule_id in rules:
            raise fail(f"duplicate rule id {rule_id} (first at line {rules[rule_id].line})", where)
        if rule_id not in CHECKS:
            raise fail(f"rule {rule_id} has no logic in scanner/judge/checks.py", where)
        severity = entry.get("severity")
        if severity not in SEVERITIES:
            raise fail(f"rule {rule_id}: severity {severity!r} is not one of {', '.join(SEVERITIES)}", at_key("severity"))
        references = _references(entry.get("references", []), rule_id, fail, at_key("references"))
        allowed = COMMON_FIELDS | CHECKS[rule_id].fields
        rule_texts: dict[str, RuleText] = {}
        for lang in LANGUAGES:
            table = entry.get(lang)
            if not isinstance(table, dict):
                raise fail(f"rule {rule_id}: the {lang} texts ([rule.{lang}]) are missing", where)
            lang_line = line_of(rf"^\s*\[\s*rule\s*\.\s*{lang}\s*\]", where or 1) or where
            extra = sorted(set(table) - set(RULE_TEXT_KEYS))
            if extra:
                raise fail(f"rule {rule_id} [{lang}]: unknown field {extra[0]!r}", lang_line)
            for key in RULE_TEXT_KEYS:
                value = table.get(key)
                if not isinstance(value, str) or not value.strip():
                    raise fail(f"rule {rule_id} [{lang}]: {key} (non-empty text) is missing", lang_line)
            for key in ("message", "remediation", "title"):
                unknown_fields = sorted(template_fields(table[key]) - (allowed if key != "title" else set()))
                if unknown_fields:
                    key_line = line_of(rf"^\s*{key}\s*=", lang_line or 1) or lang_line
                    raise fail(
                        f"rule {rule_id} [{lang}] {key}: unknown field {{{unknown_fields[0]}}}",
                        key_line,
                        hint=f"fields of {rule_id}: {', '.join(sorted(allowed))}",
                    )
            rule_texts[lang] = RuleText(**{k: table[k].strip() for k in RULE_TEXT_KEYS})
        controls = parse_controls(entry.get("controls"), rule_id, frameworks, fail, line_of, where)
        rules[rule_id] = Rule(rule_id, severity, references, rule_texts, where or 0, controls)
    missing = sorted(set(CHECKS) - set(rules))
    if missing:
        raise fail(f"rule logic {missing[0]} in scanner/judge/checks.py has no catalog entry", None)
    return Catalog(
        version=version.strip(),
        rules=tuple(rules[rid] for rid in sorted(rules)),
        texts=texts,
        generic=generic,
        path=source,
        frameworks=frameworks,
    )


def _shared_texts(table: Any, fail: Any, line_of: Any) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    if not isinstance(table, dict):
        raise fail("[text.en] and [text.de] are required", None)
    texts: dict[str, dict[str, str]] = {}
    generic: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        lang_table = table.get(lang)
        lang_line = line_of(rf"^\s*\[\s*text\s*\.\s*{lang}\s*\]")
        if not isinstance(lang_table, dict):
            raise fail(f"[text.{lang}] is missing", None)
        extra = sorted(set(lang_table) - set(TEXT_KEYS) - {"generic"})
        if extra:
            raise fail(f"[text.{lang}]: unknown field {extra[0]!r}", line_of(rf"^\s*{re.escape(extra[0])}\s*=") or lang_line)
        texts[lang] = {}
        for key, allowed in TEXT_KEYS.items():
            value = lang_table.get(key)
            if not isinstance(value, str) or not value.strip():
                raise fail(f"[text.{lang}]: {key} (non-empty text) is missing", lang_line)
            unknown = sorted(template_fields(value) - allowed)
            if unknown:
                raise fail(f"[text.{lang}] {key}: unknown field {{{unknown[0]}}}", line_of(rf"^\s*{key}\s*=", lang_line or 1))
            texts[lang][key] = value
        gen = lang_table.get("generic", {})
        if not isinstance(gen, dict) or not all(isinstance(v, str) for v in gen.values()):
            raise fail(f"[text.{lang}.generic] must map field names to text", lang_line)
        generic[lang] = dict(gen)
    return texts, generic


def _references(value: Any, rule_id: str, fail: Any, line: int | None) -> tuple[Reference, ...]:
    if not isinstance(value, list):
        raise fail(f"rule {rule_id}: references must be a list of {{ title, url }}", line)
    refs = []
    for ref in value:
        if not isinstance(ref, dict) or not isinstance(ref.get("title"), str) or set(ref) - {"title", "url"}:
            raise fail(f"rule {rule_id}: each reference needs a title (and may have a url), nothing else", line)
        url = ref.get("url", "")
        if not isinstance(url, str) or (url and not url.startswith("https://")):
            raise fail(f"rule {rule_id}: reference url must be an https:// address", line)
        refs.append(Reference(ref["title"], url))
    return tuple(refs)

"""The rule catalog: complete, in both languages, backed by logic, and validated at load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rules_fixtures import SP1, T0, failed, inputs, proto, server

from scanner.errors import ConfigError
from scanner.facts import RULE_IDS, SEVERITIES
from scanner.judge.catalog import (
    LANGUAGES,
    load_catalog,
    rules_dir,
    template_fields,
)
from scanner.judge.checks import CHECKS, run_checks
from scanner.judge.policy import Policy
from scanner.parse.observe import RefusedLogonObservation

CATALOG_TEXT = (rules_dir() / "catalog.toml").read_text(encoding="utf-8")


def test_the_catalog_holds_the_thirteen_rules_of_the_design() -> None:
    """(That every entry has logic and every logic an entry, the loader checks: see
    test_id_without_logic and test_logic_without_entry.)"""
    catalog = load_catalog()
    assert catalog.ids == tuple(f"XS-{n:03d}" for n in range(1, 14))
    assert "XS-001" in catalog and "XS-014" not in catalog


def test_the_rule_ids_policies_may_name_are_the_checks() -> None:
    """Policies are validated against facts.RULE_IDS without loading the checks."""
    assert tuple(sorted(CHECKS)) == RULE_IDS


def test_default_severities_are_those_of_the_design() -> None:
    catalog = load_catalog()
    expected = {
        "XS-001": "high", "XS-002": "medium", "XS-003": "high", "XS-004": "medium", "XS-005": "medium",
        "XS-006": "high", "XS-007": "low", "XS-008": "low", "XS-009": "medium", "XS-010": "low",
        "XS-011": "high", "XS-012": "info", "XS-013": "medium",
    }
    assert {r.id: r.severity for r in catalog.rules} == expected
    assert all(r.severity in SEVERITIES for r in catalog.rules)


def test_both_languages_complete_and_distinct() -> None:
    catalog = load_catalog()
    for rule in catalog.rules:
        en, de = rule.text("en"), rule.text("de")
        for key in ("title", "message", "rationale", "remediation"):
            assert getattr(en, key) and getattr(de, key)
            assert getattr(en, key) != getattr(de, key), (rule.id, key)
        # both languages use the same fields
        assert template_fields(en.message) == template_fields(de.message), rule.id
        assert template_fields(en.remediation) == template_fields(de.remediation), rule.id
    assert "Standortübergreifende" in catalog.title("XS-001", "de")


def test_remediation_names_file_key_value_and_service() -> None:
    catalog = load_catalog()
    for rid in ("XS-001", "XS-002", "XS-003", "XS-005"):
        text = catalog.remediation(rid, None, "en")
        assert "ClientAccess\\PopImap\\" in text and "AllowCrossSiteSessions" in text or rid == "XS-005"
        assert "Microsoft Exchange <POP3|IMAP4>" in text and "Restart-Service" in text, rid
    assert 'value="false"' in catalog.remediation("XS-001", None, "en")
    assert 'value="true"' in catalog.remediation("XS-002", None, "en")
    xs003 = catalog.remediation("XS-003", None, "en")
    assert "_Pre-SP1" in xs003 and "cas-audit evidence" in xs003


def test_references_are_https() -> None:
    catalog = load_catalog()
    for rule in catalog.rules:
        assert rule.references, rule.id
        assert all(r.url.startswith("https://learn.microsoft.com/") for r in rule.references)


def _one_finding_per_rule() -> dict[str, object]:
    """Inputs under which every rule fires at least once."""
    logon = RefusedLogonObservation(T0, "CONTOSO\\jörg", "Hamburg")
    before = server("CAS01", build="8.0.685.24", sp="RTM", value=True)
    current = [
        # XS-003 (pop3 true -> false with RTM -> SP1), XS-012 (SP1), XS-008, XS-002 (policy wants pop3 true)
        server("CAS01", build=SP1, sp="SP1", value=False, imap4=proto("imap4", True)),
        server(
            "CAS02",
            pop3=proto("pop3", True, notes=("duplicate key",), modified=T0, logons=[logon]),
            imap4=proto("imap4", None, status="malformed", detail="not well-formed (line 3)"),
        ),
        failed("CAS03"),
    ]
    policy = Policy.from_text('[baseline]\nimap4_service = "disabled"\n'
                              '[[baseline.override]]\nserver = "CAS01"\nprotocol = "pop3"\nallow_cross_site = true\n')
    inp = inputs(current, run_id=2, previous={"CAS01": (1, before), "CAS02": (1, server("CAS02"))}, policy=policy)
    return {f.rule: f for f in run_checks(inp)}


def test_every_rule_fires_and_its_templates_render_without_placeholders() -> None:
    catalog = load_catalog()
    by_rule = _one_finding_per_rule()
    assert set(by_rule) == set(CHECKS), sorted(set(CHECKS) - set(by_rule))
    for rid, finding in by_rule.items():
        for lang in LANGUAGES:
            message = catalog.message(rid, finding.fields, lang)
            remediation = catalog.remediation(rid, finding.fields, lang)
            assert not re.search(r"\{[a-z_]+\}", message + remediation), (rid, lang)
            assert "<" not in message or rid == "XS-007", (rid, lang, message)
    xs003 = catalog.message("XS-003", by_rule["XS-003"].fields, "de")
    assert "von true auf false" in xs003 and SP1 in xs003 and "8.0.685.24" in xs003


def test_generic_remediation_has_no_raw_placeholders() -> None:
    catalog = load_catalog()
    for lang in LANGUAGES:
        for rule in catalog.rules:  # every field a remediation uses has a generic wording
            assert template_fields(rule.text(lang).remediation) <= set(catalog.generic[lang]), (rule.id, lang)
        for info in catalog.rule_infos(lang, {"XS-010": "medium"}):
            assert not re.search(r"\{[a-z_]+\}", info.remediation)
        assert [i.severity for i in catalog.rule_infos(lang, {"XS-010": "medium"}) if i.id == "XS-010"] == ["medium"]


# -- malformed catalogs -------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def _expect_error(tmp_path: Path, text: str, line: int | None, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    message = str(caught.value)
    assert str(path) in message and words in message, message
    if line is not None:
        assert f"{path}:{line}:" in message or f"line {line}" in message, message


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = CATALOG_TEXT.replace('severity = "low"', 'severity = "low', 1)
    _expect_error(tmp_path, text, _line_of(text, 'severity = "low'), "not valid TOML")


def test_duplicate_id(tmp_path: Path) -> None:
    text = CATALOG_TEXT.replace('id = "XS-008"', 'id = "XS-007"')
    second = [n for n, line in enumerate(text.splitlines(), start=1) if 'id = "XS-007"' in line][1]
    _expect_error(tmp_path, text, second, "duplicate rule id XS-007")


def test_bad_severity(tmp_path: Path) -> None:
    text = CATALOG_TEXT.replace('id = "XS-012"\nseverity = "info"', 'id = "XS-012"\nseverity = "informational"')
    _expect_error(tmp_path, text, _line_of(text, '"informational"'), "severity 'informational'")


def test_id_without_logic(tmp_path: Path) -> None:
    text = CATALOG_TEXT.replace('id = "XS-012"', 'id = "XS-014"')
    _expect_error(tmp_path, text, _line_of(text, 'id = "XS-014"'), "XS-014 has no logic")


def test_logic_without_entry(tmp_path: Path) -> None:
    start = CATALOG_TEXT.index('[[rule]]\nid = "XS-012"')
    _expect_error(tmp_path, CATALOG_TEXT[:start], None, "XS-012 in scanner/judge/checks.py has no catalog entry")


def test_missing_language(tmp_path: Path) -> None:
    start = CATALOG_TEXT.index("[rule.de]\ntitle = \"Unter Exchange 2007 SP3")
    text = CATALOG_TEXT[:start]
    _expect_error(tmp_path, text, _line_of(text, 'id = "XS-012"'), "the de texts")


def test_template_with_unknown_field(tmp_path: Path) -> None:
    text = CATALOG_TEXT.replace("could not be scanned ({error_kind})", "could not be scanned ({error_code})")
    _expect_error(tmp_path, text, _line_of(text, "{error_code}"), "unknown field {error_code}")


def test_unknown_field_in_rule(tmp_path: Path) -> None:
    text = CATALOG_TEXT.replace('id = "XS-005"\nseverity = "medium"', 'id = "XS-005"\nseverity = "medium"\nowner = "me"')
    _expect_error(tmp_path, text, _line_of(text, 'owner = "me"'), "unknown field 'owner'")

"""Controls on every rule (issue 17 item 3): the catalog maps each rule to the controls it
serves, the loader refuses a malformed mapping with its line, and every report shows them.

The report tests scan the demo organisation once, in this process, over real WinRM."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from click.testing import CliRunner
from labfleet import demo_fleet
from openpyxl import load_workbook

from scanner.cli import cli
from scanner.errors import ConfigError
from scanner.facts import CONTROL_FRAMEWORKS, RULE_IDS
from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog, parse_catalog, rules_dir
from scanner.judge.policy import Policy
from scanner.lab.serve import Lab
from scanner.report.build import build_report
from scanner.report.labels import Labels
from scanner.report.write import render
from scanner.scan import run_scan
from scanner.store.repo import open_store

CATALOG_PATH = rules_dir() / "catalog.toml"
CATALOG_TEXT = CATALOG_PATH.read_text(encoding="utf-8")
BASE = "127.0.57.1"


# -- the shipped catalog: what an auditor relies on ------------------------------------------


def test_every_rule_serves_a_nist_control_and_names_its_source() -> None:
    catalog = load_catalog()
    assert catalog.ids == RULE_IDS
    for rule in catalog.rules:
        assert rule.controls, f"{rule.id} serves no control"
        assert "NIST SP 800-53" in {c.framework for c in rule.controls}, rule.id
        assert "ISO/IEC 27001:2022" in {c.framework for c in rule.controls}, rule.id
        assert "CIS Controls v8" in {c.framework for c in rule.controls}, rule.id
        for control in rule.controls:
            assert control.title and control.source.startswith(catalog.frameworks[control.framework].document)


def test_the_rules_that_ask_for_what_a_control_asks_are_exact() -> None:
    catalog = load_catalog()

    def match(rule: str, framework: str, control: str) -> str | None:
        found = [c.match for c in catalog.controls(rule) if c.framework == framework and c.id == control]
        return found[0] if found else None

    assert match("XS-001", "NIST SP 800-53", "CM-6") == "exact"
    assert match("XS-004", "NIST SP 800-53", "CM-3") == "exact"
    assert match("XS-012", "NIST SP 800-53", "SI-2") == "exact"
    assert match("XS-012", "ISO/IEC 27001:2022", "A.8.8") == "exact"
    assert match("XS-010", "ISO/IEC 27001:2022", "A.8.15") == "closest"


# -- the loader: a malformed mapping is refused with its line --------------------------------


def broken(old: str, new: str) -> str:
    assert old in CATALOG_TEXT
    return CATALOG_TEXT.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


XS001_CM6 = '{ framework = "NIST SP 800-53", id = "CM-6", match = "exact" }'


@pytest.mark.parametrize(
    ("replacement", "problem"),
    [
        ('{ framework = "NIST 800-53", id = "CM-6", match = "exact" }', "unknown framework 'NIST 800-53'"),
        ('{ framework = "NIST SP 800-53", id = "CM6", match = "exact" }', "control id 'CM6' does not look like"),
        ('{ framework = "NIST SP 800-53", id = "CM-6" }', "match must be one of exact, closest, not None"),
        ('{ framework = "NIST SP 800-53", id = "CM-6", match = "partial" }', "not 'partial'"),
        ('{ framework = "NIST SP 800-53", id = "AC-2", match = "exact" }', "control AC-2 is not listed"),
        ('{ framework = "NIST SP 800-53", id = "CM-6", match = "exact", why = "x" }', "control field 'why'"),
        ('{ framework = "NIST SP 800-53", id = "CM-6", match = "exact", protocol = "smtp" }', "protocol must be"),
    ],
)
def test_a_bad_mapping_names_file_line_and_problem(replacement: str, problem: str) -> None:
    text = broken(XS001_CM6, replacement)
    with pytest.raises(ConfigError) as info:
        parse_catalog(text, "catalog.toml")
    message = str(info.value)
    assert problem in message and "XS-001" in message
    assert message.startswith(f"catalog.toml:{line_of(text, replacement)}:"), message


def test_a_framework_cas_audit_does_not_know_is_refused() -> None:
    text = broken('[framework."DISA STIG"]\n', '[framework."PCI DSS"]\n')
    with pytest.raises(ConfigError, match=r"catalog\.toml:\d+: unknown framework 'PCI DSS'"):
        parse_catalog(text, "catalog.toml")
    assert "PCI DSS" not in CONTROL_FRAMEWORKS


def test_a_listed_control_of_the_wrong_shape_is_refused() -> None:
    text = broken('"A.8.9" = {', '"8.9" = {')
    with pytest.raises(ConfigError) as info:
        parse_catalog(text, "catalog.toml")
    line = line_of(text, '"8.9" = {')
    assert str(info.value).startswith(f"catalog.toml:{line}:")
    assert "ISO/IEC 27001:2022 control id '8.9' does not look like A.8.9" in str(info.value)


def test_a_mapping_given_twice_is_refused() -> None:
    text = broken(XS001_CM6, XS001_CM6 + ", " + XS001_CM6.replace("exact", "closest"))
    with pytest.raises(ConfigError, match="XS-001: NIST SP 800-53 CM-6 is mapped twice"):
        parse_catalog(text, "catalog.toml")


# -- the reports ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("controls")
    store = open_store(f"sqlite:///{folder / 'history.db'}")
    with Lab(demo_fleet(BASE, "basic")) as lab:
        lab.write_inventory(folder / "inventory.toml")
        outcome = run_scan(load_inventory(folder / "inventory.toml"), store=store, password="lab-password",
                           policy=Policy.default(), catalog=load_catalog(), concurrency=4, timeout_s=30)
    return store, outcome.run_id


def test_every_json_finding_names_its_controls(scanned: Any) -> None:
    store, run_id = scanned
    catalog = load_catalog()
    data = json.loads(render(build_report(store, run_id), "json"))
    assert data["findings"]
    for finding in data["findings"]:
        expected = [c.as_json() for c in catalog.controls(finding["rule"], finding["protocol"])]
        assert finding["controls"] == expected and expected, finding["rule"]
        for control in finding["controls"]:
            assert list(control) == ["framework", "id", "match"]
            assert control["match"] in ("exact", "closest")
    rules = {f["rule"] for f in data["findings"]}
    assert "XS-012" in rules or "XS-001" in rules


def test_the_json_controls_are_the_same_in_german(scanned: Any) -> None:
    store, run_id = scanned
    en = json.loads(render(build_report(store, run_id, lang="en"), "json"))
    de = json.loads(render(build_report(store, run_id, lang="de"), "json"))
    assert [f["controls"] for f in en["findings"]] == [f["controls"] for f in de["findings"]]


@pytest.mark.parametrize("lang", ["en", "de"])
def test_the_workbook_and_the_csv_show_each_findings_controls(scanned: Any, lang: str) -> None:
    store, run_id = scanned
    labels = Labels(lang)
    report = build_report(store, run_id, lang=lang)
    book = load_workbook(io.BytesIO(render(report, "xlsx")))
    findings = sheet_rows(book[labels.sheet("findings")])
    table = list(csv.reader(io.StringIO(render(report, "csv").decode("utf-8-sig"))))
    csv_rows = [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    for rows in (findings, csv_rows):
        shown = [r for r in rows if r[labels("col.rule")] and r[labels("col.severity")]]
        assert len(shown) == len(report.findings)
        for row, finding in zip(shown, report.findings, strict=True):
            cell = row[labels("col.controls")]
            for control in finding.controls:
                assert f"{control.framework} {control.id} ({labels.word('match', control.match)})" in cell
    catalog_rows = sheet_rows(book[labels.sheet("rules")])
    assert [r[labels("col.rule")] for r in catalog_rows] == list(RULE_IDS)
    for row in catalog_rows:
        assert "NIST SP 800-53" in row[labels("col.controls")], row[labels("col.rule")]
    (xs013,) = [r for r in catalog_rows if r[labels("col.rule")] == "XS-013"]
    assert "V-33570 The Microsoft Exchange POP3 service must be disabled." in xs013[labels("col.controls")]
    assert "Exchange 2010 Client Access Server STIG" in xs013[labels("col.controls")]


def sheet_rows(sheet: Any) -> list[dict[str, Any]]:
    values = list(sheet.iter_rows(values_only=True))
    return [dict(zip(values[0], row, strict=True)) for row in values[1:]]


@pytest.mark.parametrize(("lang", "word"), [("en", "exact"), ("de", "genau")])
def test_the_rules_command_lists_every_rules_controls(lang: str, word: str) -> None:
    result = CliRunner().invoke(cli, ["rules", "--lang", lang], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    for rule_id in RULE_IDS:
        assert rule_id in result.output
    assert f"NIST SP 800-53 CM-7 ({word})" in result.output
    assert "DISA STIG V-33562" in result.output and "[imap4]" in result.output
    # each rule's row lists every control the catalog gives it, with its match
    starts = [result.output.index(f"│ {rule_id} ") for rule_id in RULE_IDS]
    catalog = load_catalog()
    for rule_id, start, end in zip(RULE_IDS, starts, [*starts[1:], len(result.output)], strict=True):
        shown = result.output[start:end]
        for control in catalog.controls(rule_id):
            assert f"{control.framework} {control.id} (" in shown, (rule_id, control.id)

"""Build to service pack and rollup from Microsoft's table, with the registry's Patches list
as a second opinion: a disagreement or an unknown build shows in the JSON report and on the
workbook's Servers sheet, in both languages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labfleet import cas_audit_here as cas_audit
from labfleet import running
from openpyxl import load_workbook

from scanner.lab.fleet import load_fleet
from scanner.report.labels import Labels

FLEET = Path(__file__).parent / "fleets" / "build_check.toml"
# name -> (build, service_pack, rollup from the build, rollup_listed, build_check)
EXPECTED = {
    "AGREE": ("8.3.298.3", "SP3", "RU10", "RU10", "agrees"),
    "BEHIND": ("8.3.297.2", "SP3", "RU9", "RU10", "disagrees"),
    "UNKNOWN": ("8.3.600.0", "SP3", None, None, "not-in-table"),
}


@pytest.mark.slow
def test_disagreement_and_unknown_build_in_json_and_workbook(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'history.db'}"
    with running(load_fleet(FLEET), tmp_path) as (_, inventory):
        scan = cas_audit("scan", "--inventory", str(inventory), db=db)
    assert scan.returncode in (0, 1), scan.stderr
    report = cas_audit("report", "--format", "json", db=db)
    assert report.returncode == 0, report.stderr
    servers = {s["name"]: s for s in json.loads(report.stdout)["servers"]}
    for name, expected in EXPECTED.items():
        s = servers[name]
        assert (s["build"], s["service_pack"], s["rollup"], s["rollup_listed"], s["build_check"]) == expected

    for lang in ("en", "de"):
        out = tmp_path / f"r-{lang}.xlsx"
        made = cas_audit("report", "--format", "xlsx", "--lang", lang, "--out", str(out), db=db)
        assert made.returncode == 0, made.stderr
        labels = Labels(lang)
        sheet = load_workbook(out, read_only=True)[labels.sheet("servers")]
        rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        header = rows[0]
        by_name = {r[header.index(labels("col.server"))]: r for r in rows[1:]}
        for name, (_, _, rollup, listed, check) in EXPECTED.items():
            row = by_name[name]
            assert row[header.index(labels("col.rollup"))] == rollup
            assert row[header.index(labels("col.rollup_listed"))] == listed
            assert row[header.index(labels("col.build_check"))] == labels(f"build_check.{check}")
    assert Labels("de")("build_check.disagrees") != Labels("en")("build_check.disagrees")

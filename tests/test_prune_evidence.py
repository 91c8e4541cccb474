"""Issue 14: prune keeps what every kept run's reports read. After pruning runs 1-3, the
reports of kept runs 4-6 (JSON, CSV, the workbook, HTML and OCSF) regenerate byte for byte:
their Changes sheets compare with scans of the removed runs, their trends show the removed
runs. A second prune (of runs that already kept their context) and a new scan after it change
nothing either. SQLite and PostgreSQL, prune through the command line in process (click's
CliRunner). In English only: the language picks the catalog's texts and the renderers' words,
never what is read from the history (German: test_export_xlsx, test_export_ocsf)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta

from click.testing import CliRunner
from rules_fixtures import SP1, SP3, T0, failed, server
from test_history import record

from scanner.cli import cli
from scanner.judge.catalog import Catalog, load_catalog
from scanner.report.build import build_report
from scanner.report.write import render
from scanner.store.repo import Store, open_store

DAY = timedelta(days=1)
FORMATS = ("json", "csv", "xlsx", "html", "ocsf")  # every format `report` writes


def scans(number: int) -> list:
    """Run `number` (1..): CAS01 flips its value every run, CAS02 moves from SP1 to SP3 in
    run 3, CAS03 fails in runs 2 to 5 (its scan in run 6 compares with run 1)."""
    at = T0 + number * DAY
    cas02 = server("CAS02", build=SP1, sp="SP1", at=at) if number < 3 else server("CAS02", build=SP3, at=at)
    cas03 = failed("CAS03", at=at) if 2 <= number <= 5 else server("CAS03", value=number == 1, at=at)
    return [server("CAS01", value=number % 2 == 0, at=at), cas02, cas03]


def workbook_parts(data: bytes) -> dict[str, bytes]:
    """Every part of an xlsx file, byte for byte, but for the time it was written
    (docProps/core.xml's dcterms:modified, openpyxl's "now"): deterministic."""
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    parts["docProps/core.xml"] = re.sub(rb"<dcterms:modified[^>]*>[^<]*</dcterms:modified>", b"",
                                        parts["docProps/core.xml"])
    return parts


def reports(store: Store, run_ids: list[int], catalog: Catalog) -> dict[tuple[int, str], object]:
    found: dict[tuple[int, str], object] = {}
    for run_id in run_ids:
        model = build_report(store, run_id, catalog=catalog)
        for fmt in FORMATS:
            data = render(model, fmt)
            found[(run_id, fmt)] = workbook_parts(data) if fmt == "xlsx" else data
    return found


def prune(url: str, before: str) -> str:
    result = CliRunner().invoke(cli, ["prune", "--db", url, "--before", before, "--apply"], prog_name="cas-audit")
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_kept_runs_reports_regenerate_byte_for_byte_after_prune(history_url: str) -> None:
    catalog = load_catalog()
    with open_store(history_url) as store:
        runs = [record(store, scans(n), T0 + n * DAY) for n in range(1, 7)]
        before = reports(store, runs[3:], catalog)
        changes_4 = build_report(store, runs[3], catalog=catalog).changes
        assert len([c for c in changes_4 if c.before_run in runs[:3]]) >= 5  # what the issue saw lost
        assert [p.run_id for p in build_report(store, runs[3], catalog=catalog).trend] == runs[:4]
        assert any(c.server == "CAS03" and c.before_run == runs[0] for c in build_report(store, runs[5], catalog=catalog).changes)
        # the OCSF Close lines of runs 5 and 6 (XS-001, XS-009 of the site, XS-011) carry the
        # first-seen times read from runs 4 and 5, which the second prune removes
        for run_id in runs[4:]:
            text = before[(run_id, "ocsf")]
            assert isinstance(text, bytes)
            closes = [json.loads(line) for line in text.decode("utf-8").splitlines() if '"activity_id":3,' in line]
            assert closes and all(c["unmapped"]["first_seen_known"] for c in closes), run_id

    out = prune(history_url, (T0 + 4 * DAY - timedelta(hours=1)).isoformat())
    assert out.splitlines()[-1].startswith("removed 3 run(s)"), out
    assert "and what 3 kept run(s)' reports read from the removed ones" in out

    with open_store(history_url) as store:
        assert sorted(r.id for r in store.runs()) == runs[3:]
        after = reports(store, runs[3:], catalog)
        for key, value in before.items():
            assert after[key] == value, key

        # a second prune removes runs that kept their context; a new run comes after
        newer = record(store, scans(7), T0 + 7 * DAY)
        before = reports(store, [runs[5], newer], catalog)
    out = prune(history_url, (T0 + 6 * DAY - timedelta(hours=1)).isoformat())
    assert out.splitlines()[-1].startswith("removed 2 run(s)"), out
    with open_store(history_url) as store:
        assert sorted(r.id for r in store.runs()) == [runs[5], newer]
        after = reports(store, [runs[5], newer], catalog)
        for key, value in before.items():
            assert after[key] == value, key

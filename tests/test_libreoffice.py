"""The workbook opens in LibreOffice (headless) and shows the model's values on every sheet;
outside text that looks like a formula shows verbatim, not evaluated."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import date, datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook
from reportdata import HOSTILE_VALUES, sample_report

from scanner.report.export_csv import write_findings_csv
from scanner.report.export_xlsx import write_xlsx
from scanner.report.model import RunReport
from scanner.report.sheets import CellValue, workbook_sheets

SOFFICE = shutil.which("soffice")
pytestmark = [
    pytest.mark.slow,  # LibreOffice converts each workbook in a subprocess
    pytest.mark.libreoffice,
    pytest.mark.skipif(
        SOFFICE is None,
        reason="LibreOffice is not installed (no soffice on PATH): "
        "apt-get install --no-install-recommends libreoffice-calc-nogui to run these checks",
    ),
]

# LibreOffice's CSV filter options (LibreOffice Help, "CSV Filter Options"): comma (44), double
# quote (34), UTF-8 (76), from line 1, ..., and -1 at the end: every sheet to its own CSV file
CSV_FILTER = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1"

REPORTS: dict[str, RunReport] = {
    "en": sample_report("en"),
    "de": sample_report("de"),
    **{f"hostile{i}": sample_report("en", hostile=h) for i, h in enumerate(HOSTILE_VALUES)},
}


def soffice(profile: Path, outdir: Path, convert_to: str, files: list[Path]) -> None:
    result = subprocess.run(
        [SOFFICE, "--headless", "--norestore", f"-env:UserInstallation={profile.as_uri()}",
         "--convert-to", convert_to, "--outdir", str(outdir), *map(str, files)],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Each report's workbook, converted by LibreOffice: name -> folder of per-sheet CSVs."""
    root = tmp_path_factory.mktemp("libreoffice")
    books = []
    for name, report in REPORTS.items():
        path = root / f"{name}.xlsx"
        with open(path, "wb") as stream:
            write_xlsx(report, stream)
        books.append(path)
    out = root / "csv"
    soffice(root / "profile", out, CSV_FILTER, books)
    return {name: out for name in REPORTS}


def shown(value: CellValue) -> str:
    """How LibreOffice shows a value of ours in CSV (the cell formats we set)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def trimmed(row: list[str]) -> list[str]:
    while row and row[-1] == "":
        row = row[:-1]
    return row


def read_sheet_csv(path: Path) -> list[list[str]]:
    assert path.exists(), f"LibreOffice wrote no {path.name}: the workbook did not open cleanly"
    with open(path, encoding="utf-8", newline="") as handle:
        return [trimmed(row) for row in csv.reader(handle)]


@pytest.mark.parametrize("name", list(REPORTS))
def test_every_sheet_shows_the_models_values(converted, name: str) -> None:
    report = REPORTS[name]
    for sheet in workbook_sheets(report):
        rows = read_sheet_csv(converted[name] / f"{name}-{sheet.name}.csv")
        expected = [trimmed([c.header for c in sheet.columns if c.header is not None])]
        expected += [trimmed([shown(v) for v in row]) for row in sheet.rows]
        while rows and not rows[-1]:
            rows.pop()
        assert rows == expected, sheet.name


@pytest.mark.parametrize("index", range(len(HOSTILE_VALUES)))
def test_formula_like_text_is_shown_verbatim_not_evaluated(converted, index: int) -> None:
    hostile = HOSTILE_VALUES[index]
    name = f"hostile{index}"
    folder = converted[name]
    findings = read_sheet_csv(folder / f"{name}-Findings.csv")
    servers = read_sheet_csv(folder / f"{name}-Servers.csv")
    assert findings[1][0] == hostile  # rule id column
    assert servers[1][0] == hostile  # server name
    every = list(folder.glob(f"{name}-*.csv"))
    assert len(every) == 9  # every sheet, the Applied changes too
    for path in every:
        for row in read_sheet_csv(path):
            assert "y" not in row  # =HYPERLINK("http://x","y") would show as y
            assert not any(v.startswith(("Err:", "#NAME?", "#VALUE!")) for v in row)


def test_findings_csv_is_not_evaluated_when_libreoffice_imports_it(tmp_path) -> None:
    report = sample_report("en", hostile="=1+1")
    path = tmp_path / "findings.csv"
    with open(path, "w", encoding="utf-8", newline="") as stream:
        write_findings_csv(report, stream)
    soffice(tmp_path / "profile", tmp_path / "out", "xlsx", [path])
    wb = load_workbook(io.BytesIO((tmp_path / "out" / "findings.xlsx").read_bytes()))
    cells = [c for row in wb.active.iter_rows() for c in row if c.value is not None]
    assert all(c.data_type != "f" for c in cells)
    assert any(c.value in ("'=1+1", "=1+1") for c in cells)
    assert all(c.value != 2 for c in cells)

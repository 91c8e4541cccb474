"""Export benchmark: write_xlsx against xlsxwriter's constant_memory mode, 100,000 findings.

Each writer runs in its own subprocess (so ru_maxrss is its own peak), interleaved, several
times; both build the same report from tests/reportdata.py first and write the same Findings
rows (xlsxwriter gets the rows `report_sheets.findings_rows` yields, with the same header,
freeze pane, widths, autofilter, date and severity formats). Not part of the test suite.

    .venv/bin/python bench/bench_xlsx.py --rows 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _write_openpyxl(report, path: Path) -> None:
    from scanner.report.export_xlsx import write_xlsx

    with open(path, "wb") as stream:
        write_xlsx(report, stream)


def _write_xlsxwriter(report, path: Path) -> None:
    import xlsxwriter

    from scanner.report.export_xlsx import DATETIME_FORMAT, HEADER_FILL, SEVERITY_COLOURS
    from scanner.report.labels import Labels
    from scanner.report.sheets import SeverityWord, findings_columns, findings_rows

    labels = Labels(report.lang)
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_formulas": False})
    ws = wb.add_worksheet(labels.sheet("findings"))
    header = wb.add_format({"bold": True, "bg_color": "#" + HEADER_FILL})
    when = wb.add_format({"num_format": DATETIME_FORMAT})
    day = wb.add_format({"num_format": "yyyy-mm-dd"})
    severity = {
        sev: wb.add_format({"bg_color": "#" + fill, "font_color": "#" + font})
        for sev, (fill, font) in SEVERITY_COLOURS.items()
    }
    columns = findings_columns(labels)
    ws.freeze_panes(1, 0)
    for index, column in enumerate(columns):
        ws.set_column(index, index, column.width)
    for index, column in enumerate(columns):
        ws.write_string(0, index, column.header, header)
    row_index = 0
    for row_index, row in enumerate(findings_rows(report, labels), start=1):
        for col, value in enumerate(row):
            kind = type(value)
            if value is None:
                continue
            if kind is str:
                ws.write_string(row_index, col, value)
            elif kind is SeverityWord:
                ws.write_string(row_index, col, value, severity.get(value.severity))
            elif kind is datetime:
                ws.write_datetime(row_index, col, value, when)
            elif kind is date:
                ws.write_datetime(row_index, col, value, day)
            else:
                ws.write_number(row_index, col, value)
    ws.autofilter(0, 0, row_index, len(columns) - 1)
    wb.close()


WRITERS = {"openpyxl": _write_openpyxl, "xlsxwriter": _write_xlsxwriter}


def worker(name: str, rows: int) -> None:
    """Build the report, write it once, print one JSON line of figures."""
    import gc

    from reportdata import large_report

    report = large_report(rows)
    gc.collect()
    before = _current_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.xlsx"
        start = time.perf_counter()
        WRITERS[name](report, path)
        seconds = time.perf_counter() - start
        size = path.stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"writer": name, "seconds": seconds, "peak_mib": peak,
                      "model_mib": before, "bytes": size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=sorted(WRITERS))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.rows)
        return
    results: dict[str, list[dict]] = {name: [] for name in WRITERS}
    for repeat in range(args.repeats):
        for name in WRITERS:  # interleaved: both writers see the same machine state
            out = subprocess.run(
                [sys.executable, __file__, "--worker", name, "--rows", str(args.rows)],
                check=True, capture_output=True, text=True,
            ).stdout
            figures = json.loads(out.strip().splitlines()[-1])
            results[name].append(figures)
            print(f"run {repeat + 1} {name:10} {figures['seconds']:6.2f} s  "
                  f"peak {figures['peak_mib']:6.1f} MiB  (model built: {figures['model_mib']:.1f} MiB)"
                  f"  {figures['bytes'] / 2**20:.1f} MiB file", flush=True)
    med = {name: {key: statistics.median(r[key] for r in runs)
                  for key in ("seconds", "peak_mib", "model_mib")}
           for name, runs in results.items()}
    print(f"\n{args.rows} finding rows, median of {args.repeats} interleaved runs")
    print("| writer | time | peak RSS | RSS with the model built, before writing | writer's own peak |")
    print("|---|---|---|---|---|")
    for name, m in med.items():
        print(f"| {name} | {m['seconds']:.2f} s | {m['peak_mib']:.0f} MiB | {m['model_mib']:.0f} MiB "
              f"| {m['peak_mib'] - m['model_mib']:.0f} MiB |")
    ratio = med["openpyxl"]["seconds"] / med["xlsxwriter"]["seconds"]
    pairs = [a["seconds"] / b["seconds"] for a, b in zip(results["openpyxl"], results["xlsxwriter"], strict=True)]
    print(f"\ntime ratio write_xlsx / xlsxwriter constant_memory: {ratio:.2f}x (medians); "
          f"per interleaved pair: {', '.join(f'{r:.2f}' for r in pairs)} "
          f"(median {statistics.median(pairs):.2f}x)")


if __name__ == "__main__":
    main()

"""The auditor's workbook (XLSX) of one run, written from the report model to a stream.

Nine sheets (see `sheets.workbook_sheets`), written in openpyxl's write-only mode so a run of
100,000 findings stays in bounded memory. Every string is stored as text: a server name
such as `=HYPERLINK(...)` or `#N/A` shows verbatim and is never a formula or an error.
"""

from __future__ import annotations

import typing
from datetime import date, datetime

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.styles.cell_style import StyleArray
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from scanner.report.model import RunReport
from scanner.report.sheets import SeverityWord, Sheet, clean, workbook_sheets
from scanner.util.timefmt import utc_naive

DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
DATE_FORMAT = "yyyy-mm-dd"

# severity -> (fill colour, font colour); the chart uses the same fill colours
SEVERITY_COLOURS: dict[str, tuple[str, str]] = {
    "critical": ("C00000", "FFFFFF"),
    "high": ("FF9999", "7F0000"),
    "medium": ("FFE699", "7F6000"),
    "low": ("BDD7EE", "1F4E78"),
    "info": ("E7E6E6", "404040"),
}
CHART_COLOURS: dict[str, str] = {
    "critical": "C00000",
    "high": "FF4B4B",
    "medium": "FFC000",
    "low": "5B9BD5",
    "info": "A5A5A5",
}
HEADER_FILL = "D9E1F2"
FONT = "Calibri"  # the workbook default, named so bold cells keep the same face

# openpyxl stores a string starting with "=" as a formula and one of these as an error
_TEXT_TRAPS = ("=", "#")


class _Styles:
    """Style templates, built once per sheet and copied into cells (cheap)."""

    def __init__(self, ws: WriteOnlyWorksheet) -> None:
        def style(**attrs: typing.Any) -> StyleArray:
            cell = WriteOnlyCell(ws)
            for name, value in attrs.items():
                setattr(cell, name, value)
            return cell._style

        self.header = style(
            font=Font(name=FONT, bold=True),
            fill=PatternFill("solid", fgColor=HEADER_FILL),
            alignment=Alignment(vertical="top"),
        )
        self.bold = style(font=Font(name=FONT, bold=True))
        # a Summary section's column headings stand over numbers and dates: align with them
        self.bold_right = style(font=Font(name=FONT, bold=True), alignment=Alignment(horizontal="right"))
        self.datetime = style(number_format=DATETIME_FORMAT)
        self.date = style(number_format=DATE_FORMAT)
        self.severity = {
            sev: style(
                fill=PatternFill("solid", fgColor=fill),
                font=Font(name=FONT, color=font, bold=sev == "critical"),
            )
            for sev, (fill, font) in SEVERITY_COLOURS.items()
        }


def _cell(ws: WriteOnlyWorksheet, value: typing.Any, style: StyleArray | None) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws)
    if style is not None:
        cell._style = style  # shared: write-only cells are never restyled
    cell.value = value
    if isinstance(value, str):
        cell.data_type = "s"
    return cell


def _row(ws: WriteOnlyWorksheet, values: tuple[typing.Any, ...], styles: _Styles) -> list[typing.Any]:
    """Cells for one row: plain values where openpyxl keeps them as they are."""
    out: list[typing.Any] = []
    for value in values:
        kind = type(value)
        if kind is str:
            out.append(_cell(ws, value, None) if value[:1] in _TEXT_TRAPS else value)
        elif kind is SeverityWord:
            out.append(_cell(ws, str(value), styles.severity.get(value.severity)))
        elif kind is datetime:
            out.append(_cell(ws, value, styles.datetime))
        elif kind is date:
            out.append(_cell(ws, value, styles.date))
        elif kind is bool or value is None or kind is int or kind is float:
            out.append(value)
        else:  # a subclass or a type we do not expect: as text, never a formula
            out.append(_cell(ws, str(value), None))
    return out


def _styled_row(
    ws: WriteOnlyWorksheet, values: tuple[typing.Any, ...], style: StyleArray
) -> list[WriteOnlyCell]:
    cells = []
    for value in values:
        if type(value) is SeverityWord:
            value = str(value)
        cells.append(_cell(ws, value, style))
    return cells


def _write_sheet(wb: Workbook, sheet: Sheet) -> None:
    ws: WriteOnlyWorksheet = wb.create_sheet(sheet.name)
    styles = _Styles(ws)
    # before the first append: write-only sheets write views and columns first
    ws.freeze_panes = "A2"
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = 9  # A4
    if sheet.fit_to_page:
        ws.page_setup.fitToWidth = 1
        ws.page_setup.fitToHeight = 0
        ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.print_title_rows = "1:1"
    for index, column in enumerate(sheet.columns, start=1):
        ws.column_dimensions[get_column_letter(index)].width = column.width
    headers = tuple(c.header for c in sheet.columns if c.header is not None)
    ws.append(_styled_row(ws, headers, styles.header))
    n_cols = sheet.filter_cols or len(sheet.columns)
    n_rows = 0
    for row_number, values in enumerate(sheet.rows, start=2):
        if row_number in sheet.bold_rows:
            ws.append(_styled_row(ws, values[:1], styles.bold) + _styled_row(ws, values[1:], styles.bold_right))
        else:
            ws.append(_row(ws, values, styles))
        n_rows += 1
    filtered = n_rows if sheet.filter_rows is None else min(sheet.filter_rows, n_rows)
    ws.auto_filter.ref = f"A1:{get_column_letter(n_cols)}{filtered + 1}"
    if sheet.trend is not None:
        _add_trend_chart(ws, sheet)


def _add_trend_chart(ws: WriteOnlyWorksheet, sheet: Sheet) -> None:
    trend = sheet.trend
    assert trend is not None
    chart = BarChart()
    chart.type = "col"
    chart.grouping = "stacked"
    chart.overlap = 100
    chart.title = trend.title
    chart.y_axis.title = trend.y_title
    chart.x_axis.title = trend.x_title
    chart.x_axis.delete = False
    chart.y_axis.delete = False
    chart.width = 18
    chart.height = 9
    data = Reference(
        ws,
        min_col=trend.first_series_col,
        max_col=trend.last_series_col,
        min_row=trend.header_row,
        max_row=trend.last_row,
    )
    categories = Reference(ws, min_col=1, min_row=trend.first_row, max_row=trend.last_row)
    chart.add_data(data, titles_from_data=True)
    chart.set_categories(categories)
    severities = list(SEVERITY_COLOURS)
    for index, series in enumerate(chart.series):
        if index < len(severities):
            colour = CHART_COLOURS[severities[index]]
            series.graphicalProperties.solidFill = colour
            series.graphicalProperties.line.solidFill = colour
    ws.add_chart(chart, "E2")


def write_xlsx(report: RunReport, stream: typing.BinaryIO) -> None:
    """Write the workbook of `report` (in `report.lang`) to the binary `stream`."""
    wb = Workbook(write_only=True)
    if report.run is not None:
        wb.properties.creator = clean(f"cas-audit {report.run.tool_version}")
        wb.properties.title = f"cas-audit run {report.run.id}"
        wb.properties.created = utc_naive(report.run.started_at)
    elif report.as_of is not None:
        wb.properties.creator = clean(f"cas-audit {report.as_of.tool_version}")
        wb.properties.title = f"cas-audit organisation as of {report.as_of.time:%Y-%m-%dT%H:%M:%SZ}"
        wb.properties.created = utc_naive(report.as_of.time)
    for sheet in workbook_sheets(report):
        _write_sheet(wb, sheet)
    wb.save(stream)

"""The single-file HTML report: summary, trend (inline SVG and its table of runs), findings with their evidence and
controls, action items per server, the changes recorded in the run's window, the run's
seal; in the report's language.

One file with no external resource and no script: a Content-Security-Policy meta tag
forbids scripts, and every value goes through Jinja2's autoescaping (server data is
hostile). The tables are the workbook's (report/sheets.py), so both say the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from jinja2 import Environment, StrictUndefined

from scanner.facts import SEVERITIES
from scanner.report.applied_sheet import applied_changes_sheet
from scanner.report.export_json import report_dict
from scanner.report.labels import Labels
from scanner.report.model import FindingInfo, RunReport, TrendPoint
from scanner.report.sheets import SeverityWord, Sheet, findings_sheet, summary_sheet
from scanner.util.timefmt import day_iso, display_utc

# scripts, frames, fonts, connections and remote images are all forbidden; only the
# page's own <style> and data: images may load
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "cas-audit report",
        "summary": "Summary",
        "trend": "Active findings over the last runs",
        "findings": "Findings",
        "details": "Evidence and controls",
        "actions": "Action items per server",
        "seal": "Seal of the run (SHA-256 chain)",
        "no_seal": "This run carries no seal.",
        "evidence": "Evidence",
        "controls": "Controls",
        "no_controls": "no control mapped",
        "remediation": "What to do",
        "no_actions": "Nothing to do: no active finding.",
        "site_level": "Site",
        "exact": "exact",
        "closest": "closest equivalent",
        "applied": "Changes recorded in this run's window (fix apply / fix rollback)",
        "no_applied": "No change was recorded in this run's window.",
    },
    "de": {
        "title": "cas-audit-Bericht",
        "summary": "Übersicht",
        "trend": "Aktive Befunde der letzten Läufe",
        "findings": "Befunde",
        "details": "Nachweise und Kontrollen",
        "actions": "Maßnahmen je Server",
        "seal": "Siegel des Laufs (SHA-256-Kette)",
        "no_seal": "Dieser Lauf trägt kein Siegel.",
        "evidence": "Nachweis",
        "controls": "Kontrollen",
        "no_controls": "keine Kontrolle zugeordnet",
        "remediation": "Was zu tun ist",
        "no_actions": "Nichts zu tun: kein aktiver Befund.",
        "site_level": "Standort",
        "exact": "genau",
        "closest": "nächste Entsprechung",
        "applied": "Im Zeitraum dieses Laufs erfasste Änderungen (fix apply / fix rollback)",
        "no_applied": "Im Zeitraum dieses Laufs wurde keine Änderung erfasst.",
    },
}
_COLOURS = {"critical": "#7b1fa2", "high": "#c62828", "medium": "#ef6c00", "low": "#1565c0", "info": "#607d8b"}


@dataclass(frozen=True)
class Cell:
    text: str
    severity: str | None = None


def _cell(value: Any) -> Cell:
    if isinstance(value, SeverityWord):
        return Cell(str(value), value.severity)
    if isinstance(value, datetime):
        return Cell(display_utc(value))
    if isinstance(value, date):
        return Cell(day_iso(value))
    return Cell("" if value is None else str(value))


def _table(sheet: Sheet) -> dict[str, Any]:
    return {
        "headers": [c.header or "" for c in sheet.columns],
        "rows": [[_cell(v) for v in row] for row in sheet.rows],
    }


def _summary_tables(sheet: Sheet) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The Summary sheet as HTML tables: its blocks (separated by empty rows) each become a
    table with its own header row, so no block is wider than its header; the trend's block
    (runs × severities) goes with the trend chart, not into the summary."""
    headers = [c.header or "" for c in sheet.columns][:2]
    blocks: list[list[list[Cell]]] = [[]]
    trend_block = None
    for number, row in enumerate(sheet.rows, start=2):  # sheet row numbers: 1 is the header
        if not row:
            blocks.append([])
            continue
        if sheet.trend is not None and number == sheet.trend.header_row:
            trend_block = len(blocks) - 1
        blocks[-1].append([_cell(v) for v in row])
    tables = [{"headers": [Cell(h) for h in headers], "rows": blocks[0]}]
    tables += [{"headers": b[0], "rows": b[1:]} for i, b in enumerate(blocks[1:], start=1) if b and i != trend_block]
    trend = blocks[trend_block] if trend_block is not None else None
    return tables, ({"headers": trend[0], "rows": trend[1:]} if trend else None)


@dataclass(frozen=True)
class Series:
    severity: str
    label: str
    colour: str
    points: str  # SVG polyline points
    dots: tuple[tuple[float, float, int], ...]


def _trend_svg(trend: tuple[TrendPoint, ...], labels: Labels) -> dict[str, Any] | None:
    """Coordinates of a line chart of active findings per severity over the runs."""
    if not trend:
        return None
    width, height, left, bottom, top, right = 720.0, 260.0, 44.0, 36.0, 16.0, 110.0
    peak = max([1] + [n for p in trend for n in p.active_by_severity.values()])
    step = (width - left - right) / max(1, len(trend) - 1)

    def xy(i: int, n: int) -> tuple[float, float]:
        return (round(left + i * step, 1), round(height - bottom - n * (height - bottom - top) / peak, 1))

    series = []
    for sev in [s for s in SEVERITIES if any(s in p.active_by_severity for p in trend)]:
        dots = tuple((*xy(i, p.active_by_severity.get(sev, 0)), p.active_by_severity.get(sev, 0))
                     for i, p in enumerate(trend))
        series.append(Series(sev, str(labels.word("severity", sev)), _COLOURS.get(sev, "#000"),
                             " ".join(f"{x},{y}" for x, y, _ in dots), dots))
    ticks = [(xy(i, 0)[0], p.run_id) for i, p in enumerate(trend)]
    return {"width": width, "height": height, "left": left, "bottom": height - bottom, "top": top,
            "right": width - right, "peak": peak, "series": series, "ticks": ticks}


@dataclass(frozen=True)
class Detail:
    rule: str
    title: str
    severity: str
    severity_word: str
    server: str
    protocol: str
    message: str
    evidence: str  # pretty JSON
    controls: list[dict[str, str]]


@dataclass(frozen=True)
class Action:
    rule: str
    title: str
    severity: str
    severity_word: str
    protocols: str
    remediation: str


def _details(report: RunReport, entries: list[dict[str, Any]], labels: Labels) -> Iterator[Detail]:
    for f, entry in zip(report.findings, entries, strict=True):
        yield Detail(
            rule=f.rule, title=f.title, severity=f.severity,
            severity_word=str(labels.word("severity", f.severity)),
            server=f.server if f.server is not None else f.site or "", protocol=f.protocol or "",
            message=f.message,
            evidence=json.dumps(entry["evidence"], ensure_ascii=False, indent=2, default=str),
            controls=[{k: str(v) for k, v in c.items()} for c in entry.get("controls") or []],
        )


def _actions(report: RunReport, labels: Labels, site_word: str) -> list[tuple[str, list[Action]]]:
    """Per server (or site, for site findings), the remediation of each rule with an active
    finding there, most severe first."""
    by_place: dict[str, dict[str, list[FindingInfo]]] = {}
    for f in report.findings:
        if not f.active:
            continue
        place = f.server if f.server is not None else f"{site_word} {f.site or ''}"
        by_place.setdefault(place, {}).setdefault(f.rule, []).append(f)
    rank: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
    result = []
    for place, rules in by_place.items():
        actions = []
        for rule, found in rules.items():
            first = min(found, key=lambda f: rank.get(f.severity, len(rank)))
            protocols = ", ".join(sorted({f.protocol for f in found if f.protocol}))
            actions.append(Action(rule, first.title, first.severity, str(labels.word("severity", first.severity)),
                                  protocols, first.remediation))
        actions.sort(key=lambda a: (rank.get(a.severity, len(rank)), a.rule))
        result.append((place, actions))
    return sorted(result, key=lambda item: item[0].casefold())


_TEMPLATE = """<!DOCTYPE html>
<html lang="{{ lang }}">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="referrer" content="no-referrer">
<title>{{ w.title }} – {{ heading }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
table.summary{margin:8px 0 16px;min-width:32em}table.summary td:first-child{width:18em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;white-space:pre-wrap;word-break:break-word}
th{background:#f0f0f0}
.sev{font-weight:600}
{% for sev, colour in colours.items() %}.sev-{{ sev }}{color:{{ colour }}}
{% endfor %}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.85em;white-space:pre-wrap;word-break:break-all}
.seal{font-family:monospace;word-break:break-all}
details{margin:6px 0}summary{cursor:default}
</style>
</head>
<body>
<h1>{{ w.title }} – {{ heading }}</h1>

<h2 id="summary">{{ w.summary }}</h2>
{% for t in summary %}<table class="summary">
<thead><tr>{% for h in t.headers %}<th{% if h.severity %} class="sev sev-{{ h.severity }}"{% endif %}>{{ h.text }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in t.rows %}<tr>{% for c in row %}<td{% if c.severity %} class="sev sev-{{ c.severity }}"{% endif %}>{{ c.text }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{% endfor %}
<h2 id="seal">{{ w.seal }}</h2>
{% if seal %}<p class="seal">{{ seal }}</p>{% else %}<p>{{ w.no_seal }}</p>{% endif %}

{% if trend %}
<h2 id="trend">{{ w.trend }}</h2>
<svg xmlns="http://www.w3.org/2000/svg" width="{{ trend.width }}" height="{{ trend.height }}" viewBox="0 0 {{ trend.width }} {{ trend.height }}" role="img" aria-label="{{ w.trend }}">
<line x1="{{ trend.left }}" y1="{{ trend.bottom }}" x2="{{ trend.right }}" y2="{{ trend.bottom }}" stroke="#999"/>
<line x1="{{ trend.left }}" y1="{{ trend.top }}" x2="{{ trend.left }}" y2="{{ trend.bottom }}" stroke="#999"/>
<text x="{{ trend.left - 6 }}" y="{{ trend.top + 4 }}" text-anchor="end" font-size="11">{{ trend.peak }}</text>
<text x="{{ trend.left - 6 }}" y="{{ trend.bottom + 4 }}" text-anchor="end" font-size="11">0</text>
{% for x, run_id in trend.ticks %}<text x="{{ x }}" y="{{ trend.bottom + 16 }}" text-anchor="middle" font-size="11">{{ run_id }}</text>
{% endfor %}{% for s in trend.series %}<polyline fill="none" stroke="{{ s.colour }}" stroke-width="2" points="{{ s.points }}"/>
{% for x, y, n in s.dots %}<circle cx="{{ x }}" cy="{{ y }}" r="3" fill="{{ s.colour }}"><title>{{ s.label }}: {{ n }}</title></circle>
{% endfor %}<text x="{{ trend.right + 10 }}" y="{{ trend.top + 14 * loop.index }}" font-size="12" fill="{{ s.colour }}">{{ s.label }}</text>
{% endfor %}</svg>
{% endif %}
{% if trend_table %}{% if not trend %}<h2 id="trend">{{ w.trend }}</h2>{% endif %}
<table class="trend">
<thead><tr>{% for h in trend_table.headers %}<th{% if h.severity %} class="sev sev-{{ h.severity }}"{% endif %}>{{ h.text }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in trend_table.rows %}<tr>{% for c in row %}<td>{{ c.text }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{% endif %}

<h2 id="actions">{{ w.actions }}</h2>
{% if actions %}{% for place, items in actions %}
<h3>{{ place }}</h3>
<ul>
{% for a in items %}<li><span class="sev sev-{{ a.severity }}">{{ a.severity_word }}</span> {{ a.rule }} {{ a.title }}{% if a.protocols %} ({{ a.protocols }}){% endif %}<br>{{ w.remediation }}: {{ a.remediation }}</li>
{% endfor %}</ul>
{% endfor %}{% else %}<p>{{ w.no_actions }}</p>{% endif %}

<h2 id="findings">{{ w.findings }}</h2>
<table>
<thead><tr>{% for h in findings.headers %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in findings.rows %}<tr>{% for c in row %}<td{% if c.severity %} class="sev sev-{{ c.severity }}"{% endif %}>{{ c.text }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>

{% if applied is not none %}<h2 id="applied">{{ w.applied }}</h2>
{% if applied.rows %}<table>
<thead><tr>{% for h in applied.headers %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in applied.rows %}<tr>{% for c in row %}<td>{{ c.text }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>{% else %}<p>{{ w.no_applied }}</p>{% endif %}{% endif %}

<h2 id="details">{{ w.details }}</h2>
{% for d in details %}
<details>
<summary><span class="sev sev-{{ d.severity }}">{{ d.severity_word }}</span> {{ d.rule }} {{ d.server }}{% if d.protocol %} {{ d.protocol }}{% endif %}: {{ d.title }}</summary>
<p>{{ d.message }}</p>
<p>{{ w.controls }}: {% if d.controls %}{% for c in d.controls %}{{ c.framework }} {{ c.id }} ({{ w[c.match] if c.match in ("exact", "closest") else c.match }}){% if not loop.last %}; {% endif %}{% endfor %}{% else %}{{ w.no_controls }}{% endif %}</p>
<p>{{ w.evidence }}:</p>
<pre>{{ d.evidence }}</pre>
</details>
{% endfor %}
</body>
</html>
"""

_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=False)
_PAGE = _ENV.from_string(_TEMPLATE)


def render_html(report: RunReport) -> str:
    """The report as one HTML page (text)."""
    labels = Labels(report.lang)
    w = _WORDS[report.lang]
    as_json = report_dict(report)
    run = as_json.get("run")
    if report.as_of is not None:
        heading = f"{labels('summary.as_of')} {report.as_of.time:%Y-%m-%d %H:%M:%S}"
    else:
        heading = f"{labels('summary.run')} {run['id'] if run else ''}"
    summary, trend_table = _summary_tables(summary_sheet(report, labels))
    return _PAGE.render(
        lang=report.lang,
        csp=CSP,
        w=w,
        heading=heading,
        colours=_COLOURS,
        summary=summary,
        trend_table=trend_table,
        seal=(run or as_json.get("as_of") or {}).get("seal"),
        trend=_trend_svg(report.trend, labels),
        actions=_actions(report, labels, w["site_level"]),
        findings=_table(findings_sheet(report, labels)),
        # a run's window; the organisation view has none
        applied=_table(applied_changes_sheet(report, labels)) if report.as_of is None else None,
        details=list(_details(report, as_json["findings"], labels)),
    )


def write_html(report: RunReport, stream: Any) -> None:
    stream.write(render_html(report))

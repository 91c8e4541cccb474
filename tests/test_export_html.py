"""Issue 17 item 5: `report --format html`, one self-contained page, checked in a real headless
Chromium (Debian's `chromium`): hostile server text renders as text, nothing of it runs, and
the Content-Security-Policy stops a script even where one got into the page."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from chromium_cdp import Browser
from click.testing import CliRunner
from reportdata import HOSTILE_VALUES, sample_report
from test_export_ocsf import _history

from scanner.cli import cli
from scanner.report.export_html import CSP, render_html
from scanner.report.write import render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",  # in CI a missing browser fails the test
    reason="chromium is not installed: apt-get install --no-install-recommends chromium to run these checks",
)
TITLE = "cas-audit report"
# payloads that would run, load or break out of their place if they were not escaped
BROWSER_PAYLOADS = (
    '"><img src=x onerror="document.title=\'pwned-img\'">',
    "<script>document.title='pwned-script';document.body.setAttribute('data-pwned','1')</script>",
    "</pre></td></table><svg onload=\"document.title='pwned-svg'\">",
    "<a href=\"javascript:document.title='pwned-link'\">click</a>",
    "</style><style>body{display:none}</style>",
    "<iframe src=\"data:text/html,<script>parent.document.title='pwned-frame'</script>\"></iframe>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:document.title='pwned-meta'\">",
    *HOSTILE_VALUES,
)
HOSTILE = " ".join(BROWSER_PAYLOADS)


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def elements(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium for the module's pages, each loaded in a tab of its own."""
    assert CHROMIUM is not None, "chromium is not installed (CI=true: the browser checks must run)"
    browser = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.close()


def dump_dom(browser: Browser, page: Path) -> str:
    """The page's DOM after Chromium loaded it and ran whatever it would run (2 s virtual time)."""
    return browser.dump_dom(page.as_uri())


def test_one_file_with_csp_and_no_script_or_external_resource() -> None:
    html = render_html(sample_report("en"))
    parsed = elements(html)
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP.replace(chr(39), "&#39;")}">' in html
    assert "script-src" not in CSP and "default-src 'none'" in CSP
    assert "script" not in parsed.tags and "link" not in parsed.tags and "img" not in parsed.tags
    assert not [a for a in parsed.attrs if a.startswith("on") or a in ("src", "href")]
    assert "svg" in parsed.tags and "polyline" in parsed.tags  # the trend, inline


@pytest.mark.parametrize("lang", ["en", "de"])
def test_sections_in_the_report_language(lang: str) -> None:
    report = sample_report(lang)
    html = render_html(report)
    words = {"en": ["Summary", "Action items per server", "Evidence and controls", "Seal of the run"],
             "de": ["Übersicht", "Maßnahmen je Server", "Nachweise und Kontrollen", "Siegel des Laufs"]}[lang]
    for word in words:
        assert word in html
    for f in report.findings:
        assert f.message.replace("'", "&#39;").replace('"', "&#34;") in html or f.message in html
    # every server with an active finding has its action items, from the rule's remediation
    servers = {f.server for f in report.findings if f.active and f.server}
    for server in servers:
        assert f"<h3>{server}</h3>" in html
    assert all(f.remediation in html for f in report.findings if f.active)


def test_hostile_text_is_escaped_in_the_markup() -> None:
    html = render_html(sample_report("en", hostile=HOSTILE))
    parsed = elements(html)
    assert set(parsed.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "table",
                                "thead", "tbody", "tr", "th", "td", "p", "ul", "li", "br", "span", "details",
                                "summary", "pre", "svg", "line", "text", "polyline", "circle"}
    assert not [a for a in parsed.attrs if a.startswith("on") or a in ("src", "href")]
    assert any(HOSTILE in t for t in parsed.texts)  # the payload, whole, as text


@pytest.mark.slow  # headless Chromium (one for the module, a tab a page)
@needs_chromium
def test_hostile_payloads_render_as_text_in_chromium_and_nothing_runs(chromium: Browser, tmp_path: Path) -> None:
    page = tmp_path / "hostile.html"
    page.write_bytes(render(sample_report("en", hostile=HOSTILE), "html"))
    dom = dump_dom(chromium, page)
    parsed = elements(dom)
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is not None and title.group(1).startswith(TITLE)
    assert "pwned" not in title.group(1)
    assert re.search(r"<body>", dom)  # no attribute written onto it
    assert "data-pwned" not in parsed.attrs
    assert not {"script", "img", "iframe", "a", "link"} & set(parsed.tags)
    assert "svg" in parsed.tags  # only the trend's own
    assert not [a for a in parsed.attrs if a.startswith("on") or a in ("src", "href")]
    # rendered as text, whole (HTML parsing turns a carriage return into a line feed)
    assert any(HOSTILE.replace("\r", "\n") in t for t in parsed.texts)


@pytest.mark.slow  # headless Chromium (one for the module, a tab a page)
@needs_chromium
def test_the_content_security_policy_stops_a_script_that_got_in(chromium: Browser, tmp_path: Path) -> None:
    """Defence in depth: a script put into the page raw (as if escaping had failed) does not
    run under the page's CSP; without the CSP the same page runs it (the check can fail)."""
    html = render_html(sample_report("en"))
    injected = html.replace("<body>", "<body><script>document.title='pwned-raw'</script>", 1)
    with_csp = tmp_path / "with-csp.html"
    with_csp.write_text(injected, "utf-8")
    without = tmp_path / "without-csp.html"
    without.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", injected), "utf-8")
    assert "<title>pwned-raw</title>" in dump_dom(chromium, without)
    dom = dump_dom(chromium, with_csp)
    assert "pwned-raw" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)  # type: ignore[union-attr]


# Measures the rendered layout in the page's own browser and writes it into the DOM. Run on a
# copy of the page without its CSP (which rightly forbids every script).
_MEASURE = """<script>
window.addEventListener('load', () => {
  const box = e => e.getBoundingClientRect();
  const after = (a, b) => a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING;
  const start = document.getElementById('summary'), end = document.getElementById('seal');
  const summary = [...document.querySelectorAll('table')].filter(t => after(start, t) && after(t, end));
  const runs = document.querySelector('table.trend');
  const wider = [];
  for (const t of summary) {
    const head = box(t.rows[0]);
    for (const r of [...t.rows].filter(r => r.cells.length)) {
      const last = box(r.cells[r.cells.length - 1]);
      if (r.cells.length !== t.rows[0].cells.length || last.right > head.right + 0.5) wider.push(r.textContent);
    }
  }
  const out = {tables: summary.length, wider: wider,
               summary_bottom: Math.max(...summary.map(t => box(t).bottom)),
               trend_top: box(document.getElementById('trend')).top,
               trend_table_top: runs ? box(runs).top : null,
               svg_bottom: box(document.querySelector('svg')).bottom};
  const pre = document.createElement('pre');
  pre.id = 'layout';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.slow  # headless Chromium (one for the module, a tab a page)
@needs_chromium
@pytest.mark.parametrize("lang", ["en", "de"])
def test_the_summary_tables_stay_apart_from_the_trend(chromium: Browser, tmp_path: Path, lang: str) -> None:
    """The Summary's blocks are tables no row of which is wider than its header, all above the
    trend's heading; the trend's table of runs sits under its chart (measured in Chromium)."""
    html = render_html(sample_report(lang))
    page = tmp_path / "layout.html"
    page.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
                    .replace("</body>", _MEASURE + "</body>", 1), "utf-8")
    found = re.search(r'<pre id="layout">(.*?)</pre>', dump_dom(chromium, page), re.S)
    assert found is not None, "the measuring script did not run"
    layout = json.loads(found.group(1))
    assert layout["wider"] == []  # before: the trend's runs ran on in the summary's table
    assert layout["tables"] == 3  # items, by severity, by site
    assert layout["summary_bottom"] < layout["trend_top"] < layout["svg_bottom"] <= layout["trend_table_top"]


@pytest.mark.parametrize("lang", ["en", "de"])
def test_report_command_writes_html_for_a_run_and_the_organisation_view(
        sqlite_url: str, tmp_path: Path, lang: str) -> None:
    _history(sqlite_url)
    out = tmp_path / "run.html"
    runner = CliRunner()
    result = runner.invoke(cli, ["report", "--db", sqlite_url, "--format", "html", "--lang", lang,
                                 "--out", str(out)], prog_name="cas-audit")
    assert result.exit_code == 0, result.output
    assert "CAS01" in out.read_text("utf-8") and 'http-equiv="Content-Security-Policy"' in out.read_text("utf-8")
    view = runner.invoke(cli, ["report", "--db", sqlite_url, "--as-of", "now", "--format", "html", "--lang", lang,
                               "--out", "-"], prog_name="cas-audit")
    assert view.exit_code == 0, view.output
    assert view.stdout.startswith("<!DOCTYPE html>") and "CAS03" in view.stdout
    # the rules' controls and the run's seal, as the JSON report has them
    as_json = json.loads(runner.invoke(cli, ["report", "--db", sqlite_url, "--format", "json"],
                                       prog_name="cas-audit").stdout)
    page = out.read_text("utf-8")
    for control in as_json["findings"][0]["controls"]:
        assert f"{control['framework']} {control['id']} (" in page
    if as_json["run"].get("seal"):
        assert f'<p class="seal">{as_json["run"]["seal"]}</p>' in page
    # an existing file is replaced only with --force (safefile)
    again = runner.invoke(cli, ["report", "--db", sqlite_url, "--format", "html", "--out", str(out)],
                          prog_name="cas-audit")
    assert again.exit_code == 2

"""Two lab scans in this process, the second after a change of the fleet, and the second
run's reports in every format and both languages: what the "not evaluated" tests read
(tests/test_event_log_gaps.py, test_service_unread.py, test_restart_unread.py)."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from test_export_ocsf import validate

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy
from scanner.lab.fleet_model import Fleet
from scanner.lab.serve import Lab
from scanner.report.build import build_report
from scanner.report.labels import Labels
from scanner.report.summary import summarise, summary_lines
from scanner.report.write import render
from scanner.scan import run_scan
from scanner.store.repo import Store, open_store


def scan_twice(folder: Path, fleet: Fleet, second: Callable[[Fleet], Fleet], *, policy: Policy | None = None,
               extra: Callable[[Store], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Scan `fleet`, then `second(fleet)`; return the first run's JSON ("first"), the second
    run's end-of-scan summary ("summary") and its reports: "json-en", "xlsx-de", "csv-en"
    (rows), "ocsf-de" (validated lines), "html-en", ...; plus what `extra(store)` adds."""
    store = open_store(f"sqlite:///{folder / 'history.db'}")
    try:
        with Lab(fleet) as lab:
            lab.write_inventory(folder / "inventory.toml")
            inventory = load_inventory(folder / "inventory.toml")
            for scan in range(2):
                if scan == 1:
                    lab.replace_fleet(second(fleet))
                outcome = run_scan(inventory, store=store, password="lab-password",
                                   policy=policy or Policy.default(), catalog=load_catalog(),
                                   concurrency=len(fleet.servers), timeout_s=30)
        out: dict[str, Any] = {"first": json.loads(render(build_report(store, outcome.run_id - 1), "json")),
                               "summary": summary_lines(summarise(store, outcome.run_id))}
        if extra is not None:
            out.update(extra(store))
        for lang in ("en", "de"):
            report = build_report(store, outcome.run_id, lang=lang)
            out[f"json-{lang}"] = json.loads(render(report, "json"))
            out[f"xlsx-{lang}"] = load_workbook(io.BytesIO(render(report, "xlsx")))
            out[f"csv-{lang}"] = list(csv.reader(io.StringIO(render(report, "csv").decode("utf-8-sig"))))
            lines = render(report, "ocsf").decode("utf-8")
            out[f"ocsf-{lang}"] = validate(lines) if lines else []
            out[f"html-{lang}"] = render(report, "html").decode("utf-8")
        return out
    finally:
        store.close()


def rows(table: list[list[Any]]) -> list[dict[str, Any]]:
    """A table whose first row names the columns, as one dict per further row."""
    return [dict(zip(table[0], r, strict=True)) for r in table[1:]]


def assert_not_evaluated_rows(findings: list[dict[str, Any]], labels: Labels, *, rule: str, server: str,
                              message: Callable[[Labels, str], str], fix: str) -> None:
    """The Findings sheet's or the CSV's rows of `rule`: one "not evaluated" row per protocol
    of `server`, with no severity and the remediation text `fix` (a label key)."""
    gaps = [r for r in findings if r[labels("col.rule")] == rule]
    assert [(r[labels("col.server")], r[labels("col.protocol")], r[labels("col.state")], r[labels("col.message")])
            for r in gaps] == [(server, labels.word("protocol", p), labels("note.not_evaluated"), message(labels, p))
                               for p in ("pop3", "imap4")]
    assert {r[labels("col.severity")] or None for r in gaps} == {None}
    assert {r[labels("col.remediation")] for r in gaps} == {labels(fix)}


def assert_not_evaluated_in_tables(reports: dict[str, Any], lang: str, *, rule: str, server: str,
                                   message: Callable[[Labels, str], str], fix: str) -> None:
    """`assert_not_evaluated_rows` on the workbook's Findings sheet and on the CSV of `lang`."""
    labels = Labels(lang)
    sheet = reports[f"xlsx-{lang}"][labels.sheet("findings")]
    for table in ([list(r) for r in sheet.iter_rows(values_only=True)], reports[f"csv-{lang}"]):
        assert_not_evaluated_rows(rows(table), labels, rule=rule, server=server, message=message, fix=fix)


def assert_not_evaluated_in_html(reports: dict[str, Any], lang: str, *, message: Callable[[Labels, str], str],
                                 fix: str) -> None:
    """The HTML report of `lang` names the gap of each protocol and its remediation `fix`."""
    labels = Labels(lang)
    page = html.unescape(reports[f"html-{lang}"])
    for protocol in ("pop3", "imap4"):
        assert message(labels, protocol) in page
    assert labels(fix) in page


def not_evaluated_ocsf(reports: dict[str, Any], lang: str, *, rule: str, server: str, reason: str,
                       message: Callable[[Labels, str], str]) -> list[dict[str, Any]]:
    """The OCSF lines of `rule` in `lang`: one Warning "not-evaluated" line per protocol of
    `server`, with the gap's message, its `reason` as evidence and a uid each; returned for the
    caller's own checks."""
    labels = Labels(lang)
    gaps = [e for e in reports[f"ocsf-{lang}"] if e["finding_info"]["types"] == [rule]]
    assert [(e["resources"][0]["name"], e["resources"][0]["data"]["protocol"]) for e in gaps] == [
        (server, "pop3"), (server, "imap4")]
    for event, protocol in zip(gaps, ("pop3", "imap4"), strict=True):
        assert (event["compliance"]["status"], event["compliance"]["status_id"]) == ("Warning", 2)
        assert event["status_detail"] == "not-evaluated" and event["message"] == message(labels, protocol)
        assert event["evidences"][0]["data"]["reason"] == reason
    assert len({e["finding_info"]["uid"] for e in gaps}) == 2
    return gaps

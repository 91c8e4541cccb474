"""Issue 17 item 4: `report --format ocsf`, JSON Lines of OCSF Compliance Findings (class 2003).

Every line is validated against OCSF 1.5.0 as Prowler's py-ocsf-models (0.10) models it, and
must hold no key those models do not know, except the OCSF 1.5.0 attributes they lack
(listed below with their source).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from py_ocsf_models import OCSF_VERSION as MODELS_OCSF_VERSION
from py_ocsf_models.events.findings.compliance_finding import ComplianceFinding
from reportdata import HOSTILE_VALUES, sample_report
from test_store import server_obs

from scanner.cli import cli
from scanner.report.export_ocsf import OCSF_VERSION, finding_uid
from scanner.report.write import render
from scanner.store.repo import FindingRow, open_store

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
# OCSF 1.5.0 attributes that py-ocsf-models 0.10 does not model: the compliance object's
# status (https://schema.ocsf.io/1.5.0/objects/compliance: status, status_code,
# status_detail, status_id)
NOT_MODELLED = {("compliance", "status")}


def _unknown_keys(line: Any, dumped: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Keys of `line` that the validated model dropped (pydantic ignores unknown keys)."""
    if isinstance(line, dict) and isinstance(dumped, dict):
        found: list[tuple[str, ...]] = []
        for key, value in line.items():
            if key not in dumped:
                found.append((*path, key))
            elif path[-1:] not in (("data",), ("unmapped",)):  # free-form objects
                found.extend(_unknown_keys(value, dumped[key], (*path, key)))
        return found
    if isinstance(line, list) and isinstance(dumped, list):
        return [k for a, b in zip(line, dumped, strict=True) for k in _unknown_keys(a, b, path)]
    return []


def validate(text: str) -> list[dict[str, Any]]:
    """Every line parsed and validated; the parsed lines."""
    assert text.endswith("\n") and "\n\n" not in text
    events = []
    for line in text.splitlines():
        event = json.loads(line)
        model = ComplianceFinding.model_validate(event)
        dumped = model.model_dump(mode="json", exclude_unset=True)
        unknown = set(_unknown_keys(event, dumped)) - NOT_MODELLED
        assert not unknown, f"keys outside OCSF {MODELS_OCSF_VERSION}: {sorted(unknown)}"
        events.append(event)
    return events


def test_the_models_are_the_version_we_write() -> None:
    assert MODELS_OCSF_VERSION == OCSF_VERSION == "1.5.0"


@pytest.mark.parametrize("lang", ["en", "de"])
def test_one_valid_compliance_finding_per_finding(lang: str) -> None:
    report = sample_report(lang)
    lines = validate(render(report, "ocsf").decode("utf-8"))
    events = [e for e in lines if e["activity_id"] == 1]
    assert len(events) == len(report.findings) > 0
    # then one Close per resolved finding; this one's first-seen time is unknown: its uid says so
    closed = [e for e in lines if e["activity_id"] == 3]
    assert len(closed) == len(report.resolved) == 1 and closed[0]["unmapped"]["first_seen_known"] is False
    assert "first_seen_time" not in closed[0]["finding_info"]
    for event, f in zip(events, report.findings, strict=True):
        assert (event["class_uid"], event["category_uid"], event["type_uid"]) == (2003, 2, 200301)
        assert event["metadata"]["version"] == "1.5.0"
        assert event["metadata"]["product"] == {"name": "cas-audit", "vendor_name": "cas-audit",
                                                "version": report.run.tool_version if report.run else None,
                                                "lang": lang}
        assert event["message"] == f.message  # the report's language
        assert event["finding_info"]["title"] == f.title
        assert event["finding_info"]["uid"] == finding_uid(f)
        assert event["compliance"]["control"] == f"{f.rule} {f.title}"
        assert event["resources"][0]["name"] == (f.server if f.server is not None else f.site)
        assert event["resources"][0]["data"] == {"site": f.site, "protocol": f.protocol}
        assert event["remediation"]["desc"] == f.remediation
        assert event["time"] == int(report.run.finished_at.timestamp() * 1000)  # type: ignore[union-attr]
        assert event["unmapped"]["state"] == f.state
    by_rule = {e["finding_info"]["types"][0]: e for e in events}
    # severity mapped to OCSF's severity_id
    assert {(f.severity, e["severity_id"]) for f, e in zip(report.findings, events, strict=True)} <= {
        ("info", 1), ("low", 2), ("medium", 3), ("high", 4), ("critical", 5)}
    # a server that could not be scanned yields no result (Warning), the others fail
    assert by_rule["XS-011"]["compliance"]["status_id"] == 2
    assert by_rule["XS-001"]["compliance"] == {**by_rule["XS-001"]["compliance"], "status": "Fail", "status_id": 3}
    # a waived finding is suppressed, with its waiver
    waived = [e for e in events if e["status_detail"] == "waived"]
    assert waived and all(e["status_id"] == 3 and e["unmapped"]["waiver"] for e in waived)
    # the evidence is the JSON report's
    as_json = json.loads(render(report, "json"))
    assert [e["evidences"][0]["data"] for e in events] == [f["evidence"] for f in as_json["findings"]]


def test_the_uid_is_stable_across_runs_and_distinct_per_finding() -> None:
    first = [e for e in validate(render(sample_report(), "ocsf").decode()) if e["activity_id"] == 1]
    again = [e for e in validate(render(sample_report("de"), "ocsf").decode()) if e["activity_id"] == 1]
    assert [e["finding_info"]["uid"] for e in first] == [e["finding_info"]["uid"] for e in again]
    uids = [e["finding_info"]["uid"] for e in first]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("hostile", [*HOSTILE_VALUES, '"}\n{"class_uid":1', "<script>alert(1)</script>"])
def test_hostile_server_text_stays_inside_its_strings(hostile: str) -> None:
    report = sample_report(hostile=hostile)
    text = render(report, "ocsf").decode("utf-8")
    events = validate(text)
    # one line per finding, one for CAS02's Application log its own error says was not read,
    # one per resolved finding
    assert len(events) == len(text.splitlines()) == len(report.findings) + 1 + len(report.resolved)
    assert all(e["class_uid"] == 2003 for e in events)
    assert any(e["resources"][0]["name"] == hostile for e in events)
    (unread,) = [e for e in events if e["status_detail"] == "not-evaluated"]
    assert unread["evidences"][0]["data"]["reason"] == " ".join(hostile.split())  # white space as the notes keep it


def _history(url: str) -> tuple[int, int]:
    store = open_store(url)
    plan = [("CAS01", "cas01", "Berlin"), ("CAS03", "cas03", "Hamburg")]
    first = store.begin_run(planned=plan, tool_version="t", operator="o", scanning_host="h",
                            inventory_sha256="0" * 64, started_at=T0)
    store.record_server(first, server_obs("CAS01", start=T0))
    store.record_server(first, server_obs("CAS03", start=T0, scan_status="error", error_kind="refused",
                                          error="refused", protocols={}))
    store.finish_run(first, "partial", finished_at=T0 + timedelta(minutes=5))
    store.save_findings(first, [FindingRow(rule="XS-011", severity="high", state="new", server_name="CAS03",
                                           site="Hamburg", protocol=None, message="CAS03 could not be scanned.")],
                        [])
    later = T0 + timedelta(days=1)
    second = store.begin_run(planned=plan[:1], tool_version="t", operator="o", scanning_host="h",
                             inventory_sha256="0" * 64, started_at=later, site_filter="Berlin")
    store.record_server(second, server_obs("CAS01", start=later))
    store.finish_run(second, "complete", finished_at=later + timedelta(minutes=5))
    store.save_findings(second, [FindingRow(rule="XS-001", severity="high", state="new", server_name="CAS01",
                                            site="Berlin", protocol="pop3", message="x")], [])
    store.close()
    return first, second


@pytest.mark.parametrize("lang", ["en", "de"])
def test_report_command_writes_ocsf_for_a_run_and_for_the_organisation_view(
        sqlite_url: str, tmp_path: Path, lang: str) -> None:
    first, second = _history(sqlite_url)
    runner = CliRunner()
    by_run = runner.invoke(cli, ["report", "--db", sqlite_url, "--run", str(first), "--format", "ocsf",
                                 "--lang", lang, "--out", "-"], prog_name="cas-audit")
    assert by_run.exit_code == 0, by_run.output
    [event] = validate(by_run.stdout)
    assert event["finding_info"]["types"] == ["XS-011"] and event["unmapped"]["run_id"] == first
    assert event["time"] == int((T0 + timedelta(minutes=5)).timestamp() * 1000)

    out = tmp_path / "org.jsonl"
    view = runner.invoke(cli, ["report", "--db", sqlite_url, "--as-of", "2026-12-03T00:00:00Z", "--format", "ocsf",
                               "--lang", lang, "--out", str(out)], prog_name="cas-audit")
    assert view.exit_code == 0, view.output
    events = validate(out.read_text("utf-8"))
    assert sorted((e["finding_info"]["types"][0], e["unmapped"]["run_id"]) for e in events) == [
        ("XS-001", second), ("XS-011", first)]
    assert all(e["time"] == int(datetime(2026, 12, 3, tzinfo=UTC).timestamp() * 1000) for e in events)
    assert all(e["unmapped"]["as_of"] == "2026-12-03T00:00:00Z" for e in events)
    # the rule's controls from the catalog, and the run's seal, as the JSON report has them
    latest = runner.invoke(cli, ["report", "--db", sqlite_url, "--run", str(second), "--format", "ocsf",
                                 "--lang", lang], prog_name="cas-audit")
    [xs001] = validate(latest.stdout)
    as_json = json.loads(runner.invoke(cli, ["report", "--db", sqlite_url, "--run", str(second), "--format",
                                             "json"], prog_name="cas-audit").stdout)
    controls = as_json["findings"][0]["controls"]
    assert controls and xs001["unmapped"]["controls"] == controls
    assert xs001["compliance"]["requirements"] == [f"{c['framework']} {c['id']}" for c in controls]
    assert "NIST SP 800-53" in xs001["compliance"]["standards"]
    assert xs001["unmapped"].get("seal") == as_json["run"].get("seal")
    # the default goes to stdout, like json
    default = runner.invoke(cli, ["report", "--db", sqlite_url, "--format", "ocsf"], prog_name="cas-audit")
    assert default.exit_code == 0 and len(validate(default.stdout)) == 1


@pytest.mark.slow  # the demo: three scans of the lab organisation
def test_every_line_of_a_lab_organisations_reports_validates(tmp_path: Path) -> None:
    """Real scan output, not a fixture: every OCSF line of each demo run and of the
    organisation view, in both languages, validates, one line per finding of the JSON."""
    from scanner.demo import run_demo

    for _ in run_demo(tmp_path):
        pass
    db = f"sqlite:///{tmp_path / 'demo-history.db'}"
    runner = CliRunner()
    rules = set()
    opened: dict[tuple[str, int], set[str]] = {}
    closes = 0
    for lang in ("en", "de"):
        for where in (["--run", "1"], ["--run", "2"], ["--run", "3"], ["--as-of", "2099-01-01T00:00:00Z"]):
            args = ["report", "--db", db, *where, "--lang", lang]
            lines = runner.invoke(cli, [*args, "--format", "ocsf"], prog_name="cas-audit")
            assert lines.exit_code == 0, lines.output
            events = validate(lines.stdout)
            as_json = json.loads(runner.invoke(cli, [*args, "--format", "json"], prog_name="cas-audit").stdout)
            assert len(events) == len(as_json["findings"]) + len(as_json["not_evaluated"]) + len(
                as_json.get("resolved", []))
            if where[0] == "--run":
                run = int(where[1])
                opened[(lang, run)] = {e["finding_info"]["uid"] for e in events if e["activity_id"] == 1}
                closed = [e for e in events if e["activity_id"] == 3]
                assert len(closed) == len(as_json["resolved"])
                closes += len(closed)
                # each Close names the uid under which the previous run reported the finding
                assert all(e["finding_info"]["uid"] in opened.get((lang, run - 1), set()) for e in closed)
            rules |= {e["finding_info"]["types"][0] for e in events}
    assert len(rules) >= 10, sorted(rules)  # most of the catalog fires in the demo
    assert closes > 0  # and later runs resolve some

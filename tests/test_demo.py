"""`cas-audit demo` (run_demo) closes its history: no file of it stays open in the process,
whether the demo runs to its end or its caller stops reading early."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pslint
import pytest

from scanner.demo import DEMO_TICKET, UPGRADED_SERVER, run_demo
from scanner.store.changes import changes_between
from scanner.store.repo import open_store


def open_files_under(folder: Path) -> list[str]:
    """Files under `folder` this process still has open (Linux: /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target.startswith(str(folder)):
            found.append(target)
    return found


pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")


def test_a_demo_stopped_after_its_first_line_closes_its_history(tmp_path: Path) -> None:
    lines = run_demo(tmp_path)
    assert next(lines).startswith("lab: 9 simulated CAS")
    assert open_files_under(tmp_path)  # the history is open while the demo runs
    lines.close()
    assert open_files_under(tmp_path) == []


@pytest.mark.slow  # two scans of the lab organisation and six reports
def test_a_finished_demo_closes_its_history(tmp_path: Path) -> None:
    lines = list(run_demo(tmp_path))
    assert lines[-1].startswith("next: cas-audit history")
    # the single-file HTML report beside each workbook, in both languages
    for lang, heading in (("en", "Action items per server"), ("de", "Maßnahmen je Server")):
        [page] = tmp_path.glob(f"**/cas-audit-run-*-{lang}.html")
        assert page.with_suffix(".xlsx").exists()
        assert heading in page.read_text("utf-8")
    assert lines[-2].startswith("verify: the history's seal chain is intact (3 runs sealed")
    assert open_files_under(tmp_path) == []


@pytest.mark.slow  # the demo: three scans of the lab organisation and six reports
def test_the_demo_shows_the_whole_change_loop_on_one_server(tmp_path: Path) -> None:
    """plan -> review -> check -> apply (ticket, writing account, restart) -> a scan that
    verifies -> rollback checked and spelled out, in plain sentences, in that order."""
    lines = list(run_demo(tmp_path))
    text = "\n".join(lines)
    steps = ["fix plan: ", "review: ", "check: ", "apply: ", "third scan, to verify: ", "rollback: ", "verify: "]
    at = [next(i for i, line in enumerate(lines) if line.startswith(step)) for step in steps]
    assert at == sorted(at), text
    # the plan of the second scan, for the whole organisation, written for review
    plan_dir = tmp_path / "fix-plan"
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert plan["plan"]["run_id"] == 2
    assert {c["server"] for c in plan["changes"]} >= {UPGRADED_SERVER, "CAS03", "CAS06"}
    for names in plan["scripts"].values():
        for name in (names["apply"], names["rollback"]):
            source = (plan_dir / name).read_bytes().decode("utf-8-sig")
            assert pslint.syntax_errors(source) == [] and pslint.lint(source) == []
    # applied to the upgraded server only, recorded under the demo ticket with the writing account
    with open_store(f"sqlite:///{tmp_path / 'demo-history.db'}", read_only=True) as store:
        changes = changes_between(store, None, None)
        assert {(c.server_name, c.protocol, c.ticket, c.kind, c.result, c.restart) for c in changes} == {
            (UPGRADED_SERVER, p, DEMO_TICKET, "apply", "done", "restarted") for p in ("pop3", "imap4")}
        assert all(c.operator.endswith(" as fixer") and c.backup_path.endswith(".bak") for c in changes)
        # the third scan verifies: the reset is gone on that server, and nothing waits for a restart
        active = {(f.rule, f.server_name) for f in store.findings(3) if f.state in ("new", "persisting")}
        assert not {(rule, UPGRADED_SERVER) for rule in ("XS-002", "XS-003", "XS-004", "XS-005")} & active
        assert ("XS-005", "CAS06") in active  # the rest of the plan was not applied
    assert "  cas-audit fix rollback chg-1234 --inventory inventory.toml --ticket CHG-1234 --yes --username fixer" \
        in lines
    # the review shows the upgraded server's edit: the one value line, before and after
    assert any(line.startswith("  pop3 -") and 'value="false"' in line for line in lines)
    assert any(line.startswith("  pop3 +") and 'value="true"' in line for line in lines)
    assert "rollback: checked on CAS05, ready" in text
    assert f"XS-003/pop3 resolved by change {DEMO_TICKET}" in text  # as the reports of run 3 match them

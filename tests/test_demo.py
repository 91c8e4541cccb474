"""`cas-audit demo` (run_demo) closes its history: no file of it stays open in the process,
whether the demo runs to its end or its caller stops reading early."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scanner.demo import run_demo


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
    assert lines[-2].startswith("verify: the history's seal chain is intact (2 runs sealed")
    assert open_files_under(tmp_path) == []

"""Issue 14: `cas-audit history` (the list of runs) counts every run's active findings in
one query, not one full findings read per run (linear in the history: 1.0 s at 120 runs x
300 servers; bench/README.md, "history: the list of runs"). The counts are those
`facts.is_active` gives, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from click.testing import CliRunner
from rules_fixtures import T0
from sqlalchemy import Engine, event

from scanner.cli import cli
from scanner.facts import is_active
from scanner.store.repo import FindingRow, Store, open_store

STATES = ("new", "persisting", "waived", "waiver-expired")


def add_runs(store: Store, count: int) -> None:
    """`count` runs; run n saves n findings of CAS01..CASn, their states cycling through STATES."""
    for _ in range(count):
        run_id = store.begin_run(planned=[("CAS01", "cas01", "Berlin")], tool_version="t", operator="o",
                                 scanning_host="h", inventory_sha256="0" * 64, started_at=T0)
        findings = [FindingRow(rule="XS-001", severity="high", state=STATES[(run_id + n) % 4],
                               server_name=f"CAS{n:02d}", site="Berlin", protocol="pop3", message="m")
                    for n in range(1, run_id + 1)]
        store.save_findings(run_id, findings, [])
        store.finish_run(run_id, "complete", finished_at=T0)


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements every engine runs in the block."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def history(url: str) -> tuple[str, int]:
    with statements() as seen:
        result = CliRunner().invoke(cli, ["history", "--db", url], prog_name="cas-audit")
    assert result.exit_code == 0, result.output
    return result.stdout, len(seen)


def active_column(table: str) -> dict[int, int]:
    [header] = [[cell.strip() for cell in line.split("┃")[1:-1]] for line in table.splitlines() if line.startswith("┃")]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]
    return {int(row[0]): int(row[header.index("active findings")]) for row in rows}


def test_history_counts_active_findings_in_one_query(history_url: str) -> None:
    with open_store(history_url) as store:
        add_runs(store, 2)
        expected = {r.id: sum(is_active(f.state) for f in store.findings(r.id)) for r in store.runs()}
        assert expected == {1: 0, 2: 2}  # run 1's one finding is waived
        assert store.active_finding_counts() == {2: 2}  # runs without one are left out
    table, few = history(history_url)
    assert active_column(table) == expected

    with open_store(history_url) as store:
        add_runs(store, 6)
        expected = {r.id: sum(is_active(f.state) for f in store.findings(r.id)) for r in store.runs()}
        assert 0 < sum(expected.values()) < sum(range(1, 9))  # waived findings are left out
        assert store.active_finding_counts() == {run: n for run, n in expected.items() if n}
    table, many = history(history_url)
    assert active_column(table) == expected
    assert many == few  # the same statements for 8 runs as for 2

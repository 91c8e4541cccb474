"""Issue 14: usage errors of `prune` and `report --as-of` through click's CliRunner (in
process): a mistyped history for `prune --apply`, and dates no history can hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect

from scanner.cli import cli


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="cas-audit")


def usage_error(result: Result) -> str:
    """The one `error:` sentence of a clean exit 2."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "internal error" not in errors[0] and "Traceback" not in result.stderr
    return errors[0]


def test_prune_apply_on_a_mistyped_sqlite_path_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "history.db"
    result = run("prune", "--db", f"sqlite:///{missing}", "--before", "2025-11-01", "--apply")
    assert f"no cas-audit history at sqlite:///{missing}" in usage_error(result)
    assert not missing.parent.exists()


def test_prune_apply_on_an_empty_postgresql_database_creates_nothing(pg_url: str) -> None:
    result = run("prune", "--db", pg_url, "--before", "2025-11-01", "--apply")
    assert "no cas-audit history at" in usage_error(result)
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []  # no tables created
    finally:
        engine.dispose()


def test_prune_apply_on_an_existing_history_still_works(sqlite_history_url: str) -> None:
    url = sqlite_history_url
    result = run("prune", "--db", url, "--before", "2025-11-01", "--apply")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("removed 0 run(s)")


@pytest.mark.parametrize("args", [
    ("prune", "--before", "0001-01-01T00:00:00+01:00"),
    ("prune", "--before", "9999-12-31T23:59:59-01:00"),
    ("prune", "--before", "0001-01-01T00:00:00+01:00", "--apply"),
    ("report", "--as-of", "0001-01-01"),
    ("report", "--as-of", "0001-01-01T00:00:00+01:00"),
    ("report", "--as-of", "9999-12-31T23:59:59-01:00"),
    ("report", "--as-of", "now", "--stale-days", "999999999"),
    ("report", "--as-of", "now", "--stale-days", "99999999999999999999"),
], ids=lambda a: " ".join(a))
def test_extreme_dates_are_usage_errors(sqlite_history_url: str, args: tuple[str, ...]) -> None:
    url = sqlite_history_url
    message = usage_error(run(*args, "--db", url))
    assert "year" in message, message


@pytest.mark.parametrize("as_of", ["9999-12-31", "0001-01-08", "9999-12-31T23:59:59Z"])
def test_the_edges_of_the_calendar_that_exist_are_reports(sqlite_history_url: str, as_of: str) -> None:
    url = sqlite_history_url
    result = run("report", "--db", url, "--as-of", as_of, "--format", "json", "--out", "-")
    assert result.exit_code == 0, result.stderr

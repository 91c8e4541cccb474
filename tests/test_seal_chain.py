"""The history's seal chain: `cas-audit verify` on untouched histories and on histories
edited through SQL (a finding, an observation, a run deleted, two runs swapped), on SQLite
and PostgreSQL; prune's checkpoint; sealing what an upgrade finds; concurrent sealing."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from test_store import T0, failed_obs, new_run, server_obs

from scanner.cli import cli
from scanner.store import FindingRow, Store, open_store
from scanner.store.db import alembic_config, make_engine, upgrade_database
from scanner.store.retention import prune


def _finding(run_id: int, server: str, message: str) -> FindingRow:
    return FindingRow(rule="XS-001", severity="high", state="new", server_name=server, site="Berlin",
                      protocol="pop3", message=message, evidence={"raw_value": "true"},
                      first_seen_run_id=run_id, first_seen_at=T0,
                      waiver={"approver": "J. Weber, CISO", "expires": "2027-03-31"} if server == "CAS02" else None)


def add_run(store: Store, day: int, *, fail: bool = False) -> int:
    start = T0 + timedelta(days=day)
    run_id = new_run(store, ("CAS01", "CAS02"), started_at=start)
    second = failed_obs("CAS02", start=start) if fail else server_obs("CAS02", start=start)
    store.record_servers(run_id, [server_obs("CAS01", start=start), second])
    store.save_findings(run_id, [_finding(run_id, "CAS01", f"day {day}"), _finding(run_id, "CAS02", f"day {day}")],
                        [("XS-006", "CAS03", "imap4")])
    store.finish_run(run_id, "partial" if fail else "complete", finished_at=start + timedelta(minutes=5))
    return run_id


def _fill(url: str) -> None:
    with open_store(url) as store:
        for day in range(4):
            add_run(store, day, fail=day == 1)


@pytest.fixture(scope="module")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seal") / "template.db"
    _fill(f"sqlite:///{path}")
    return path


@pytest.fixture
def history(history_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Four sealed runs (run 2 partial); SQLite's copied from one built per module."""
    if history_url.startswith("sqlite"):
        copy = tmp_path / "copy.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), copy)
        return f"sqlite:///{copy}"
    _fill(history_url)
    return history_url


def verify(url: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["verify", "--db", url])
    return result.exit_code, result.output


def sql(url: str, *statements: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def test_an_untouched_history_verifies(history: str) -> None:
    code, out = verify(history)
    assert code == 0, out
    assert "intact: 4 link(s), 4 run(s) recomputed" in out


# each edit is what someone with write access to the database does by hand; run 2 is hit
EDITS = {
    "a finding's text": [
        "UPDATE documents SET body = replace(body, 'day 1', 'day 9') WHERE kind = 'finding' AND body LIKE '%day 1%'"],
    "a finding's row": ["UPDATE findings SET extra = '{}' WHERE id = (SELECT min(id) FROM findings WHERE run_id = 2)"],
    "a finding removed": ["DELETE FROM findings WHERE id = (SELECT max(id) FROM findings WHERE run_id = 2)"],
    "an observation row": [
        "UPDATE observations SET state_id = (SELECT min(o.state_id) FROM observations o) WHERE id = "
        "(SELECT max(o.id) FROM observations o JOIN server_scans s ON s.id = o.server_scan_id WHERE s.run_id = 2)"],
    "a refused logon": [
        "UPDATE refused_logons SET user_name = 'CONTOSO\\nobody' WHERE id = (SELECT min(r.id) FROM refused_logons r "
        "JOIN observations o ON o.id = r.observation_id JOIN server_scans s ON s.id = o.server_scan_id "
        "WHERE s.run_id = 2)"],
    "a server scan": ["UPDATE server_scans SET error_message = 'fine' WHERE run_id = 2 AND scan_status = 'error'"],
    "the run's status": ["UPDATE scan_runs SET status = 'complete' WHERE id = 2"],
    "a waiver applied": [
        "UPDATE documents SET body = replace(body, '2027-03-31', '2099-12-31') WHERE kind = 'finding'"
        " AND body LIKE '%day 1%'"],
    "a run deleted": ["UPDATE servers SET first_seen_run_id = NULL WHERE first_seen_run_id = 2",
                      "DELETE FROM scan_runs WHERE id = 2"],
    "two runs swapped": ["UPDATE seal_chain SET position = -1 WHERE run_id = 2",
                         "UPDATE seal_chain SET position = 2 WHERE run_id = 3",
                         "UPDATE seal_chain SET position = 3 WHERE run_id = 2"],
    "a run's link deleted": ["DELETE FROM seal_chain WHERE run_id = 2"],
    # values of a type or form cas-audit never writes (SQLite keeps what it is given): verify
    # names the run, as for any other edit, instead of failing on the value (exit 4)
    "a scan's time that is no time": ["UPDATE server_scans SET started_at = 'yesterday' WHERE run_id = 2"],
    "a run's time as a number": ["UPDATE scan_runs SET finished_at = 12345 WHERE id = 2"],
    "a run's time out of range": ["UPDATE scan_runs SET heartbeat_at = '99999-01-01 00:00:00' WHERE id = 2"],
    "a protocol as bytes": [
        "UPDATE observations SET protocol = X'00ff' WHERE id = (SELECT min(o.id) FROM observations o "
        "JOIN server_scans s ON s.id = o.server_scan_id WHERE s.run_id = 2)"],
    "a finding's extra as bytes": ["UPDATE findings SET extra = X'7b7d' WHERE id = (SELECT min(id) FROM findings "
                                   "WHERE run_id = 2)"],
    "a finding's text as a number": ["UPDATE documents SET body = 42 WHERE kind = 'finding' AND body LIKE '%day 1%'"],
}


# the edits the issue names run on PostgreSQL too (history_url), every edit on SQLite
DONE_WHEN = ("a finding's text", "an observation row", "a run deleted", "two runs swapped")


@pytest.mark.parametrize("edit", DONE_WHEN)
def test_an_edit_through_sql_is_named(history: str, edit: str) -> None:
    check_edit(history, edit)


@pytest.mark.parametrize("edit", [edit for edit in EDITS if edit not in DONE_WHEN])
def test_more_edits_on_sqlite(sqlite_url: str, request: pytest.FixtureRequest, tmp_path: Path, edit: str) -> None:
    copy = tmp_path / "copy.db"
    shutil.copyfile(request.getfixturevalue("_sqlite_template"), copy)
    check_edit(f"sqlite:///{copy}", edit)


def check_edit(history: str, edit: str) -> None:
    sql(history, *EDITS[edit])
    code, out = verify(history)
    assert code == 1, out
    named = "run 3" if edit == "two runs swapped" else "run 2"  # run 3 now stands where run 2 was sealed
    assert named in " ".join(out.split()), out


def test_a_config_file_edited_in_place_is_detected(history: str) -> None:
    sql(history, "UPDATE config_blobs SET content = substr(content, 2)")  # every stored file loses a byte
    code, out = verify(history)
    assert code == 1 and "run 1" in out, out


def test_a_run_added_outside_cas_audit_is_named(history: str) -> None:
    sql(history, "INSERT INTO scan_runs (id, started_at, finished_at, status, servers_planned, servers_scanned, "
                 "servers_failed, tool_version, operator, scanning_host, inventory_sha256) VALUES (99, "
                 "'2026-11-30 00:00:00', '2026-11-30 00:01:00', 'complete', 0, 0, 0, '0.1.0', 'x', 'y', 'z')")
    code, out = verify(history)
    assert code == 1 and "run 99 is finished but not sealed" in " ".join(out.split()), out


def test_prune_keeps_a_checkpoint(history: str) -> None:
    with open_store(history) as store:
        result = prune(store, T0 + timedelta(days=2), apply=True, now=T0 + timedelta(days=5))
        assert [r.id for r in result.removed] == [1, 2]
        add_run(store, 5)  # sealed after the checkpoint
    code, out = verify(history)
    assert code == 0, out
    assert "intact: 6 link(s), 3 run(s) recomputed, 2 removed by prune" in out

    sql(history, "UPDATE seal_chain SET body = replace(body, '\"digest\"', '\"sha\"') WHERE kind = 'checkpoint'")
    code, out = verify(history)
    assert code == 1 and "run 1 was removed from the history without a prune checkpoint" in " ".join(out.split())


def test_a_run_aborted_by_the_next_command_is_sealed_and_stays_as_sealed(history_url: str) -> None:
    with open_store(history_url) as store:
        run_id = new_run(store, ("CAS01",), started_at=T0)
        store.record_server(run_id, server_obs("CAS01"))
        later = datetime.now(UTC) + timedelta(days=1)  # no heartbeat for a day (by the database's clock)
        assert store.abort_dead_runs(now=later) == [run_id]
        sealed = store.run_seal(run_id)
        assert sealed is not None
        # the scanner comes back and carries on: nothing of it reaches the sealed run
        store.record_server(run_id, server_obs("CAS02"))
        store.save_findings(run_id, [_finding(run_id, "CAS01", "late")], [])
        assert store.finish_run(run_id, "complete") == "aborted"
        assert store.findings(run_id) == [] and store.run_seal(run_id) == sealed
    assert verify(history_url)[0] == 0


@pytest.mark.slow
def test_an_upgrade_seals_the_runs_recorded_before_the_chain(sqlite_url: str) -> None:
    from alembic import command

    with open_store(sqlite_url) as store:
        add_run(store, 0)
        add_run(store, 1, fail=True)
        running = new_run(store, ("CAS01",))  # still running: sealed when it finishes
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0008")
    engine.dispose()
    upgrade_database(sqlite_url)
    code, out = verify(sqlite_url)
    assert code == 0 and "intact: 2 link(s)" in out, out
    with open_store(sqlite_url) as store:
        store.finish_run(running, "complete")
    assert "intact: 3 link(s)" in verify(sqlite_url)[1]


@pytest.mark.postgres
def test_concurrent_scanners_on_postgresql_seal_in_order(pg_url: str) -> None:
    upgrade_database(pg_url)
    stores = [open_store(pg_url), open_store(pg_url)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def scanner(store: Store, first_day: int) -> None:
        try:
            start.wait()
            for day in range(first_day, first_day + 3):
                add_run(store, day)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=scanner, args=(store, 10 * n)) for n, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    code, out = verify(pg_url)
    assert code == 0 and "intact: 6 link(s), 6 run(s) recomputed" in out, out
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        order = conn.execute(text("SELECT s.run_id FROM seal_chain s JOIN scan_runs r ON r.id = s.run_id "
                                  "ORDER BY s.position")).scalars().all()
        finished = conn.execute(text("SELECT id FROM scan_runs ORDER BY finished_at, id")).scalars().all()
    engine.dispose()
    assert sorted(order) == sorted(finished) and len(order) == 6


def test_changes_recorded_between_runs_are_sealed_with_the_next_run(history_url: str) -> None:
    """A `fix apply` change (issue 16's `changes` rows) belongs to the next run's link."""
    with open_store(history_url) as store:
        add_run(store, 0)
        sql(history_url, "INSERT INTO changes (ticket, kind, operator, server_name, protocol, config_path, "
                         "before_sha256, after_sha256, restart, result, changed_at) VALUES ('CHG-1', 'apply', "
                         "'CONTOSO\\admin', 'CAS01', 'pop3', 'C:\\x.config', 'aa', 'bb', 'restarted', 'done', "
                         "'2026-11-22 10:00:00')")
        add_run(store, 2)
        add_run(store, 3)
    assert verify(history_url)[0] == 0
    sql(history_url, "UPDATE changes SET ticket = 'CHG-2'")
    code, out = verify(history_url)
    assert code == 1 and "run 2 no longer matches its seal" in " ".join(out.split()), out

"""Which recorded change resolved a finding (scanner/report/applied.py): only an apply that
took effect and is what the next scan found; a later rollback undoes it; the latest one
counts; a restart resolves XS-005 only."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from scanner.judge.explained import between_scans, resolving_change, writing_change
from scanner.store.changes import ChangeRecord

AT = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
BEFORE, AFTER = "a" * 64, "b" * 64
APPLIED = ChangeRecord(
    ticket="CHG-1", kind="apply", operator="me as fixer", server_name="CAS01", protocol="pop3",
    config_path="C:\\x.config", before_sha256=BEFORE, after_sha256=AFTER, found_sha256=BEFORE,
    backup_path="C:\\x.config.CHG-1-20261206T030000Z.bak", restart="none", result="done", message="",
    changed_at=AT)


def _later(change: ChangeRecord, minutes: int, **fields: object) -> ChangeRecord:
    return replace(change, changed_at=change.changed_at + timedelta(minutes=minutes), **fields)  # type: ignore[arg-type]


def test_an_applied_change_whose_file_the_scan_found_resolved_the_value_rules() -> None:
    for rule in ("XS-001", "XS-002", "XS-003"):
        assert resolving_change(rule, AFTER, [APPLIED]) == APPLIED
    # not a rule a change of the file settles
    assert resolving_change("XS-004", AFTER, [APPLIED]) == APPLIED  # a hand edit the change put back
    assert resolving_change("XS-010", AFTER, [APPLIED]) is None
    assert resolving_change("XS-008", AFTER, [APPLIED]) is None


def test_a_file_that_is_not_the_one_the_change_wrote_was_not_resolved_by_it() -> None:
    assert resolving_change("XS-001", "c" * 64, [APPLIED]) is None  # edited again after the change
    assert resolving_change("XS-001", None, [APPLIED]) is None


def test_only_a_change_that_wrote_the_file_counts() -> None:
    for result in ("already", "changed", "failed", "refused", "error", "ready"):
        assert resolving_change("XS-001", AFTER, [replace(APPLIED, result=result)]) is None, result


def test_a_later_rollback_undoes_it_and_a_later_apply_counts_again() -> None:
    rollback = _later(APPLIED, 5, kind="rollback", result="done")
    assert resolving_change("XS-001", AFTER, [APPLIED, rollback]) is None
    failed_rollback = replace(rollback, result="changed")
    assert resolving_change("XS-001", AFTER, [APPLIED, failed_rollback]) == APPLIED
    again = _later(APPLIED, 10, ticket="CHG-2")
    assert resolving_change("XS-001", AFTER, [APPLIED, rollback, again]) == again


def test_the_latest_change_that_took_effect_counts() -> None:
    second = _later(APPLIED, 5, ticket="CHG-2")
    assert resolving_change("XS-002", AFTER, [APPLIED, second]) == second
    assert resolving_change("XS-002", AFTER, [APPLIED, replace(second, result="failed")]) == APPLIED


def test_a_restart_resolves_the_pending_restart() -> None:
    assert resolving_change("XS-005", AFTER, [APPLIED]) is None  # written, not restarted
    restarted = replace(APPLIED, restart="restarted")
    assert resolving_change("XS-005", AFTER, [restarted]) == restarted
    assert resolving_change("XS-005", "c" * 64, [restarted]) is None  # the file changed since
    only_restart = replace(APPLIED, before_sha256="", after_sha256="", result="ready", restart="restarted")
    assert resolving_change("XS-005", "c" * 64, [only_restart]) == only_restart
    assert resolving_change("XS-005", AFTER, [replace(only_restart, restart="failed")]) is None


def test_the_change_that_wrote_the_file_found_explains_a_changed_value() -> None:
    assert writing_change(AFTER, [APPLIED]) == APPLIED
    assert writing_change("c" * 64, [APPLIED]) is None  # edited again since: unexplained
    assert writing_change(AFTER, [replace(APPLIED, result="failed")]) is None
    rollback = _later(APPLIED, 5, kind="rollback", result="done")
    assert writing_change(BEFORE, [APPLIED, rollback]) == rollback  # a rollback writes the before bytes back
    assert writing_change(AFTER, [APPLIED, rollback]) is None
    restart_only = _later(APPLIED, 10, before_sha256="", after_sha256="", result="ready", restart="restarted")
    assert writing_change(AFTER, [APPLIED, restart_only]) == APPLIED  # a restart writes no file


def test_changes_between_two_scans_of_one_server_and_protocol() -> None:
    other_server = replace(APPLIED, server_name="CAS02")
    other_protocol = replace(APPLIED, protocol="imap4")
    changes = [APPLIED, other_server, other_protocol]
    assert between_scans(changes, "cas01", "POP3", AT - timedelta(hours=1), AT) == [APPLIED]  # names: any case
    assert between_scans(changes, "CAS01", "pop3", AT, AT + timedelta(hours=1)) == []  # before the previous scan
    # scan times are whole seconds: recorded within the second the scan finished is before its end
    assert between_scans(changes, "CAS01", "pop3", None, AT - timedelta(microseconds=1)) == [APPLIED]
    assert between_scans(changes, "CAS01", "pop3", None, AT - timedelta(seconds=1)) == []

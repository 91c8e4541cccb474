"""The seal encoding does not move: a fixed history, written row by row, has the digests and
seals pinned below, on SQLite and PostgreSQL. A history sealed by an earlier version of
cas-audit must keep verifying after `verify` or sealing is rewritten (docs/seal.md,
version `cas-audit-seal/1`); if this test fails, the encoding changed and every sealed
history in the field would report itself tampered with."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from scanner.cli import cli
from scanner.store.db import make_engine
from scanner.store.models import (
    Change,
    ConfigBlob,
    Document,
    Finding,
    Observation,
    RefusedLogon,
    ResolvedFinding,
    RunServer,
    ScanRun,
    SealEntry,
    Server,
    ServerScan,
)
from scanner.store.seal import seal_backlog

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
POP3 = b"\xff\xfe" + '<configuration><add key="AllowCrossSiteSessions" value="true" /></configuration>'.encode(
    "utf-16-le")
IMAP4 = b'<configuration><appSettings file="override.config"/></configuration>'
OVERRIDE = b'<appSettings><add key="AllowCrossSiteSessions" value="false"/></appSettings>'
SHA = {name: hashlib.sha256(content).hexdigest() for name, content in
       (("pop3", POP3), ("imap4", IMAP4), ("override", OVERRIDE))}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


DOCUMENTS = [  # (id, kind, body): the bodies as `Store` writes them (any text enters by its hash)
    (1, "server", _json({"address": "cas01.contoso.local", "site": "Berlin", "build": "8.3.83.6"})),
    (2, "server", _json({"address": "cas02.contoso.local", "site": "Köln", "build": "8.1.436.0"})),
    (3, "protocol", _json({"allow_cross_site": True, "config_sha256": SHA["pop3"]})),
    (4, "protocol", _json({"allow_cross_site": False, "config_sha256": SHA["imap4"],
                           "config_reference": {"attribute": "file", "sha256": SHA["override"]}})),
    (5, "protocol", _json({"allow_cross_site": None, "config_sha256": "f" * 64})),  # a file never stored
    (6, "finding", _json({"rule": "XS-001", "message": "POP3 allows cross-site sessions", "waiver": None})),
    (7, "finding", _json({"rule": "XS-006", "message": "IMAP4 \u201eue\u201c", "waiver": {"approver": "J. Weber"}})),
    (8, "server", _json({"address": "cas03.contoso.local", "error": "timeout"})),
]


def _run(run_id: int, day: int, status: str, **columns: Any) -> dict[str, Any]:
    start = T0 + timedelta(days=day)
    return {"id": run_id, "started_at": start, "finished_at": start + timedelta(minutes=5, microseconds=123456),
            "status": status, "servers_planned": 3, "servers_scanned": 3, "servers_failed": 0,
            "tool_version": "0.1.0", "catalog_version": "2026.1", "operator": "CONTOSO\\jörg",
            "scanning_host": "admin01", "inventory_sha256": "a" * 64, "policy_sha256": "b" * 64,
            "policy_text": "[baseline]\nallow_cross_site = false\n", "site_filter": None, "organisation": None,
            "owner_pid": 4242, "owner_started": start - timedelta(seconds=1), "heartbeat_at": start,
            "end_reason": None, **columns}


RUNS = [_run(1, 0, "complete"),
        _run(2, 1, "partial", servers_failed=1, site_filter="Berlin", organisation="contoso"),
        _run(3, 2, "aborted", finished_at=None, end_reason="no heartbeat", catalog_version=None)]
SERVERS = [{"id": n, "name": f"CAS0{n}", "name_key": f"cas0{n}", "first_seen_run_id": 1} for n in (1, 2, 3)]


def _scan(scan_id: int, run_id: int, server_id: int, state_id: int, **columns: Any) -> dict[str, Any]:
    start = T0 + timedelta(days=run_id - 1, seconds=scan_id)
    return {"id": scan_id, "run_id": run_id, "server_id": server_id, "scan_status": "ok", "error_kind": None,
            "error_message": None, "started_at": start, "finished_at": start + timedelta(seconds=3),
            "events_since": start - timedelta(days=1), "site": "Berlin", "state_id": state_id, **columns}


SCANS = [  # written out of name order: the encoding sorts the scans by server name
    _scan(1, 1, 2, 2, site="Köln"), _scan(2, 1, 1, 1),
    _scan(3, 2, 1, 1), _scan(4, 2, 3, 8, scan_status="error", error_kind="timeout",
                             error_message="no answer within 30 s", events_since=None),
    _scan(5, 3, 1, 1), _scan(6, 3, 2, 2, site=None),
]
OBSERVATIONS = [(1, 1, "pop3", 5), (2, 2, "imap4", 4), (3, 2, "pop3", 3), (4, 3, "pop3", 3),
                (5, 3, "imap4", 4), (6, 5, "pop3", 3), (7, 6, "pop3", 5)]
REFUSED = [(1, 3, T0 - timedelta(hours=3), "CONTOSO\\anna", "Hamburg", "CAS01"),
           (2, 3, None, "CONTOSO\\bernd", "Hamburg", None), (3, 6, T0, "CONTOSO\\anna", "München", "CAS01")]
FINDINGS = [(1, 1, 1, 6, _json({"raw_value": "true"})), (2, 1, None, 7, None), (3, 2, 1, 6, "{}"),
            (4, 3, 1, 6, _json({"raw_value": "true"})), (5, 3, 2, 7, None)]
RESOLVED = [(1, 2, "XS-006", None, None), (2, 3, "XS-010", "CAS02", "imap4")]
CHANGES = [{"id": 1, "ticket": "CHG-1", "kind": "apply", "operator": "CONTOSO\\admin", "server_name": "CAS01",
            "protocol": "pop3", "config_path": "C:\\x.config", "before_sha256": SHA["pop3"], "after_sha256": "c" * 64,
            "found_sha256": SHA["pop3"], "backup_path": None, "restart": "restarted", "result": "done",
            "message": None, "changed_at": T0 + timedelta(days=1, hours=1)}]

# sealed by cas-audit at 5778d59 (before verify was rewritten for speed), never to change
PINNED = [
    (1, "run", 1,
     "c5fa1f81eaaf3a29cfdff5efa4888a4937ed0f47600e37cfc653a081a490ecae",
     "4f36c21de3ad1638d30d3d25cddac0e630b209f4e2ff193a9998161e10ccac68"),
    (2, "run", 2,
     "f1504dbda8f09cdf9390d0cbc6d7ea27cb89bcb36ec0359f4188e4b3352c3c3e",
     "9b9129533d151d6dd32386f1809080d4565e763d51668068ef8ad6e0440ad5f0"),
    (3, "run", 3,
     "a2a3bfbd6804600bf30d968516e471ca99781a32ebefcff21ef67101e5550186",
     "35cce0be343fe3b8ede223173efbd2663587804c34651ac31fdd50d473ec5678"),
]


def _write(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(ScanRun.__table__), RUNS)
            conn.execute(insert(Server.__table__), SERVERS)
            conn.execute(insert(RunServer.__table__), [
                {"run_id": run["id"], "server_id": n, "position": n - 1, "address": f"cas0{n}.contoso.local",
                 "inventory_site": "Berlin" if n != 2 else "Köln"} for run in RUNS for n in (3, 1, 2)])
            conn.execute(insert(Document.__table__), [
                {"id": i, "kind": kind, "body": body, "sha256": hashlib.sha256(f"{kind}\n{body}".encode()).hexdigest()}
                for i, kind, body in DOCUMENTS])
            conn.execute(insert(ConfigBlob.__table__), [
                {"sha256": SHA[name], "content": content, "size": len(content), "first_seen_at": T0}
                for name, content in (("pop3", POP3), ("imap4", IMAP4), ("override", OVERRIDE))])
            conn.execute(insert(ServerScan.__table__), SCANS)
            conn.execute(insert(Observation.__table__), [
                {"id": i, "server_scan_id": scan, "protocol": protocol, "state_id": state}
                for i, scan, protocol, state in OBSERVATIONS])
            conn.execute(insert(RefusedLogon.__table__), [
                {"id": i, "observation_id": obs, "at": at, "user_name": user, "mailbox_site": site, "cas": cas}
                for i, obs, at, user, site, cas in REFUSED])
            conn.execute(insert(Finding.__table__), [
                {"id": i, "run_id": run, "server_id": server, "body_id": body, "extra": extra}
                for i, run, server, body, extra in FINDINGS])
            conn.execute(insert(ResolvedFinding.__table__), [
                {"id": i, "run_id": run, "rule": rule, "server_name": server, "protocol": protocol}
                for i, run, rule, server, protocol in RESOLVED])
    finally:
        engine.dispose()


def _seal(url: str, *, change_before_run: int | None = None) -> list[tuple[Any, ...]]:
    """Seal runs 1..3 one at a time, as they end, with the change recorded before run 2."""
    engine = make_engine(url)
    try:
        for run_id in (1, 2, 3):
            with Session(engine) as session, session.begin():
                if run_id == 2:
                    session.execute(insert(Change.__table__), CHANGES)
                sealed_run = seal_backlog_upto(session, run_id)
                assert sealed_run == [run_id]
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(
                select(SealEntry.position, SealEntry.kind, SealEntry.run_id, SealEntry.digest, SealEntry.seal)
                .order_by(SealEntry.position))]
    finally:
        engine.dispose()


def seal_backlog_upto(session: Session, run_id: int) -> list[int]:
    """`seal_backlog` with only runs up to `run_id` finished (the later ones still running)."""
    session.execute(ScanRun.__table__.update().where(ScanRun.id > run_id).values(status="running"))
    sealed = seal_backlog(session, T0 + timedelta(days=9))
    for run in RUNS:
        if run["id"] > run_id:
            session.execute(ScanRun.__table__.update().where(ScanRun.id == run["id"]).values(status=run["status"]))
    return sealed


def test_a_fixed_history_seals_to_the_pinned_values(history_url: str) -> None:
    _write(history_url)
    assert _seal(history_url) == PINNED


def test_times_stored_in_another_form_encode_the_same(sqlite_history_url: str) -> None:
    """SQLite keeps times as text: rows written by older versions or by hand in another
    form of the same instant (no microseconds, an offset) encode as SQLAlchemy's form does."""
    sqlite_url = sqlite_history_url
    _write(sqlite_url)
    sql = ["UPDATE server_scans SET started_at = '2026-03-01 03:00:01+01:00' WHERE id = 1",
           "UPDATE server_scans SET finished_at = '2026-03-01 02:00:04' WHERE id = 1",
           "UPDATE refused_logons SET at = '2026-02-28T23:00:00.000000' WHERE id = 1"]
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            for statement in sql:
                conn.execute(text(statement))
    finally:
        engine.dispose()
    assert _seal(sqlite_url) == PINNED


def test_a_history_sealed_by_an_earlier_version_verifies(history_url: str) -> None:
    _write(history_url)
    engine = make_engine(history_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Change.__table__), CHANGES)
            conn.execute(insert(SealEntry.__table__), [
                {"position": position, "kind": kind, "run_id": run_id, "digest": digest, "seal": seal,
                 "sealed_at": T0 + timedelta(days=9), "body": json.dumps({"changes_through": 0 if run_id == 1 else 1})
                 .replace(" ", "")} for position, kind, run_id, digest, seal in PINNED])
    finally:
        engine.dispose()
    result = CliRunner().invoke(cli, ["verify", "--db", history_url])
    assert result.exit_code == 0, result.output
    assert f"intact: 3 link(s), 3 run(s) recomputed; newest seal {PINNED[-1][4]}" in result.output

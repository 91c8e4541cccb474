"""Revision 0003 converts a history written by revision 0002: every scan, observation and
finding reads back exactly as it was stored, with what did not change stored once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from scanner.store.db import alembic_config, head_revision, make_engine, upgrade
from scanner.store.repo import Store

T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 12, 2, 8, 0, 0, 123456, tzinfo=UTC)
CONFIG = b'<?xml version="1.0"?>\r\n<configuration><appSettings><add key="AllowCrossSiteSessions" value="true"/></appSettings></configuration>'
SHA = "0" * 63 + "1"
XS001_EVIDENCE = {"allow_cross_site": True, "config_sha256": SHA, "observed": "true", "fields": {"server": "CAS01"}}


def _old_history(url: str) -> None:
    """Two runs of one server in revision 0002's tables, as revision 0002 of cas-audit wrote them."""
    engine = make_engine(url)
    with engine.connect() as conn:
        with conn.begin():
            command.upgrade(alembic_config(conn), "0002")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO config_blobs (sha256, content, size, first_seen_at) VALUES (:s, :c, :n, :t)"),
                     {"s": SHA, "c": CONFIG, "n": len(CONFIG), "t": T0})
        for run_id, at, status in ((1, T0, "complete"), (2, T1, "partial")):
            conn.execute(text(
                "INSERT INTO scan_runs (id, started_at, finished_at, status, servers_planned, servers_scanned, "
                "servers_failed, tool_version, operator, scanning_host, inventory_sha256) "
                "VALUES (:id, :at, :at, :st, 2, 1, 1, '0.1', 'op', 'host', :inv)"),
                {"id": run_id, "at": at, "st": status, "inv": "a" * 64})
        conn.execute(text("INSERT INTO servers (id, name, name_key, first_seen_run_id) VALUES "
                          "(1, 'CAS01', 'cas01', 1), (2, 'CAS02', 'cas02', 1)"))
        scan_id = 0
        for run_id, at in ((1, T0), (2, T1)):
            for server_id, name in ((1, "CAS01"), (2, "CAS02")):
                scan_id += 1
                ok = server_id == 1
                conn.execute(text("INSERT INTO run_servers VALUES (:r, :s, :p, :a, 'Berlin')"),
                             {"r": run_id, "s": server_id, "p": server_id - 1, "a": name.lower()})
                conn.execute(text(
                    "INSERT INTO server_scans (id, run_id, server_id, address, scan_status, error_kind, error_message, "
                    "started_at, finished_at, site, reported_site, computer, build, service_pack, rollup, "
                    "build_recognised, install_path, setup_key, ps_version, events_since, collector_errors) VALUES "
                    "(:id, :r, :s, :a, :st, :ek, :em, :at, :at, 'Berlin', :rs, :c, :b, :sp, NULL, :br, :ip, 'Setup', "
                    ":ps, NULL, '[]')"),
                    {"id": scan_id, "r": run_id, "s": server_id, "a": name.lower(), "st": "ok" if ok else "error",
                     "ek": None if ok else "refused", "em": None if ok else "refused the connection", "at": at,
                     "rs": "Berlin" if ok else None, "c": name if ok else None, "b": "8.3.83.6" if ok else None,
                     "sp": "SP3" if ok else None, "br": ok, "ip": "C:\\Exchange\\" if ok else None,
                     "ps": "2.0" if ok else None})
                if not ok:
                    continue
                for protocol in ("pop3", "imap4"):
                    conn.execute(text(
                        "INSERT INTO observations (server_scan_id, run_id, server_id, protocol, scanned_at, "
                        "allow_cross_site, value_source, config_status, raw_value, config_path, config_sha256, "
                        "config_length, config_modified, config_encoding, key_notes, service, start_mode, "
                        "service_started, pending_restart, refused_logons_count, detail) VALUES (:sc, :r, 1, :p, :at, "
                        ":v, 'file', 'ok', 'true', :path, :sha, :n, :mod, 'utf-8', '[]', 'Running', 'Auto', :mod, "
                        ":pr, 0, '')"),
                        {"sc": scan_id, "r": run_id, "p": protocol, "at": at, "v": True, "path": f"C:\\{protocol}.config",
                         "sha": SHA, "n": len(CONFIG), "mod": T0, "pr": False})
            conn.execute(text(
                "INSERT INTO findings (run_id, rule, severity, state, server_id, server_name, site, protocol, message, "
                "evidence, first_seen_run_id, first_seen_at, waiver) VALUES (:r, 'XS-001', 'high', :st, 1, 'CAS01', "
                "'Berlin', 'pop3', 'CAS01 allows cross-site POP3 sessions.', :ev, 1, :first, NULL)"),
                {"r": run_id, "st": "new" if run_id == 1 else "persisting", "ev": json.dumps(XS001_EVIDENCE),
                 "first": T0})
            conn.execute(text(
                "INSERT INTO findings (run_id, rule, severity, state, server_id, server_name, site, protocol, message, "
                "evidence, first_seen_run_id, first_seen_at, waiver) VALUES (:r, 'XS-011', 'high', :st, 2, 'CAS02', "
                "'Berlin', NULL, 'CAS02 could not be scanned.', :ev, 1, :first, :w)"),
                {"r": run_id, "st": "new" if run_id == 1 else "persisting", "first": T0,
                 "ev": json.dumps({"error_kind": "refused", "started_at": at.isoformat(), "finished_at": at.isoformat()}),
                 "w": json.dumps({"approver": "J. Weber"})})
    engine.dispose()


def test_revision_0003_converts_a_0002_history(store_url: str) -> None:
    _old_history(store_url)
    engine = make_engine(store_url)
    upgrade(engine)
    with engine.connect() as conn:
        kinds = dict(conn.execute(text("SELECT kind, count(*) FROM documents GROUP BY kind")).all())
        assert conn.execute(text("SELECT version_num FROM cas_audit_schema_version")).scalar() == head_revision()
    # one server state per distinct state (CAS01 ok, CAS02 failed), one protocol state per
    # protocol, a finding document per (rule, state): unchanged things are stored once
    assert kinds == {"server": 2, "protocol": 2, "finding": 4}
    store = Store(engine)
    try:
        second = {obs.name: obs for obs in store.server_observations(2)}
        cas01 = second["CAS01"]
        assert (cas01.scan_status, cas01.build, cas01.service_pack, cas01.install_path, cas01.finished_at) == (
            "ok", "8.3.83.6", "SP3", "C:\\Exchange\\", T1)
        pop3 = cas01.protocols["pop3"]
        assert (pop3.allow_cross_site, pop3.config_sha256, pop3.config_bytes, pop3.config_modified) == (
            True, SHA, CONFIG, T0)
        assert (second["CAS02"].scan_status, second["CAS02"].error_kind) == ("error", "refused")
        rows = store.findings(2)
        assert [(f.rule, f.state, f.server_name, f.first_seen_run_id, f.first_seen_at) for f in rows] == [
            ("XS-001", "persisting", "CAS01", 1, T0), ("XS-011", "persisting", "CAS02", 1, T0)]
        assert rows[0].evidence == XS001_EVIDENCE
        assert list(rows[1].evidence) == ["error_kind", "started_at", "finished_at"]  # order kept
        assert rows[1].evidence["started_at"] == T1.isoformat()
        assert rows[1].waiver == {"approver": "J. Weber"}
        assert [run_id for run_id, _obs in store.history("CAS01", "pop3")] == [1, 2]
    finally:
        store.close()

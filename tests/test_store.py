"""The history store on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scanner.errors import ConfigError, StoreError
from scanner.parse.observe import (
    ProtocolObservation,
    RefusedLogonObservation,
    ServerObservation,
)
from scanner.store import (
    FindingRow,
    PlannedServer,
    Store,
    UnknownRunError,
    default_url,
    open_store,
)
from scanner.store.models import ConfigBlob, RunRow, ScanRun

UTC = UTC
CET = timezone(timedelta(hours=1))
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)

CONFIG_TEXT = (
    '<?xml version="1.0" encoding="utf-16"?>\r\n<configuration><appSettings>'
    '<add key="AllowCrossSiteSessions" value="true" /></appSettings></configuration>\r\n'
)
CONFIG_UTF16 = b"\xff\xfe" + CONFIG_TEXT.encode("utf-16-le")
CONFIG_UTF8 = b'<?xml version="1.0"?><configuration><appSettings/></configuration>'
INSTALL = "C:\\Programme\\Microsoft\\Exchange Server"


def protocol_obs(protocol: str, content: bytes | None = CONFIG_UTF16, **changes: object) -> ProtocolObservation:
    name = "Pop3" if protocol == "pop3" else "Imap4"
    obs = ProtocolObservation(
        protocol=protocol,
        allow_cross_site=True,
        value_source="file",
        config_status="ok",
        raw_value="true",
        config_path=f"{INSTALL}\\ClientAccess\\PopImap\\Microsoft.Exchange.{name}.exe.Config",
        config_sha256=hashlib.sha256(content).hexdigest() if content is not None else None,
        config_bytes=content,
        config_length=len(content) if content is not None else None,
        config_modified=datetime(2026, 11, 20, 11, 0, tzinfo=CET),
        config_encoding="utf-16",
        key_notes=("duplicate", "file=override.config"),
        service="Running",
        start_mode="Auto",
        service_started=datetime(2026, 11, 19, 8, 0, 0, 123456, tzinfo=UTC),
        pending_restart=True,
        refused_logons=(
            RefusedLogonObservation(at=T0, user="CONTOSO\\jörg", mailbox_site="Hamburg", cas="EXCAS01"),
            RefusedLogonObservation(at=None, user="CONTOSO\\zoë", mailbox_site="Zürich"),
        ),
        detail="",
    )
    return replace(obs, **changes)  # type: ignore[arg-type]


def server_obs(name: str = "CAS01", *, start: datetime = T0, **changes: object) -> ServerObservation:
    obs = ServerObservation(
        name=name,
        address=f"{name.lower()}.contoso.local",
        site="Berlin",
        scan_status="ok",
        started_at=start,
        finished_at=start + timedelta(seconds=3),
        computer=name,
        reported_site="Berlin",
        build="8.3.83.6",
        service_pack="SP3",
        rollup="Update Rollup 1",
        build_recognised=True,
        install_path=INSTALL,
        setup_key="Setup",
        ps_version="2.0",
        events_since=start - timedelta(days=1),
        collector_errors=(("events", "Zugriff verweigert"),),
        protocols={"pop3": protocol_obs("pop3"), "imap4": protocol_obs("imap4", CONFIG_UTF8, allow_cross_site=False)},
    )
    return replace(obs, **changes)  # type: ignore[arg-type]


def failed_obs(name: str = "CAS01", *, start: datetime = T0) -> ServerObservation:
    return ServerObservation(
        name=name,
        address=f"{name.lower()}.contoso.local",
        site="Berlin",
        scan_status="error",
        started_at=start,
        finished_at=start + timedelta(seconds=30),
        error_kind="timeout",
        error="no answer within 30 s",
    )


def new_run(store: Store, names: tuple[str, ...] = ("CAS01",), **kwargs: object) -> int:
    planned = [(n, f"{n.lower()}.contoso.local", "Berlin") for n in names]
    return store.begin_run(
        planned=planned,
        tool_version="0.1.0",
        operator="CONTOSO\\jörg",
        scanning_host="admin01",
        inventory_sha256="a" * 64,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(history_url: str):
    with open_store(history_url) as opened:
        yield opened


def test_what_the_application_log_read_round_trips(store: Store) -> None:
    run_id = new_run(store)
    unread = server_obs("CAS01", events_error="Cannot open log Application on machine ..")
    partial = server_obs("CAS02", events_truncated="window", events_limit=10000)
    whole = server_obs("CAS03")
    for obs in (unread, partial, whole):
        store.record_server(run_id, obs)
    assert store.server_observations(run_id) == [unread, partial, whole]


def assert_aware_utc(value: datetime | None) -> None:
    assert value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def test_full_observation_round_trip(store: Store) -> None:
    run_id = new_run(store)
    obs = server_obs()
    store.record_server(run_id, obs)

    [back] = store.server_observations(run_id)
    assert back == obs
    pop3 = back.protocols["pop3"]
    assert pop3.config_bytes == CONFIG_UTF16
    assert pop3.refused_logons[0].user == "CONTOSO\\jörg"
    assert back.install_path == INSTALL
    for value in (back.started_at, back.finished_at, back.events_since, pop3.config_modified, pop3.service_started,
                  pop3.refused_logons[0].at):
        assert_aware_utc(value)
    assert pop3.config_modified == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert pop3.service_started.microsecond == 123456  # type: ignore[union-attr]


def test_run_row_and_planned_scope(store: Store) -> None:
    started = datetime(2026, 11, 21, 8, 0, tzinfo=CET)
    run_id = new_run(store, ["CAS02", "CAS01", "CAS03"], policy_text="[baseline]\nallow_cross_site = false\n",
                     site_filter="Berlin", started_at=started)
    run = store.run(run_id)
    assert (run.status, run.servers_planned, run.finished_at) == ("running", 3, None)
    assert run.started_at == started and run.started_at.tzinfo == UTC
    assert run.operator == "CONTOSO\\jörg"
    assert run.policy_text == "[baseline]\nallow_cross_site = false\n"
    assert run.policy_sha256 == hashlib.sha256(run.policy_text.encode()).hexdigest()
    assert store.planned_servers(run_id) == [
        PlannedServer("CAS02", "cas02.contoso.local", "Berlin"),
        PlannedServer("CAS01", "cas01.contoso.local", "Berlin"),
        PlannedServer("CAS03", "cas03.contoso.local", "Berlin"),
    ]


def test_run_row_has_one_field_per_column_of_the_runs_table(store: Store) -> None:
    """RunRow and ScanRun are the one definition of a run: a column without its field (or the
    reverse) would be lost when a run is read back."""
    assert [f.name for f in fields(RunRow)] == [c.key for c in ScanRun.__table__.columns]
    run_id = new_run(store, ["CAS01"], policy_text="[baseline]\n", site_filter="Berlin")
    store.finish_run(run_id, "complete")
    run = store.run(run_id)
    with store._engine.connect() as conn:
        stored = conn.execute(select(ScanRun.__table__).where(ScanRun.id == run_id)).one()._mapping
    for f in fields(RunRow):
        if f.name not in ("started_at", "finished_at"):  # SQLite keeps them naive, the store makes them aware
            assert getattr(run, f.name) == stored[f.name], f.name


def test_duplicate_inventory_names_are_refused(store: Store) -> None:
    with pytest.raises(ConfigError, match="more than once"):
        new_run(store, ["CAS01", "cas01"])


def test_shared_config_is_stored_once(store: Store) -> None:
    run_id = new_run(store, ["CAS01", "CAS02"])
    store.record_server(run_id, server_obs("CAS01"))
    store.record_server(run_id, server_obs("CAS02"))
    with store._engine.connect() as conn:  # the table itself: one row per distinct file
        assert conn.scalar(select(func.count()).select_from(ConfigBlob)) == 2
    digest = hashlib.sha256(CONFIG_UTF16).hexdigest()
    assert store.config_blob(digest) == CONFIG_UTF16
    assert store.config_blob("0" * 64) is None
    assert [o.protocols["pop3"].config_bytes for o in store.server_observations(run_id)] == [CONFIG_UTF16] * 2


def test_missing_config_file_round_trip(store: Store) -> None:
    run_id = new_run(store)
    missing = protocol_obs("pop3", None, allow_cross_site=None, config_status="missing", raw_value=None,
                           config_modified=None, config_encoding=None, key_notes=(), refused_logons=(),
                           detail="Die Datei fehlt.")
    obs = server_obs(protocols={"pop3": missing})
    store.record_server(run_id, obs)
    assert store.server_observations(run_id) == [obs]


def test_error_scan_and_run_counts(store: Store) -> None:
    run_id = new_run(store, ["CAS01", "CAS02", "CAS03"])
    store.record_server(run_id, server_obs("CAS01"))
    store.record_server(run_id, failed_obs("CAS02"))
    store.finish_run(run_id, "partial", finished_at=T0 + timedelta(minutes=1))

    run = store.run(run_id)
    assert (run.status, run.servers_planned, run.servers_scanned, run.servers_failed) == ("partial", 3, 1, 1)
    assert run.finished_at == T0 + timedelta(minutes=1)
    ok, failed = store.server_observations(run_id)
    assert failed == failed_obs("CAS02")
    assert (failed.error_kind, failed.protocols) == ("timeout", {})


def test_previous_successful_skips_failed_scans(store: Store) -> None:
    day = timedelta(days=1)
    run1 = new_run(store)
    store.record_server(run1, server_obs(start=T0))
    run2 = new_run(store)
    store.record_server(run2, failed_obs(start=T0 + day))
    run3 = new_run(store)

    found = store.previous_successful("cas01", "pop3", run3)  # names match case-insensitively
    assert found is not None
    run_id, obs = found
    assert run_id == run1  # the failed scan of run 2 is skipped
    assert obs.started_at == T0 and obs.name == "CAS01"
    assert obs.protocols["pop3"] == server_obs(start=T0).protocols["pop3"]
    assert store.previous_successful("CAS01", "pop3", run1) is None
    assert store.previous_successful("CAS99", "pop3", run3) is None
    assert store.last_successful_scan_time("CAS01") == T0


def test_history_oldest_first(store: Store) -> None:
    runs = []
    for day in range(3):
        run_id = new_run(store)
        runs.append(run_id)
        start = T0 + timedelta(days=day)
        if day == 1:
            store.record_server(run_id, failed_obs(start=start))
        else:
            store.record_server(run_id, server_obs(start=start, build=f"8.3.83.{day}"))

    history = store.history("CAS01")
    assert [run_id for run_id, _ in history] == runs
    assert [obs.scan_status for _, obs in history] == ["ok", "error", "ok"]
    imap4 = store.history("CAS01", "imap4")
    assert [set(obs.protocols) for _, obs in imap4] == [{"imap4"}, set(), {"imap4"}]
    assert store.history("CAS99") == []


def test_findings_and_resolved(store: Store) -> None:
    run_id = new_run(store)
    store.record_server(run_id, server_obs())
    findings = [
        FindingRow(rule="XS-001", severity="high", state="new", server_name="CAS01", site="Berlin", protocol="pop3",
                   message="Cross-site sessions are enabled.",
                   evidence={"raw_value": "true", "modified": datetime(2026, 11, 20, tzinfo=UTC)},
                   first_seen_run_id=run_id, first_seen_at=T0),
        FindingRow(rule="XS-009", severity="medium", state="waived", server_name=None, site="Berlin", protocol="imap4",
                   message="Servers in Berlin disagree.", evidence={"servers": ["CAS01", "CAS02"]},
                   waiver={"approver": "J. Weber, CISO", "expires": "2027-03-31"}),
    ]
    store.save_findings(run_id, findings, [("XS-006", "CAS02", "pop3"), ("XS-009", None, None)])
    store.save_findings(run_id, findings, [("XS-006", "CAS02", "pop3"), ("XS-009", None, None)])  # replaces

    back = store.findings(run_id)
    assert [replace(f, id=None, run_id=None) for f in back] == [
        replace(findings[0], evidence={"raw_value": "true", "modified": "2026-11-20T00:00:00+00:00"}),
        findings[1],
    ]
    assert back[0].id is not None and back[0].first_seen_at == T0
    assert store.resolved(run_id) == [("XS-006", "CAS02", "pop3"), ("XS-009", None, None)]
    assert {f.run_id for f in back} == {run_id}


def test_run_listing(store: Store) -> None:
    assert store.latest_run_id() is None
    first = new_run(store)
    store.finish_run(first, "complete")
    second = new_run(store)
    assert store.latest_run_id() == second
    assert store.latest_run_id(complete_only=True) == first
    assert [r.id for r in store.runs()] == [second, first]
    assert [r.id for r in store.runs(limit=1)] == [second]
    with pytest.raises(UnknownRunError, match="no scan run 999"):
        store.run(999)


def test_nul_characters_from_a_server_do_not_lose_the_result(store: Store) -> None:
    run_id = new_run(store)
    logon = RefusedLogonObservation(at=T0, user="CONTOSO\\a\x00b", mailbox_site="Hamburg")
    store.record_server(run_id, server_obs(protocols={"pop3": protocol_obs("pop3", refused_logons=(logon,))}))
    [back] = store.server_observations(run_id)
    assert back.protocols["pop3"].refused_logons[0].user == "CONTOSO\\a\ufffdb"


@pytest.mark.slow  # four threads writing 100 results through two stores
def test_concurrent_writers(store_url: str) -> None:
    """4 threads x 25 results, over two Stores (like two processes): all stored, none lost."""
    with open_store(store_url) as first, open_store(store_url) as second:
        names = [f"CAS{i:03d}" for i in range(100)]
        run_id = new_run(first, names)
        errors: list[BaseException] = []

        def work(store: Store, batch: list[str]) -> None:
            try:
                for name in batch:
                    store.record_server(run_id, server_obs(name))
                    store.previous_successful(name, "pop3", run_id)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=work, args=(first if i % 2 else second, names[i * 25 : (i + 1) * 25]))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        second.finish_run(run_id, "complete")
        assert first.run(run_id).servers_scanned == 100
        assert [o.name for o in first.server_observations(run_id)] == names


def test_sqlite_file_settings(sqlite_url: str, tmp_path: Path) -> None:
    with open_store(sqlite_url) as store:
        store.finish_run(new_run(store), "complete")
    with sqlite3.connect(tmp_path / "history.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_unreachable_server_is_a_store_error_without_password() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("postgresql+psycopg://auditor:s3cr%40t@127.0.0.1:1/history")
    message = str(caught.value)
    assert "cannot open the history database" in message
    assert "s3cr" not in message and "***" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nosuchdb://user:s3cret@host/db", "unsupported database URL"),
        ("this is not a URL :s3cret@", "not a database URL"),
    ],
)
def test_invalid_url_is_a_store_error(url: str, expected: str) -> None:
    with pytest.raises(StoreError, match=expected) as caught:
        open_store(url)
    assert "s3cret" not in str(caught.value)


def test_sqlite_folder_that_cannot_exist(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        open_store(f"sqlite:///{tmp_path / 'file' / 'sub' / 'history.db'}")


def test_default_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAS_AUDIT_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_url() == f"sqlite:///{tmp_path / 'data' / 'cas-audit' / 'history.db'}"
    with open_store() as store:
        assert store.url_display == default_url()
    assert (tmp_path / "data" / "cas-audit" / "history.db").is_file()

    monkeypatch.setenv("CAS_AUDIT_DB", "postgresql+psycopg://u@db.example/history")
    assert default_url() == "postgresql+psycopg://u@db.example/history"


def test_recording_into_an_unknown_run_fails_and_stores_nothing(store: Store) -> None:
    with pytest.raises(StoreError, match="cannot record the scan of CAS01") as caught:
        store.record_server(999, server_obs())
    assert "[SQL" not in str(caught.value)
    assert store.history("CAS01") == []
    assert store.config_blob(hashlib.sha256(CONFIG_UTF16).hexdigest()) is None


def test_a_batch_of_results_is_stored_in_order_with_shared_files_once(store: Store) -> None:
    """record_servers (a scan's batch): every result as record_server would store it."""
    run_id = new_run(store, ("CAS01", "CAS02", "CAS03"))
    only_pop3 = server_obs("CAS03", protocols={"pop3": protocol_obs("pop3", refused_logons=())})
    batch = [server_obs("CAS01"), failed_obs("CAS02"), only_pop3]
    store.record_servers(run_id, batch)
    assert store.server_observations(run_id) == batch
    with store._engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(ConfigBlob)) == 2  # CAS01's two files, shared
    store.finish_run(run_id, "partial")
    assert (store.run(run_id).servers_scanned, store.run(run_id).servers_failed) == (2, 1)


def test_a_batch_is_stored_whole_or_not_at_all(store: Store) -> None:
    run_id = new_run(store, ("CAS01", "CAS02"))
    refused = replace(failed_obs("CAS02"), scan_status="bogus")  # the database's CHECK refuses it
    with pytest.raises(StoreError, match="cannot record the scans of 2 servers"):
        store.record_servers(run_id, [server_obs("CAS01"), refused])
    assert store.server_observations(run_id) == []
    assert store.config_blob(hashlib.sha256(CONFIG_UTF16).hexdigest()) is None
    store.record_servers(run_id, [server_obs("CAS01")])  # the store is usable afterwards
    assert [o.name for o in store.server_observations(run_id)] == ["CAS01"]


def test_a_runs_default_start_and_end_are_the_stores_clock(history_url: str) -> None:
    """The clock seam: a store stamps times with the clock it was given (tests never wait)."""
    now = T0

    def clock() -> datetime:
        return now

    with open_store(history_url, clock=clock) as store:
        run_id = new_run(store)
        assert store.run(run_id).started_at == T0
        now = T0 + timedelta(minutes=3)
        store.finish_run(run_id, "complete")
        assert store.run(run_id).finished_at == now


def test_heartbeats_and_liveness_read_the_stores_clock_on_sqlite(sqlite_url: str) -> None:
    """SQLite: the store's clock (PostgreSQL: the database server's, tests/test_liveness_clock.py)."""
    now = T0

    def clock() -> datetime:
        return now

    with open_store(sqlite_url, clock=clock) as store:
        run_id = new_run(store)  # scanned from "admin01", another host: only the heartbeat counts
        assert store.run(run_id).heartbeat_at == T0
        now = T0 + timedelta(minutes=9)
        store.record_server(run_id, server_obs())
        assert store.run(run_id).heartbeat_at == now
        now += timedelta(minutes=9)  # 9 minutes since the last heartbeat: still alive
        assert store.abort_dead_runs() == []
        now += timedelta(minutes=2)
        assert store.abort_dead_runs() == [run_id]
        assert store.run(run_id).finished_at == T0 + timedelta(minutes=9)  # its last sign of life

"""The file=/configSource= file of a protocol is kept in the history like the config file:
its metadata in the protocol's state, its bytes once per SHA-256, kept by prune while a
kept run refers to it."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_store import protocol_obs, server_obs

from scanner.errors import ConfigError
from scanner.parse.observe import ReferenceObservation
from scanner.report.config_copy import stored_config, write_config_copy
from scanner.store.repo import Store, open_store
from scanner.store.retention import prune

EXTRA = b'<appSettings><add key="AllowCrossSiteSessions" value="true"/></appSettings>'
DAY = datetime(2026, 10, 1, 8, tzinfo=UTC)


def reference(content: bytes | None = EXTRA, outcome: str = "applied") -> ReferenceObservation:
    return ReferenceObservation(
        attribute="file", value="appSettings.extra.config", line=6, outcome=outcome,
        path="C:\\Exchange\\ClientAccess\\PopImap\\appSettings.extra.config",
        sha256=hashlib.sha256(content).hexdigest() if content is not None else None,
        length=len(content) if content is not None else None,
        modified=datetime(2026, 11, 20, 10, tzinfo=UTC), content=content,
    )


def record(store: Store, start: datetime, ref: ReferenceObservation | None) -> int:
    run_id = store.begin_run(planned=[("CAS01", "cas01", "Berlin")], tool_version="t", operator="o",
                             scanning_host="h", inventory_sha256="0" * 64, started_at=start)
    obs = server_obs("CAS01", start=start)
    obs = replace(obs, protocols={**obs.protocols, "pop3": protocol_obs("pop3", config_reference=ref)})
    store.record_server(run_id, obs)
    store.finish_run(run_id, "complete", finished_at=start + timedelta(minutes=5))
    return run_id


def test_the_reference_round_trips_with_its_bytes(history_url: str) -> None:
    with open_store(history_url) as store:
        run_id = record(store, DAY, reference())
        unread = record(store, DAY + timedelta(days=1), reference(None, "unknown"))
        [back] = store.server_observations(run_id)
        assert back.protocols["pop3"].config_reference == reference()
        assert store.config_blob(hashlib.sha256(EXTRA).hexdigest()) == EXTRA
        [later] = store.server_observations(unread)
        assert later.protocols["pop3"].config_reference == reference(None, "unknown")
        assert later.protocols["imap4"].config_reference is None


def test_prune_keeps_a_referenced_file_a_kept_run_needs(history_url: str) -> None:
    with open_store(history_url) as store:
        old = record(store, DAY, reference())
        kept = record(store, DAY + timedelta(days=50), reference())
        prune(store, DAY + timedelta(days=10), apply=True, now=DAY + timedelta(days=51))
        assert [r.id for r in store.runs()] == [kept]
        assert old != kept
        [back] = store.server_observations(kept)
        assert back.protocols["pop3"].config_reference is not None
        assert back.protocols["pop3"].config_reference.content == EXTRA


def test_evidence_writes_the_referenced_file_as_collected(history_url: str, tmp_path: Path) -> None:
    with open_store(history_url) as store:
        run_id = record(store, DAY, reference())
        unread = record(store, DAY + timedelta(days=1), reference(None, "unknown"))
        out = tmp_path / "extra.config"
        digest, size = write_config_copy(store, "CAS01", "pop3", run_id, out, referenced=True)
        assert (out.read_bytes(), digest, size) == (EXTRA, hashlib.sha256(EXTRA).hexdigest(), len(EXTRA))
        with pytest.raises(ConfigError, match="outcome unknown"):
            stored_config(store, "CAS01", "pop3", unread, referenced=True)
        with pytest.raises(ConfigError, match="names no file"):
            stored_config(store, "CAS01", "imap4", run_id, referenced=True)

"""A scan commits its results in batches, and reports a server done only once its result
is committed: what the scan has said is in the history is there, whatever happens next."""

from __future__ import annotations

from pathlib import Path

import pytest
from labfleet import demo_fleet, running

from scanner.inventory import load_inventory
from scanner.judge.catalog import load_catalog
from scanner.judge.policy import Policy
from scanner.parse.observe import ServerObservation
from scanner.scan import run_scan
from scanner.store.repo import open_store

pytestmark = pytest.mark.slow  # a scan of the lab organisation


def test_every_server_reported_done_is_already_committed(tmp_path: Path, sqlite_url: str) -> None:
    reported: list[tuple[str, set[str]]] = []
    with open_store(sqlite_url) as store, open_store(sqlite_url) as reader:  # two engines: another reader

        def done(observation: ServerObservation) -> None:
            run_id = reader.latest_run_id()
            assert run_id is not None
            reported.append((observation.name, {o.name for o in reader.server_observations(run_id)}))

        with running(demo_fleet("127.0.55.1", "basic"), tmp_path) as (_lab, inventory_path):
            outcome = run_scan(load_inventory(inventory_path), store=store, password="lab-password",
                               policy=Policy.default(), catalog=load_catalog(), concurrency=4, timeout_s=20,
                               on_result=done)
    assert len(reported) == 9 and outcome.scanned + outcome.failed == 9
    for name, committed in reported:
        assert name in committed, (name, committed)

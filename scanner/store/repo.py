"""Reading and writing the scan history: the `Store`, composed of one part per job.

- runs.py: runs, their heartbeat and end, runs whose scanner died;
- record.py: a scan's results, documents stored once, remembered launch methods;
- findings.py: the findings of a run;
- queries.py: what judge and report read (`newest_per_server`);
- retention.py: deleting old runs (`cas-audit prune`);
- observations.py: rebuilding observations from stored scans.

Every method runs in its own short transaction and returns plain dataclasses or
`scanner.parse.observe` types, so a `Store` can be shared by the worker threads of a scan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from scanner.errors import StoreError
from scanner.store.base import UnknownRunError, utcnow
from scanner.store.db import default_url, open_engine, upgrade_database
from scanner.store.findings import FindingRow, Findings
from scanner.store.models import RunRow
from scanner.store.queries import Queries
from scanner.store.record import Recording
from scanner.store.retention import Retention
from scanner.store.runs import PlannedServer, Runs
from scanner.store.seal import Verification
from scanner.store.sealing import Seals

__all__ = [
    "FindingRow",
    "PlannedServer",
    "RunRow",
    "Store",
    "UnknownRunError",
    "Verification",
    "default_url",
    "open_store",
    "upgrade_database",
]

log = logging.getLogger(__name__)


class Store(Runs, Recording, Findings, Queries, Retention, Seals):
    """The history database of one installation (one Engine, a session per call)."""


def open_store(url: str | None = None, *, read_only: bool = False, create: bool = True,
               clock: Callable[[], datetime] = utcnow) -> Store:
    """Open the history database (default_url() when None), creating or upgrading its schema;
    with `read_only` only an existing history at the current schema is opened; without
    `create` only an existing history (upgraded when older) is. `clock` says what time it
    is whenever the store stamps one (heartbeats, a run's default start and end, runs
    presumed dead); tests pass their own.

    Runs whose scanner died are recorded as aborted first (design: whatever command next
    opens the history); if that write fails (e.g. a read-only file) a warning says so."""
    store = Store(open_engine(url, read_only=read_only, create=create), clock=clock)
    try:
        for run_id in store.abort_dead_runs():
            log.warning("scan run %d was still marked running but its scanner is gone: recorded as aborted", run_id)
    except StoreError as exc:
        log.warning("could not record dead scan runs as aborted: %s", exc.message)
    return store

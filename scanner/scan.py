"""`cas-audit scan`: collect from every CAS concurrently, store the results in small batches as they arrive."""

from __future__ import annotations

import contextlib
import getpass
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scanner import __version__
from scanner.collect import httpguard
from scanner.collect.reader import read_collector_output
from scanner.collect.winrm_client import collect_host
from scanner.errors import CollectionError, ExitCode
from scanner.facts import LaunchMethod, RunStatus
from scanner.inventory import Inventory, Target
from scanner.judge.catalog import Catalog
from scanner.judge.evaluate import active_at_or_above, evaluate_run
from scanner.judge.policy import Policy
from scanner.parse.observe import ServerObservation, failed, interpret
from scanner.store.liveness import HEARTBEAT_S, this_process
from scanner.store.repo import Store
from scanner.util import testhooks

log = logging.getLogger(__name__)
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT_S = 120.0
FIRST_SCAN_EVENT_WINDOW = timedelta(days=30)
ABANDON_S = 1.5  # after an interrupt, how long servers in flight get to notice
# Results are committed in batches of at most BATCH_SERVERS, and none waits longer than
# about BATCH_S (+ the main loop's 0.25 s): a killed scan loses at most those (docs/architecture.md).
BATCH_SERVERS = 50
BATCH_S = 1.0


@dataclass(frozen=True)
class ScanOutcome:
    run_id: int
    status: RunStatus  # complete | partial | aborted
    scanned: int
    failed: int
    active_at_or_above: int
    exit_code: ExitCode


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def scan_one(target: Target, password: str | None, since: datetime, timeout_s: float, *,
             launch: LaunchMethod = "env", on_launch: Callable[[LaunchMethod], None] | None = None,
             clock: Callable[[], datetime] = _now) -> ServerObservation:
    """Collect, read and interpret one server; never raises for a server-side problem.

    `launch` is the launch method to try first (remembered in the history); `on_launch`
    hears the one that delivered the collector (docs/launch.md). `clock` stamps the
    result's start and end.
    """
    started = clock()
    stage = "collecting"
    try:
        stdout = collect_host(target, password, since=since, timeout_s=timeout_s, method=launch,
                              on_method=on_launch)
        stage = "reading the result"
        host = read_collector_output(stdout)
        stage = "interpreting the result"
        testhooks.fail_at("parse")
        return interpret(target.name, target.address, target.site, host, started, clock())
    except CollectionError as exc:
        return failed(target.name, target.address, target.site, exc.kind, exc.message, started, clock())
    except Exception as exc:
        log.exception("internal error while %s of %s", stage, target.name)
        detail = "".join(ch if ch.isprintable() else "?" for ch in str(exc))[:200]
        return failed(target.name, target.address, target.site, "internal",
                      f"unexpected {type(exc).__name__} while {stage}: {detail}", started, clock())


class _Batch:
    """Server results waiting to be committed together (one transaction per batch).

    `on_commit` hears each result once it is committed, never before: what the scan
    reports as done is in the history."""

    def __init__(self, store: Store, run_id: int, on_commit: Callable[[ServerObservation], None]) -> None:
        self._store, self._run_id, self._on_commit = store, run_id, on_commit
        self._waiting: list[ServerObservation] = []
        self._since = 0.0
        self._launches: dict[str, LaunchMethod] = {}  # learned by the collecting threads
        self._launches_lock = threading.Lock()

    def learned(self, name: str, method: LaunchMethod) -> None:
        """A server's new launch method (from its collecting thread), remembered with the
        next commit: one statement for the batch, where each server's own transaction from
        its thread cost 0.35 ms of CPU and waited for the batches' (bench/README.md). A
        killed scan forgets those of the batch it loses: the next scan learns them again."""
        with self._launches_lock:
            self._launches[name] = method

    def add(self, observation: ServerObservation) -> None:
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.append(observation)
        if len(self._waiting) >= BATCH_SERVERS:
            self.commit()

    def due(self) -> bool:
        """Whether the oldest waiting result has waited BATCH_S."""
        return bool(self._waiting) and time.monotonic() - self._since >= BATCH_S

    def commit(self) -> None:
        waiting, self._waiting = self._waiting, []
        if waiting:
            self._store.record_servers(self._run_id, waiting)
            for observation in waiting:
                self._on_commit(observation)
        with self._launches_lock:
            launches, self._launches = self._launches, {}
        self._store.remember_launches(launches)  # nothing when none was learned


def _learned(batch: _Batch, name: str, remembered: LaunchMethod | None) -> Callable[[LaunchMethod], None]:
    def remember(method: LaunchMethod) -> None:
        if method != remembered:
            batch.learned(name, method)
    return remember


def _heartbeat(store: Store, run_id: int, done: threading.Event) -> None:
    """Renew the run's heartbeat every HEARTBEAT_S seconds until `done` (liveness.py)."""
    while not done.wait(HEARTBEAT_S):
        try:
            store.heartbeat(run_id)
        except Exception as exc:  # the next one may succeed; the scan goes on
            log.warning("cannot renew the heartbeat of run %d: %s", run_id, exc)


def _abandon(pending: set[Future[ServerObservation]], futures: dict[Future[ServerObservation], Target],
             batch: _Batch, reason: str, clock: Callable[[], datetime]) -> None:
    """Cancel the servers not started; give those in flight ABANDON_S to notice (their
    HTTP exchanges are shut down) and record each as not scanned (interrupted), with the
    results still waiting in `batch`. Servers never started stay unrecorded: reports show
    them as not scanned."""
    in_flight = [f for f in pending if not f.cancel()]
    httpguard.abort_all()
    done, _late = wait(in_flight, timeout=ABANDON_S)
    for future in in_flight:
        target = futures[future]
        observation = None
        if future in done:
            with contextlib.suppress(Exception):
                observation = future.result()
        if observation is None or observation.scan_status != "ok":
            now = clock()
            observation = failed(target.name, target.address, target.site, "interrupted",
                                 f"not scanned: {reason}", now, now)
        batch.add(observation)
    with contextlib.suppress(Exception):
        batch.commit()


def run_scan(
    inventory: Inventory,
    *,
    store: Store,
    password: str | None | Mapping[str, str],
    policy: Policy,
    catalog: Catalog,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    fail_on: str = "high",
    site_filter: str | None = None,
    on_result: Callable[[ServerObservation], None] | None = None,
    started_at: datetime | None = None,
    stop: threading.Event | None = None,
    stop_reason: Callable[[], str] | None = None,
    clock: Callable[[], datetime] = _now,
) -> ScanOutcome:
    """Scan every target, store results, evaluate the rules, save findings; return the outcome.

    `password` is one password for every account, or one per user name (certificate
    auth needs none). `started_at` stamps the run (default: now); waivers are judged on
    its UTC date. When `stop` is set (SIGINT, SIGTERM) no more servers start, those in
    flight are abandoned within ABANDON_S and the run is recorded aborted (`stop_reason()`
    says why); the outcome then has status "aborted". `clock` is what time it is for the
    scan (the run's start and end, each server's, the first scan's event window); the
    store stamps its heartbeats with its own.
    """
    targets = inventory.targets
    started_at = started_at or clock()
    owner = this_process()
    run_id = store.begin_run(
        planned=[(t.name, t.address, t.site) for t in targets],
        tool_version=__version__,
        catalog_version=catalog.version,
        operator=getpass.getuser(),
        scanning_host=owner.host,
        inventory_sha256=inventory.sha256,
        policy_text=policy.source_text,
        site_filter=site_filter,
        organisation=inventory.organisation,
        started_at=started_at,
        owner_pid=owner.pid,
        owner_started=owner.started,
    )
    scanned = failed_count = internal = 0
    status: RunStatus = "aborted"
    # from here on every failure ends the run (aborted) and the pool: see the except below
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="cas-audit-scan")
    beating = threading.Event()

    def committed(observation: ServerObservation) -> None:
        nonlocal scanned, failed_count, internal
        if observation.scan_status == "ok":
            scanned += 1
        else:
            failed_count += 1
            internal += observation.error_kind == "internal"
        if on_result is not None:
            on_result(observation)

    batch = _Batch(store, run_id, committed)
    try:
        launches = store.launch_methods()
        threading.Thread(target=_heartbeat, args=(store, run_id, beating), name="cas-audit-heartbeat",
                         daemon=True).start()
        futures: dict[Future[ServerObservation], Target] = {}
        # finished servers arrive here: concurrent.futures.wait on every pending future after
        # each completion costs O(servers) each time (bench/README.md, "CPU per server")
        finished: queue.SimpleQueue[Future[ServerObservation]] = queue.SimpleQueue()
        last_scanned = store.last_successful_scan_times([t.name for t in targets])  # one query, not one per server
        for target in targets:
            since = last_scanned.get(target.name.casefold()) or (clock() - FIRST_SCAN_EVENT_WINDOW)
            secret = password.get(target.username) if isinstance(password, Mapping) else password
            if target.auth == "certificate":
                secret = None
            remembered = launches.get(target.name.casefold())
            future = pool.submit(scan_one, target, secret, since, timeout_s, launch=remembered or "env",
                                 on_launch=_learned(batch, target.name, remembered), clock=clock)
            futures[future] = target
            future.add_done_callback(finished.put)
        pending = set(futures)
        while pending and not (stop is not None and stop.is_set()):
            with contextlib.suppress(queue.Empty):
                future = finished.get(timeout=0.25)
                while True:  # every server finished by now
                    pending.discard(future)
                    batch.add(future.result())
                    future = finished.get_nowait()
            if batch.due():
                batch.commit()
        if pending:  # interrupted: start no more servers, abandon those in flight
            reason = stop_reason() if stop_reason is not None else "interrupted"
            _abandon(pending, futures, batch, reason, clock)
            pool.shutdown(wait=False, cancel_futures=True)
            beating.set()
            store.finish_run(run_id, "aborted", finished_at=max(clock(), started_at), reason=reason)
            return ScanOutcome(run_id, "aborted", scanned, failed_count, 0, ExitCode.INTERNAL)
        batch.commit()
        pool.shutdown(wait=True)
        status = "complete" if failed_count == 0 else "partial"
        # findings first, then the status: a run is never complete without its findings
        evaluation = evaluate_run(store, run_id, policy, catalog)
        store.save_findings(run_id, evaluation.findings, evaluation.resolved)
    except BaseException as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            batch.commit()  # keep what was collected (if the store still takes it)
        with contextlib.suppress(Exception):
            store.finish_run(run_id, "aborted", finished_at=max(clock(), started_at),
                             reason=f"the scan stopped on an error ({type(exc).__name__})")
        raise
    finally:
        beating.set()
    status = store.finish_run(run_id, status, finished_at=max(clock(), started_at))
    if status == "aborted":  # another command found no heartbeat and recorded it so
        log.error("run %d was recorded as aborted while it ran (its heartbeat was lost)", run_id)
        internal += 1
    over = len(active_at_or_above(evaluation.findings, fail_on))
    if internal:
        code = ExitCode.INTERNAL  # a bug of ours, logged with its traceback: never hidden behind 3
    elif failed_count:
        code = ExitCode.UNSCANNED
    elif over:
        code = ExitCode.FINDINGS
    else:
        code = ExitCode.OK
    return ScanOutcome(run_id, status, scanned, failed_count, over, code)

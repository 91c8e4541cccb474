"""Generate a long scan history straight into a cas-audit database (SQLAlchemy Core executemany).

N servers in eight sites scanned once a day for D days, with the drift of a real estate:
- hand edits: on any day about 0.3% of the servers get one protocol's AllowCrossSiteSessions
  flipped (a new config file, modified that day, the service restarted a day later);
- service-pack upgrades: SP1/SP2 servers move to SP3 in two waves (a quarter of them on
  days 25%..27% of the history, half of the rest on days 60%..62%); setup rewrites both
  files with the default (false) and restarts the services;
- rollups: a third of the SP3 servers install a newer rollup in one wave (build change only);
- failures: about 0.5% of the servers cannot be scanned on any day (timeout).
Findings are what `cas-audit scan` would save: the real checks and lifecycle
(`scanner.judge.lifecycle.evaluate`) run in memory over each day's observations and each
server's previous one, with the default policy. Documents, config files and rows are what
`scanner.store.repo.Store` writes; only the writing is bulk (Core executemany).

The newest run (day D) is stored with its observations but without findings, so that
`bench_history.py` can evaluate it as `cas-audit scan` would. Every run is then sealed
(scanner/store/seal.py), as runs are when they end; saving the newest run's findings
later reseals its link (it is the newest).

    .venv/bin/python bench/history_gen.py --url sqlite:////tmp/h.db --servers 1000 --days 365
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from scanner.judge.catalog import load_catalog
from scanner.judge.checks import CheckInput, Previous
from scanner.judge.lifecycle import evaluate
from scanner.judge.policy import Policy
from scanner.lab.fleet_model import DEFAULT_CONFIG_TEXT
from scanner.parse.observe import ProtocolObservation, ServerObservation
from scanner.store.db import make_engine
from scanner.store.documents import digest, dumps, finding_document, protocol_state, server_state
from scanner.store.models import (
    ConfigBlob,
    Document,
    Finding,
    Observation,
    RunServer,
    ScanRun,
    Server,
    ServerScan,
)
from scanner.store.repo import FindingRow, PlannedServer, open_store
from scanner.store.seal import seal_backlog

SITES = ("Berlin", "Hamburg", "Munich", "Vienna", "Zurich", "Paris", "Madrid", "Oslo")
START = datetime(2025, 12, 1, 2, 0, tzinfo=UTC)
BUILDS = {  # (service pack, build, rollup name) from scanner/parse/exchange2007-builds.csv
    "SP1": ("SP1", "8.1.436.0", "Update Rollup 10"),
    "SP2": ("SP2", "8.2.254.0", "Update Rollup 4"),
    "SP3": ("SP3", "8.3.298.3", "Update Rollup 10"),
    "SP3-new": ("SP3", "8.3.468.0", "Update Rollup 20"),
}
INSTALL = "C:\\Program Files\\Microsoft\\Exchange Server"
CONFIG_NAMES = {"pop3": "Microsoft.Exchange.Pop3.exe.config", "imap4": "Microsoft.Exchange.Imap4.exe.config"}


def config_bytes(value: bool, variant: int) -> bytes:
    """The shipped file with `value`; `variant` > 0 marks a hand-edited copy (another file)."""
    text = DEFAULT_CONFIG_TEXT.replace('value="false"', f'value="{"true" if value else "false"}"')
    if variant:
        text = text.replace("</configuration>", f"<!-- edited {variant} -->\r\n</configuration>")
    return text.encode("utf-8")


@dataclass
class Proto:
    value: bool
    variant: int = 0
    modified: datetime = START - timedelta(days=400)
    running: bool = True
    started: datetime = START - timedelta(days=30)


@dataclass
class Host:
    name: str
    site: str
    address: str
    build: str  # key of BUILDS
    protos: dict[str, Proto] = field(default_factory=dict)


class Ids:
    def __init__(self) -> None:
        self.next: dict[str, int] = {}

    def __call__(self, kind: str) -> int:
        self.next[kind] = self.next.get(kind, 0) + 1
        return self.next[kind]


class Writer:
    """Buffers rows per table and flushes them with Core executemany."""

    ORDER = (ScanRun, Server, RunServer, ConfigBlob, Document, ServerScan, Observation, Finding)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows: dict[type, list[dict[str, Any]]] = {m: [] for m in self.ORDER}
        self.counts: dict[str, int] = {}

    def add(self, model: type, row: dict[str, Any]) -> None:
        self.rows[model].append(row)

    def flush(self) -> None:
        with self.engine.begin() as conn:
            for model in self.ORDER:
                rows = self.rows[model]
                if rows:
                    conn.execute(insert(model), rows)  # executemany
                    name = model.__tablename__  # type: ignore[attr-defined]
                    self.counts[name] = self.counts.get(name, 0) + len(rows)
                    rows.clear()


class History:
    def __init__(self, engine: Engine, servers: int, days: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.days = days
        self.out = Writer(engine)
        self.ids = Ids()
        self.docs: dict[str, int] = {}
        self.blobs: set[str] = set()
        self.catalog = load_catalog()
        self.policy = Policy.default()
        self.previous: dict[tuple[str, str], Previous] = {}
        self.last_findings: list[FindingRow] = []
        self.hosts: list[Host] = []
        for i in range(servers):
            roll = self.rng.random()
            build = "SP1" if roll < 0.15 else "SP2" if roll < 0.5 else "SP3"
            host = Host(f"CAS{i + 1:04d}", SITES[i % len(SITES)], f"10.{i // 250}.{i % 250}.10", build)
            for p in ("pop3", "imap4"):
                host.protos[p] = Proto(value=self.rng.random() < 0.05, running=self.rng.random() < 0.6)
            self.hosts.append(host)
            self.out.add(Server, {"id": i + 1, "name": host.name, "name_key": host.name.casefold(),
                                  "first_seen_run_id": 1})
        self.server_id = {h.name: i + 1 for i, h in enumerate(self.hosts)}

    # -- documents ----------------------------------------------------------------------

    def doc(self, kind: str, text: str) -> int:
        key = digest(kind, text)
        found = self.docs.get(key)
        if found is None:
            found = self.docs[key] = self.ids("document")
            self.out.add(Document, {"id": found, "sha256": key, "kind": kind, "body": text})
        return found

    def blob(self, content: bytes, at: datetime) -> str:
        sha = hashlib.sha256(content).hexdigest()
        if sha not in self.blobs:
            self.blobs.add(sha)
            self.out.add(ConfigBlob, {"sha256": sha, "content": content, "size": len(content), "first_seen_at": at})
        return sha

    # -- one day ------------------------------------------------------------------------

    def drift(self, day: int, at: datetime) -> dict[str, set[str]]:
        """Change the estate before day `day`'s scan; returns what happened per server."""
        events: dict[str, set[str]] = {}
        waves = [(int(self.days * 0.25), 0.25), (int(self.days * 0.6), 0.5)]
        for host in self.hosts:
            happened: set[str] = set()
            for p in host.protos.values():  # services restarted the day after an edit
                if p.running and p.started < p.modified:
                    p.started = p.modified + timedelta(days=1)
            for first, share in waves:
                if first <= day < first + 3 and host.build in ("SP1", "SP2") and self.rng.random() < share / 3:
                    host.build = "SP3"
                    for p in host.protos.values():
                        if p.value:
                            happened.add("reset")
                        p.value, p.variant, p.modified = False, 0, at - timedelta(hours=3)
                        if p.running:
                            p.started = at - timedelta(hours=2)
                    happened.add("upgrade")
            rollup_day = int(self.days * 0.45)
            if rollup_day <= day < rollup_day + 2 and host.build == "SP3" and self.rng.random() < 0.17:
                host.build = "SP3-new"
                happened.add("upgrade")
            if day and self.rng.random() < 0.003:
                protocol = self.rng.choice(("pop3", "imap4"))
                p = host.protos[protocol]
                p.value, p.variant, p.modified = not p.value, self.ids("edit"), at - timedelta(hours=5)
                happened.add(f"edit:{protocol}")
            if day and self.rng.random() < 0.005:
                happened.add("failed")
            if happened:
                events[host.name] = happened
        return events

    def observation(self, host: Host, at: datetime) -> ServerObservation:
        sp, build, rollup = BUILDS[host.build]
        protocols = {}
        for name, p in host.protos.items():
            content = config_bytes(p.value, p.variant)
            protocols[name] = ProtocolObservation(
                protocol=name, allow_cross_site=p.value, value_source="file", config_status="ok",
                raw_value="true" if p.value else "false",
                config_path=f"{INSTALL}\\ClientAccess\\PopImap\\{CONFIG_NAMES[name]}",
                config_sha256=hashlib.sha256(content).hexdigest(), config_bytes=content,
                config_length=len(content), config_modified=p.modified, config_encoding="utf-8", key_notes=(),
                service="Running" if p.running else "Stopped", start_mode="Auto" if p.running else "Manual",
                service_started=p.started if p.running else None,
                pending_restart=p.running and p.modified > p.started, detail="",
            )
        return ServerObservation(
            name=host.name, address=host.address, site=host.site, scan_status="ok", started_at=at,
            finished_at=at + timedelta(seconds=2), computer=host.name, reported_site=host.site, build=build,
            service_pack=sp, rollup=rollup, build_recognised=True, rollup_listed=rollup,
            install_path=INSTALL + "\\", setup_key="Setup", ps_version="1.0",
            events_since=at - timedelta(days=1), protocols=protocols,
        )

    def day(self, day: int, evaluate: bool) -> None:
        at = START + timedelta(days=day)
        events = self.drift(day, at)
        run_id = self.ids("run")
        failed = sum(1 for e in events.values() if "failed" in e)
        self.out.add(ScanRun, {
            "id": run_id, "started_at": at, "finished_at": at + timedelta(minutes=20),
            "status": "partial" if failed else "complete", "servers_planned": len(self.hosts),
            "servers_scanned": len(self.hosts) - failed, "servers_failed": failed, "tool_version": "bench",
            "catalog_version": self.catalog.version, "operator": "CONTOSO\\svc-audit", "scanning_host": "audit01",
            "inventory_sha256": "0" * 64, "policy_sha256": None, "policy_text": None, "site_filter": None,
            "organisation": "CONTOSO",
        })
        current: dict[str, ServerObservation] = {}
        for position, host in enumerate(self.hosts):
            happened = events.get(host.name, set())
            self.out.add(RunServer, {"run_id": run_id, "server_id": self.server_id[host.name], "position": position,
                                     "address": host.address, "inventory_site": host.site})
            scan_id = self.ids("scan")
            if "failed" in happened:
                failure = ServerObservation(name=host.name, address=host.address, site=host.site,
                                            scan_status="error", started_at=at, finished_at=at + timedelta(seconds=60),
                                            error_kind="timeout", error="no answer within 60 s")
                self.out.add(ServerScan, {
                    "id": scan_id, "run_id": run_id, "server_id": self.server_id[host.name], "scan_status": "error",
                    "error_kind": "timeout", "error_message": "no answer within 60 s", "started_at": at,
                    "finished_at": at + timedelta(seconds=60), "events_since": None, "site": host.site,
                    "state_id": self.doc("server", dumps(server_state(failure)))})
                current[host.name.casefold()] = failure
                continue
            obs = self.observation(host, at)
            self.out.add(ServerScan, {
                "id": scan_id, "run_id": run_id, "server_id": self.server_id[host.name], "scan_status": "ok",
                "error_kind": None, "error_message": None, "started_at": obs.started_at,
                "finished_at": obs.finished_at, "events_since": obs.events_since, "site": host.site,
                "state_id": self.doc("server", dumps(server_state(obs)))})
            for name, p in obs.protocols.items():
                assert p.config_bytes is not None
                sha = self.blob(p.config_bytes, at)
                self.out.add(Observation, {"id": self.ids("observation"), "server_scan_id": scan_id, "protocol": name,
                                           "state_id": self.doc("protocol", dumps(protocol_state(p, sha)))})
            current[host.name.casefold()] = obs
        if evaluate:
            self.evaluate(run_id, at, current)
        for key, obs in current.items():
            if obs.scan_status == "ok":
                for name, p in obs.protocols.items():
                    self.previous[(key, name)] = Previous(run_id, obs, p)

    def evaluate(self, run_id: int, at: datetime, current: dict[str, ServerObservation]) -> None:
        """The run's findings as `cas-audit scan` saves them: the real checks and lifecycle
        over this run and each server's previous observation, kept in memory."""
        planned = [PlannedServer(h.name, h.address, h.site) for h in self.hosts]
        inp = CheckInput(run_id=run_id, run_at=at, planned=planned, current=current, previous=self.previous,
                         policy=self.policy)
        result = evaluate(inp, self.policy, self.catalog, run_started_at=at, previous_run_id=run_id - 1,
                          previous_findings=self.last_findings)
        for row in result.findings:
            body, volatile = finding_document(
                rule=row.rule, severity=row.severity, state=row.state, server_name=row.server_name, site=row.site,
                protocol=row.protocol, message=row.message, evidence=row.evidence,
                first_seen_run_id=row.first_seen_run_id, first_seen_at=row.first_seen_at, waiver=row.waiver)
            self.out.add(Finding, {"id": self.ids("finding"), "run_id": run_id,
                                   "server_id": self.server_id.get(row.server_name or ""),
                                   "body_id": self.doc("finding", body), "extra": volatile})
        self.last_findings = [replace(row, run_id=run_id) for row in result.findings]


def generate(url: str, servers: int, days: int, seed: int = 7, *, quiet: bool = False) -> dict[str, int]:
    """Write the history into the empty database at `url`; returns row counts by table."""
    open_store(url).close()  # schema at head
    engine = make_engine(url)
    history = History(engine, servers, days, seed)
    started = time.perf_counter()
    for day in range(days):
        history.day(day, evaluate=day < days - 1)
        if sum(len(rows) for rows in history.out.rows.values()) > 50_000 or day == days - 1:
            history.out.flush()
        if not quiet and day % 30 == 0:
            print(f"  day {day}/{days} {time.perf_counter() - started:.1f} s", flush=True)
    history.out.flush()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # statistics before sealing reads every run back
            conn.exec_driver_sql("ANALYZE")
    sealing = time.perf_counter()
    with Session(engine) as session, session.begin():  # every run sealed, as `scan` seals it when it ends
        sealed = seal_backlog(session, datetime.now(UTC))
    if not quiet:
        print(f"  sealed {len(sealed)} runs in {time.perf_counter() - sealing:.1f} s", flush=True)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # explicit ids: move the sequences past them
            for table in ("scan_runs", "servers", "documents", "server_scans", "observations", "findings"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            # what autovacuum does after a load this size; without statistics the planner
            # reads every scan of a server to find its newest (bench/README.md)
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return history.out.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    counts = generate(args.url, args.servers, args.days, args.seed)
    print(f"generated in {time.perf_counter() - started:.1f} s: {counts}")


if __name__ == "__main__":
    main()

"""The canonical encoding of what a run recorded (docs/seal.md, `cas-audit-seal/1`), and its
SHA-256: one run at a time when it is sealed (`ContentReader`), every run of the history
in a few streamed queries when `verify` recomputes the chain (`history_digests`).

Both build the same bytes from the same rows with the same code (`_RunEncoder`): the JSON
that `json.dumps(content, sort_keys=True, ensure_ascii=True, separators=(",", ":"))` gives
for the structure below, written piece by piece (each document's entry encoded once,
times formatted by the database where it can) instead of building ~3,000 dicts per run.

    {"changes": [...], "changes_through": N,       (only in links that cover changes)
     "findings": [[server, document, extra], ...],
     "planned": [[name, position, address, site], ...],
     "resolved": [[rule, server, protocol], ...],
     "run": {column: value, ...},
     "scans": [{"error_kind", "error_message", "events_since", "finished_at",
                "observations": [{"protocol", "refused_logons": [[at, user, site, cas]],
                                  "state"}], "scan_status", "server", "site", "started_at",
                "state"}, ...]}                     (scans sorted by server name)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain, groupby
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session

from scanner.store.documents import digest as document_key
from scanner.store.documents import reference_sha256
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
    Server,
    ServerScan,
    UTCDateTime,
)

_CHUNK = 500
_STREAM = 5_000  # rows fetched at a time from a streamed query
_Query = Select[*tuple[Any, ...]]
_SQLITE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}")  # as SQLAlchemy stores one


def when(value: datetime | None) -> str | None:
    """A time in the canonical encoding: UTC, microseconds, `Z`."""
    if value is None:
        return None
    v = value.astimezone(UTC) if value.tzinfo is not None else value
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
            f".{v.microsecond:06d}Z")


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    return value


def canonical(value: Any) -> bytes:
    """The canonical bytes of a JSON-able value (sorted keys, ASCII, compact)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"),
                      allow_nan=False).encode("ascii")


def _json(value: Any) -> str:
    """One value in the canonical encoding (as `canonical`, as text): a fast path for text and null.
    A value no cas-audit writes (bytes where text belongs, after an edit outside cas-audit) is
    encoded as `unreadable`: the run's digest then differs from its seal, and verify names it."""
    if value is None:
        return "null"
    if type(value) is str:
        return encode_basestring_ascii(value)
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return unreadable(value)


def unreadable(value: Any) -> str:
    """The encoding of a stored value of a type or form cas-audit never writes: a JSON object,
    where every readable value is a string, number, list or null, so no edit can make it
    equal to what was sealed."""
    return f'{{"unreadable":{encode_basestring_ascii(type(value).__name__)}}}'


class _Times:
    """Times read as their canonical JSON text: PostgreSQL formats them itself (`to_char`
    in UTC); SQLite's stored text is rewritten when it has the form SQLAlchemy writes
    (`YYYY-MM-DD HH:MM:SS.ffffff`, naive UTC), and anything else there goes through the
    column type, as `when` saw it before."""

    def __init__(self, session: Session) -> None:
        dialect = session.get_bind().dialect
        self.postgresql = dialect.name == "postgresql"
        self._parse = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
        self.json: Callable[[Any], str] = self._formatted if self.postgresql else self._stored

    def column(self, column: Any) -> ColumnElement[Any]:
        """What to select for the time `column`: the value `json` takes."""
        if self.postgresql:
            utc = column.op("AT TIME ZONE")(literal_column("'UTC'"))
            quote = literal_column("'\"'", String)
            return quote + func.to_char(utc, literal_column("'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"),
                                        type_=String) + quote
        return type_coerce(column, String)  # the stored text, without the column type's parsing

    @staticmethod
    def _formatted(value: str | None) -> str:
        return "null" if value is None else value

    def _stored(self, value: Any) -> str:
        if type(value) is str and _SQLITE_TIME.fullmatch(value):
            return f'"{value[:10]}T{value[11:]}Z"'
        if value is None:
            return "null"
        try:
            return _json(when(self._parse(value) if self._parse is not None else value))
        except (TypeError, ValueError, OverflowError, AttributeError):  # no time, after an edit outside cas-audit
            return unreadable(value)


class _Documents:
    """The entry of each document (`{"sha256": ...}` with the config files a protocol
    document names), hashed once from the stored text and bytes, kept as encoded text."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._entries: dict[int, str] = {}

    def load(self, ids: Iterable[int]) -> None:
        missing = sorted({i for i in ids if i not in self._entries})
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start:start + _CHUNK]
            named: dict[int, tuple[str, tuple[str, ...]]] = {}
            for doc_id, kind, body in self._session.connection().execute(
                    select(Document.id, Document.kind, Document.body).where(Document.id.in_(chunk))):
                files: tuple[str, ...] = ()
                if kind == "protocol":
                    try:
                        state = json.loads(body)
                    except (ValueError, TypeError):
                        state = {}
                    if isinstance(state, dict):
                        files = tuple(sha for sha in (state.get("config_sha256"), reference_sha256(state))
                                      if isinstance(sha, str))
                named[doc_id] = (document_key(kind, body), files)
            blobs = self._blobs({key for _, files in named.values() for key in files})
            for doc_id in chunk:
                known = named.get(doc_id)
                if known is None:
                    self._entries[doc_id] = _json({"missing": True})
                    continue
                sha, files = known
                entry: dict[str, Any] = {"sha256": sha}
                if files:
                    entry["files"] = [[key, blobs.get(key)] for key in files]
                self._entries[doc_id] = _json(entry)

    def _blobs(self, keys: set[str]) -> dict[str, str]:
        """SHA-256 of the stored bytes of the config files `keys` (absent: not stored)."""
        found: dict[str, str] = {}
        ordered = sorted(keys)
        for start in range(0, len(ordered), _CHUNK):
            for key, content in self._session.connection().execute(select(ConfigBlob.sha256, ConfigBlob.content)
                                                      .where(ConfigBlob.sha256.in_(ordered[start:start + _CHUNK]))):
                if isinstance(content, bytes):
                    found[key] = hashlib.sha256(content).hexdigest()
                elif content is not None:  # text or a number where the file's bytes belong
                    found[key] = unreadable(content)
        return found

    @property
    def entries(self) -> Mapping[int, str]:
        """The encoded entry of every document loaded, by id."""
        return self._entries


class _Statements:
    """The rows of a run's content, for one run (`run_id`) or every run ordered by run id."""

    def __init__(self, times: _Times) -> None:
        self.t = times

    def _scoped(self, query: _Query, run_column: Any, run_id: int | None, *order: Any) -> _Query:
        if run_id is not None:
            return query.where(run_column == run_id).order_by(*order)
        return query.order_by(run_column, *order)

    def with_times(self, columns: Iterable[Any]) -> list[Any]:
        """`columns` with each time column selected as `_Times.column` (the stored text), so that
        a value that is no time is encoded as unreadable instead of failing the whole read."""
        return [self.t.column(c).label(c.name) if isinstance(c.type, UTCDateTime) else c for c in columns]

    def runs(self, run_id: int | None) -> _Query:
        query = select(*self.with_times(ScanRun.__table__.columns))
        return query.where(ScanRun.id == run_id) if run_id is not None else query.order_by(ScanRun.id)

    def planned(self, run_id: int | None) -> _Query:
        return self._scoped(select(RunServer.run_id, Server.name, RunServer.position, RunServer.address,
                                   RunServer.inventory_site).join(Server, Server.id == RunServer.server_id),
                            RunServer.run_id, run_id, RunServer.position)

    def scans(self, run_id: int | None) -> _Query:
        t = self.t
        return self._scoped(
            select(ServerScan.run_id, ServerScan.id, Server.name, ServerScan.scan_status, ServerScan.error_kind,
                   ServerScan.error_message, t.column(ServerScan.started_at), t.column(ServerScan.finished_at),
                   t.column(ServerScan.events_since), ServerScan.site, ServerScan.state_id)
            .join(Server, Server.id == ServerScan.server_id), ServerScan.run_id, run_id)

    def observations(self, run_id: int | None) -> _Query:
        return self._scoped(
            select(ServerScan.run_id, Observation.id, Observation.server_scan_id, Observation.protocol,
                   Observation.state_id).join(ServerScan, ServerScan.id == Observation.server_scan_id),
            ServerScan.run_id, run_id, Observation.id)

    def refused(self, run_id: int | None) -> _Query:
        return self._scoped(
            select(ServerScan.run_id, RefusedLogon.observation_id, self.t.column(RefusedLogon.at),
                   RefusedLogon.user_name, RefusedLogon.mailbox_site, RefusedLogon.cas)
            .join(Observation, Observation.id == RefusedLogon.observation_id)
            .join(ServerScan, ServerScan.id == Observation.server_scan_id),
            ServerScan.run_id, run_id, RefusedLogon.id)

    def findings(self, run_id: int | None) -> _Query:
        return self._scoped(
            select(Finding.run_id, Server.name, Finding.body_id, Finding.extra)
            .outerjoin(Server, Server.id == Finding.server_id), Finding.run_id, run_id, Finding.id)

    def resolved(self, run_id: int | None) -> _Query:
        return self._scoped(select(ResolvedFinding.run_id, ResolvedFinding.rule, ResolvedFinding.server_name,
                                   ResolvedFinding.protocol), ResolvedFinding.run_id, run_id, ResolvedFinding.id)


_PARTS = ("planned", "scans", "observations", "refused", "findings", "resolved")


class _RunEncoder:
    """The canonical bytes of one run from its rows (each row's first column is the run id)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.times = _Times(session)
        self.statements = _Statements(self.times)
        self.documents = _Documents(session)

    def changes(self, after: int, through: int) -> str:
        """The encoded changes `fix apply`/`fix rollback` recorded with ids in (after, through], in order."""
        columns = [c for c in Change.__table__.columns if c.name != "id"]
        rows = self._session.connection().execute(
            select(*self.statements.with_times(columns)).where(Change.id > after, Change.id <= through)
            .order_by(Change.id))
        return "[" + ",".join("[" + ",".join(self._field(column, value) for column, value in zip(columns, row, strict=True))
                              + "]" for row in rows) + "]"

    def _field(self, column: Any, value: Any) -> str:
        """One stored value of `column` in the canonical encoding."""
        return self.times.json(value) if isinstance(column.type, UTCDateTime) else _json(_value(value))

    def _run(self, run: RowMapping) -> str:
        """The run's row as the JSON object `{column: value}` with sorted keys."""
        columns = ScanRun.__table__.columns
        return "{" + ",".join(f"{encode_basestring_ascii(key)}:{self._field(columns[key], run[key])}"
                              for key in sorted(run.keys())) + "}"

    def digest(self, run: RowMapping, rows: Mapping[str, Sequence[Any]],
               changes: tuple[int, int] | None) -> str:
        """SHA-256 of the run's canonical encoding; with `changes` (after, through) the
        changes recorded since the previous run link are part of it."""
        tj = self.times.json
        q = _json
        docs = self.documents
        docs.load([row[-1] for row in rows["scans"]] + [row[-1] for row in rows["observations"]]
                  + [row[2] for row in rows["findings"]])
        entry = docs.entries.__getitem__
        refused: dict[int, list[str]] = defaultdict(list)
        for _, observation_id, at, user, mailbox_site, cas in rows["refused"]:
            refused[observation_id].append(f"[{tj(at)},{q(user)},{q(mailbox_site)},{q(cas)}]")
        by_scan: dict[int, list[str]] = defaultdict(list)
        for _, obs_id, scan_id, protocol, state_id in rows["observations"]:
            logons = refused.get(obs_id)
            by_scan[scan_id].append(f'{{"protocol":{q(protocol)},"refused_logons":'
                                    f'[{",".join(logons) if logons else ""}],"state":{entry(state_id)}}}')
        scans = sorted(
            (name, f'{{"error_kind":{q(kind)},"error_message":{q(message)},'
                   f'"events_since":{tj(since)},"finished_at":{tj(finished)},'
                   f'"observations":[{",".join(by_scan.get(scan_id, ()))}],"scan_status":{q(status)},'
                   f'"server":{q(name)},"site":{q(site)},"started_at":{tj(started)},'
                   f'"state":{entry(state_id)}}}')
            for _, scan_id, name, status, kind, message, started, finished, since, site, state_id in rows["scans"])
        parts = ["{"]
        if changes is not None:
            parts.append(f'"changes":{self.changes(*changes)},"changes_through":{q(changes[1])},')
        parts.append('"findings":[')
        parts.append(",".join([f"[{q(name)},{entry(body_id)},{q(extra)}]" for _, name, body_id, extra in rows["findings"]]))
        parts.append(f'],"planned":{q([list(row[1:]) for row in rows["planned"]])}')
        parts.append(f',"resolved":{q([list(row[1:]) for row in rows["resolved"]])}')
        parts.append(f',"run":{self._run(run)},"scans":[')
        parts.append(",".join([fragment for _, fragment in scans]))
        parts.append("]}")
        return hashlib.sha256("".join(parts).encode("ascii")).hexdigest()


class ContentReader:
    """Computes run digests one run at a time (sealing), hashing each document and config
    file once (from its stored bytes)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._encoder = _RunEncoder(session)

    def digest(self, run_id: int, changes: tuple[int, int] | None = None) -> str | None:
        """SHA-256 of the run's canonical encoding (None: no such run); with `changes`
        (after, through) the changes recorded since the previous run link are part of it."""
        s, statements = self._session.connection(), self._encoder.statements
        run = s.execute(statements.runs(run_id)).mappings().first()
        if run is None:
            return None
        rows = {part: s.execute(getattr(statements, part)(run_id)).all() for part in _PARTS}
        return self._encoder.digest(run, rows, changes)


class _Stream:
    """One streamed query's rows, handed out run by run (rows ordered by their first column)."""

    def __init__(self, rows: Iterator[Any]) -> None:
        self._groups = groupby(rows, key=itemgetter(0))
        self._head: tuple[int, Iterator[Any]] | None = None
        self._done = False

    def take(self, run_id: int) -> list[Any]:
        """The rows of run `run_id` (runs before it are skipped: call in increasing order)."""
        while not self._done:
            if self._head is None:
                self._head = next(self._groups, None)
                if self._head is None:
                    self._done = True
                    break
            key, group = self._head
            if key > run_id:
                return []
            self._head = None
            if key == run_id:
                return list(group)
        return []


def history_digests(session: Session, wanted: Mapping[int, tuple[int, int] | None],
                    progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, str]]:
    """(run id, digest) of every run in `wanted` that exists, in run id order, `wanted`
    giving each run's changes range as `ContentReader.digest` takes it. Reads each table
    once, in run id order, streamed: memory holds one run's rows and the documents' hashes."""
    encoder = _RunEncoder(session)
    statements = encoder.statements

    conn = session.connection()  # Core rows: no ORM result processing

    def stream(query: _Query) -> Iterator[Any]:  # rows taken a batch at a time, not one by one
        return chain.from_iterable(conn.execute(query, execution_options={"yield_per": _STREAM}).partitions())

    runs = conn.execute(statements.runs(None), execution_options={"yield_per": _STREAM}).mappings()
    streams = {part: _Stream(stream(getattr(statements, part)(None))) for part in _PARTS}
    for run in runs:
        run_id = run["id"]
        rows = {part: streams[part].take(run_id) for part in _PARTS}
        if run_id in wanted:
            yield run_id, encoder.digest(run, rows, wanted[run_id])
            if progress is not None:
                progress(run_id)

"""The history's seal chain: a tamper-evident record of every finished run.

When a run ends (complete, partial or aborted, also when the next command records a dead
scanner's run aborted) it is *sealed* in the same transaction: the SHA-256 `digest` of
the canonical encoding of everything the run recorded, and the chain hash

    seal = SHA-256("cas-audit-seal/1\\n" + kind + "\\n" + previous seal + "\\n" + digest)

stored at the next `position` of `seal_chain` (the first link's previous seal is 64 zeros).
Sealing takes a lock first (PostgreSQL: an advisory transaction lock; SQLite: the write
lock every write transaction holds), so concurrent scanners seal one after another, in the
order they finish, and the position is stored: `verify` follows it.

`prune` removes runs but their links stay; it appends a *checkpoint* link whose body names
every removed run with its position and digest, and the seal of the link before it (the
boundary), so the rest of the chain stays verifiable without the removed rows.

The canonical encoding (docs/seal.md) is JSON with sorted keys, ASCII only, no spaces;
times as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC; row ids that are not content are left out,
but order is kept (lists in the order the rows were written). The documents a run refers
to and the config files they name enter by their SHA-256, recomputed from the stored bytes
whenever a digest is computed, so the encoding is the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from scanner.store.models import Change, ScanRun, SealEntry
from scanner.store.seal_content import ContentReader, canonical, history_digests, when

SEAL_VERSION = "cas-audit-seal/1"
GENESIS = "0" * 64
PG_SEAL_LOCK_KEY = 0x6361_7373_6561_6C73  # "cassseals": held while a link is appended


def chain_hash(previous: str, kind: str, digest: str) -> str:
    """The seal of a link: over the previous link's seal and this link's digest."""
    return hashlib.sha256(f"{SEAL_VERSION}\n{kind}\n{previous}\n{digest}".encode("ascii")).hexdigest()


def _through(body: str | None) -> int | None:
    """The last change id a run link covers (None: a link without changes)."""
    if not body:
        return None
    try:
        value = json.loads(body).get("changes_through")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _changes_range(session: Session, before_position: int | None = None) -> tuple[int, int]:
    """(the last change id an earlier run link covers, the newest change id now)."""
    query = select(SealEntry.body).where(SealEntry.kind == "run", SealEntry.body.is_not(None))
    if before_position is not None:
        query = query.where(SealEntry.position < before_position)
    last = session.scalar(query.order_by(SealEntry.position.desc()).limit(1))
    newest = session.scalar(select(func.max(Change.id))) or 0
    return _through(last) or 0, int(newest)


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_SEAL_LOCK_KEY})


def _append(session: Session, *, kind: str, run_id: int | None, digest: str, now: datetime,
            body: str | None = None) -> SealEntry:
    last = session.execute(select(SealEntry.position, SealEntry.seal)
                           .order_by(SealEntry.position.desc()).limit(1)).first()
    position, previous = (last[0] + 1, last[1]) if last is not None else (1, GENESIS)
    entry = SealEntry(position=position, kind=kind, run_id=run_id, digest=digest,
                      seal=chain_hash(previous, kind, digest), sealed_at=now, body=body)
    session.add(entry)
    session.flush()
    return entry


def seal_run(session: Session, run_id: int, now: datetime) -> str:
    """Seal a finished run inside the caller's write transaction (after its last write);
    returns its seal. A run sealed before keeps its seal."""
    _lock_chain(session)
    existing = session.scalar(select(SealEntry.seal).where(SealEntry.run_id == run_id))
    if existing is not None:
        return existing
    changes = _changes_range(session)
    digest = ContentReader(session).digest(run_id, changes)
    if digest is None:
        raise ValueError(f"no run {run_id} to seal")
    return _append(session, kind="run", run_id=run_id, digest=digest, now=now,
                   body=canonical({"changes_through": changes[1]}).decode("ascii")).seal


def reseal_tail(session: Session, run_id: int) -> bool:
    """Recompute the link of run `run_id` after a late write (findings saved after the run
    was finished), when it is still the newest link (no seal depends on it yet). Returns
    False when a later link exists: the run then no longer matches its seal."""
    _lock_chain(session)
    last = session.execute(select(SealEntry).order_by(SealEntry.position.desc()).limit(1)).scalar_one_or_none()
    if last is None or last.run_id != run_id:
        return False
    previous = session.scalar(select(SealEntry.seal).where(SealEntry.position == last.position - 1)) or GENESIS
    through = _through(last.body)
    after = _changes_range(session, last.position)[0]
    digest = ContentReader(session).digest(run_id, None if through is None else (after, through))
    assert digest is not None
    last.digest, last.seal = digest, chain_hash(previous, "run", digest)
    session.flush()
    return True


def is_sealed(session: Session, run_id: int) -> bool:
    """Whether the run has a link in the chain (nothing of it may change any more)."""
    return session.scalar(select(SealEntry.position).where(SealEntry.run_id == run_id)) is not None


def run_seal(session: Session, run_id: int) -> str | None:
    """The run's seal, None while it is not sealed."""
    return session.scalar(select(SealEntry.seal).where(SealEntry.run_id == run_id))


def run_changes_through(session: Session, run_id: int) -> int | None:
    """The newest change id recorded when the run was sealed (at its end); None while it is
    not sealed or for a link without changes."""
    return _through(session.scalar(select(SealEntry.body).where(SealEntry.run_id == run_id)))


def head_seal(session: Session) -> str | None:
    """The newest link's seal (None: an empty chain)."""
    return session.scalar(select(SealEntry.seal).order_by(SealEntry.position.desc()).limit(1))


def checkpoint(session: Session, removed_run_ids: Sequence[int], before: datetime, now: datetime) -> str | None:
    """Append prune's checkpoint for `removed_run_ids` (before they are deleted, inside the
    deleting transaction); returns its seal (None when no sealed run is removed)."""
    _lock_chain(session)
    rows = session.execute(select(SealEntry.run_id, SealEntry.position, SealEntry.digest)
                           .where(SealEntry.run_id.in_(list(removed_run_ids))).order_by(SealEntry.position)).all()
    if not rows:
        return None
    boundary = head_seal(session) or GENESIS
    body = canonical({"removed": [{"run_id": run_id, "position": position, "digest": digest}
                                  for run_id, position, digest in rows],
                      "before": when(before), "boundary_seal": boundary}).decode("ascii")
    return _append(session, kind="checkpoint", run_id=None, now=now, body=body,
                   digest=hashlib.sha256(body.encode("ascii")).hexdigest()).seal


def seal_backlog(session: Session, now: datetime) -> list[int]:
    """Seal every finished run not sealed yet, in run id order (an upgrade from before the
    chain existed: `scanner.store.db.upgrade`). Returns the run ids sealed."""
    _lock_chain(session)
    sealed = set(session.scalars(select(SealEntry.run_id).where(SealEntry.run_id.is_not(None))))
    pending = [run_id for run_id in session.scalars(select(ScanRun.id).where(ScanRun.status != "running")
                                                     .order_by(ScanRun.id)) if run_id not in sealed]
    reader = ContentReader(session)
    for run_id in pending:
        changes = _changes_range(session)
        digest = reader.digest(run_id, changes)
        assert digest is not None
        _append(session, kind="run", run_id=run_id, digest=digest, now=now,
                body=canonical({"changes_through": changes[1]}).decode("ascii"))
    return pending


@dataclass(frozen=True)
class Break:
    """Where the chain stops matching the history."""

    position: int | None
    run_id: int | None
    reason: str


@dataclass(frozen=True)
class Verification:
    links: int  # links checked
    runs: int  # runs recomputed from their rows
    pruned: int  # runs removed by prune, covered by a checkpoint
    head: str | None  # the last link's seal
    broken: Break | None


def verify_chain(session: Session) -> Verification:
    """Recompute the chain from the history's rows; stop at the first link that does not match.

    Every run's digest is computed first, in one streamed pass over the history in run id
    order (`history_digests`), then the links are followed in position order."""
    if session.get_bind().dialect.name == "postgresql":  # one snapshot for every query below
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    entries = session.execute(select(SealEntry.position, SealEntry.kind, SealEntry.run_id, SealEntry.digest,
                                     SealEntry.seal, SealEntry.body).order_by(SealEntry.position)).all()
    existing = set(session.scalars(select(ScanRun.id)))
    finished = set(session.scalars(select(ScanRun.id).where(ScanRun.status != "running")))
    pruned: dict[int, tuple[int, str]] = {}  # run id -> (position, digest) as a checkpoint names it
    wanted: dict[int, tuple[int, int] | None] = {}  # run id -> the changes its link covers
    covered = 0
    for entry in entries:
        if entry.kind == "checkpoint" and entry.body:
            try:
                for item in json.loads(entry.body).get("removed", []):
                    pruned[int(item["run_id"])] = (int(item["position"]), str(item["digest"]))
            except (ValueError, TypeError, KeyError, AttributeError):
                pass  # an edited body: its own digest no longer matches below
        elif entry.kind == "run" and entry.run_id is not None:
            through = _through(entry.body)
            if entry.run_id in existing and entry.run_id not in wanted:
                wanted[entry.run_id] = None if through is None else (covered, through)
            covered = through or covered
    digests = dict(history_digests(session, wanted))
    previous, runs, removed = GENESIS, 0, 0

    def result(broken: Break | None, count: int) -> Verification:
        return Verification(count, runs, removed, entries[-1].seal if entries else None, broken)

    sealed_runs = {entry.run_id for entry in entries if entry.run_id is not None}
    unsealed = sorted(finished - sealed_runs)
    for index, entry in enumerate(entries):
        position, kind, run_id = entry.position, entry.kind, entry.run_id
        if position != index + 1:
            which = f": run {unsealed[0]} is finished but has no link" if unsealed else ""
            return result(Break(index + 1, unsealed[0] if unsealed else None,
                                f"link {index + 1} of the chain is missing{which}"), index)
        if kind == "run" and run_id is not None:
            if run_id in existing:
                digest = digests.get(run_id)
                runs += 1
            elif run_id in pruned and pruned[run_id][0] == position:
                digest = pruned[run_id][1]
                removed += 1
            else:
                return result(Break(position, run_id, f"run {run_id} was removed from the history "
                                    "without a prune checkpoint"), index)
        elif kind == "checkpoint":
            digest = hashlib.sha256((entry.body or "").encode("utf-8", "surrogatepass")).hexdigest()
        else:
            return result(Break(position, run_id, f"link {position} is of an unknown kind"), index)
        expected = chain_hash(previous, kind, digest or "")
        if expected != entry.seal:
            what = f"run {run_id}" if kind == "run" else f"the prune checkpoint at link {position}"
            if digest != entry.digest:
                why = f"{what} no longer matches its seal: what it recorded was changed"
            else:
                why = f"{what} is not where it was sealed: the order of the chain or a seal was changed"
            return result(Break(position, run_id, why), index)
        previous = entry.seal
    if unsealed:
        return result(Break(None, unsealed[0], f"run {unsealed[0]} is finished but not sealed "
                            "(added to the history, or its link removed, outside cas-audit)"), len(entries))
    return result(None, len(entries))

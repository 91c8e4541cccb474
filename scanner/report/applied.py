"""The next scan verifies: which recorded change (`cas-audit fix apply`, the `changes`
table) resolved a finding, and the changes recorded in a run's window
(docs/remediation.md, "The next scan verifies").

The run window of run N: changes recorded after the start of the previous finished run
(complete or partial; the run N's findings were compared with) up to N's finish (open
ends: no previous run, or a run that has not finished). Scan times are kept to the second,
so "up to" a scan's finish includes changes recorded within that second, except those the
run's seal (made at its end) did not cover yet.

A finding resolved in run N (rule, server, protocol) was resolved by change C when:
- the rule is one a fix plan acts on, XS-001, XS-002, XS-003 (the file) or XS-005 (the
  restart), or XS-004 (a value changed by hand that the change put back);
- C was recorded for that server (names compared case-insensitively, as the inventory
  does) and protocol, after the previous successful scan of that server's protocol
  started and no later than run N's scan of the server finished (to the second);
- C is an `apply` that took effect: for XS-001..XS-004 its result is `done` (the script
  wrote the file and checked the written hash) and the file run N scanned has exactly
  C's after SHA-256; for XS-005 it restarted the service (`restart` = `restarted`) and,
  when it wrote a file, that file is what run N scanned;
- no `rollback` with result `done` on that server and protocol was recorded after C
  (rollbacks later in the window undo it); of several changes the latest one counts.
Anything else (a hand edit, a change whose file was changed again) is resolved without
a change: reports then say only "resolved".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from scanner.judge.explained import EDIT_RULES, RESTART_RULES, SECOND, between_scans, resolving_change
from scanner.parse.observe import ServerObservation
from scanner.report.model import ResolvedInfo
from scanner.store.changes import ChangeRecord, changes_between
from scanner.store.models import RunRow
from scanner.store.repo import Store

__all__ = ["AppliedBounds", "applied_bounds", "applied_context"]

def _key(server: str, protocol: str) -> tuple[str, str]:
    return server.casefold(), protocol.casefold()


@dataclass(frozen=True)
class AppliedBounds:
    """Where the history's changes are read from for a run: the window's start, and per
    resolved (server, protocol) the start of its previous successful scan (None: open).
    Read from other runs, so kept in the run's context when prune removes them
    (report/context.py)."""

    after: datetime | None
    since: dict[tuple[str, str], datetime | None]


def applied_bounds(store: Store, run: RunRow, servers: Sequence[ServerObservation],
                   resolved: Sequence[tuple[str, str | None, str | None]]) -> AppliedBounds:
    """The bounds of run `run` as the history holds them now."""
    previous_run = store.previous_finished_run(run.id)
    start = None if previous_run is None else store.run(previous_run).started_at
    observed = {s.name.casefold(): s for s in servers if s.scan_status == "ok"}
    wanted = [(name, proto) for rule, name, proto in resolved
              if name and proto and (rule in EDIT_RULES or rule in RESTART_RULES)
              and name.casefold() in observed and proto in observed[name.casefold()].protocols]
    since: dict[tuple[str, str], datetime | None] = {}
    if wanted:
        names = sorted({name for name, _ in wanted}, key=str.casefold)
        previous = store.previous_successful_many(run.id, names, sorted({proto for _, proto in wanted}))
        for name, proto in wanted:
            found = previous.get((name.casefold(), proto))
            since[_key(name, proto)] = found[1].started_at if found is not None else start
    return AppliedBounds(start, since)


def applied_context(store: Store, run: RunRow, servers: Sequence[ServerObservation],
                    resolved: Sequence[tuple[str, str | None, str | None]], bounds: AppliedBounds
                    ) -> tuple[tuple[datetime | None, datetime | None], tuple[ChangeRecord, ...], tuple[ResolvedInfo, ...]]:
    """The run window, the changes recorded in it, and the resolved findings of the run,
    each with the change that resolved it (or None)."""
    start, end, since = bounds.after, run.finished_at, bounds.since
    observed = {s.name.casefold(): s for s in servers if s.scan_status == "ok"}
    earliest = start
    if any(moment is None for moment in since.values()):
        earliest = None
    elif since:
        earliest = min([m for m in since.values() if m is not None] + ([start] if start is not None else []))
    # scan times are kept to the second (scan.py): a change recorded within the second a scan
    # finished counts as before its end, unless the run's seal (made at its end) says it came later
    through = None if end is None else end + SECOND
    sealed = store.run_changes_through(run.id)
    recorded = [c for c in changes_between(store, earliest, through) if (through is None or c.changed_at < through)
                and (sealed is None or c.id is None or c.id <= sealed)]
    in_window = tuple(c for c in recorded if start is None or c.changed_at > start)
    infos = []
    for rule, server, protocol in resolved:
        change = None
        if server and protocol and _key(server, protocol) in since and server.casefold() in observed \
                and protocol in observed[server.casefold()].protocols:
            obs = observed[server.casefold()]
            candidates = between_scans(recorded, server, protocol, since[_key(server, protocol)], obs.finished_at)
            change = resolving_change(rule, obs.protocols[protocol].config_sha256, candidates)
        infos.append(ResolvedInfo(rule, server, protocol, change))
    return (start, end), in_window, tuple(infos)

"""Which recorded change (`cas-audit fix apply` / `fix rollback`, the `changes` table)
explains what a scan found: pure functions over the changes of one server and protocol,
oldest first (docs/remediation.md, "The next scan verifies").

- `resolving_change`: the change that resolved a finding of the previous scan (the reports
  name its ticket);
- `writing_change`: the change that wrote the file the scan found, so a value that changed
  since the previous scan is explained (XS-004 does not fire for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from scanner.store.changes import ChangeRecord

__all__ = ["EDIT_RULES", "RESTART_RULES", "SECOND", "between_scans", "resolving_change", "writing_change"]

#: the rules a change of the file resolves, and the rule a restart resolves
EDIT_RULES = frozenset({"XS-001", "XS-002", "XS-003", "XS-004"})
RESTART_RULES = frozenset({"XS-005"})
#: scan times are kept to the second (scan.py): a change recorded within the second a
#: scan finished counts as before its end
SECOND = timedelta(seconds=1)


def between_scans(changes: Sequence[ChangeRecord], server: str, protocol: str, after: datetime | None,
                  finished: datetime) -> list[ChangeRecord]:
    """The changes of `server` (case-insensitive) and `protocol` recorded after `after` (the
    previous scan's start; None: any) and no later than `finished` (this scan's end)."""
    return [c for c in changes if c.server_name.casefold() == server.casefold()
            and c.protocol.casefold() == protocol.casefold()
            and (after is None or c.changed_at > after) and c.changed_at < finished + SECOND]


def resolving_change(rule: str, scanned_sha256: str | None, changes: Sequence[ChangeRecord]) -> ChangeRecord | None:
    """The change (of `changes`: one server and protocol, oldest first, inside the window of
    the finding) that resolved `rule`, given the SHA-256 of the file the run scanned."""
    if rule not in EDIT_RULES and rule not in RESTART_RULES:
        return None
    explained: ChangeRecord | None = None
    for change in changes:
        if change.kind == "rollback":
            if change.result == "done":
                explained = None
            continue
        if change.kind != "apply":
            continue
        if rule in EDIT_RULES:
            took_effect = change.result == "done" and bool(change.after_sha256) \
                and change.after_sha256 == scanned_sha256
        else:
            took_effect = change.restart == "restarted" and \
                (not change.after_sha256 or change.after_sha256 == scanned_sha256)
        if took_effect:
            explained = change
    return explained


def writing_change(scanned_sha256: str | None, changes: Sequence[ChangeRecord]) -> ChangeRecord | None:
    """The change (apply or rollback, result `done`) that wrote the file the scan found: the
    last one that wrote a file, when what it wrote has `scanned_sha256` (an apply writes its
    after hash, a rollback the before hash back)."""
    found: ChangeRecord | None = None
    for change in changes:
        if change.result != "done":
            continue
        written = change.after_sha256 if change.kind == "apply" else change.before_sha256
        if not written:
            continue  # a restart only writes no file
        found = change if scanned_sha256 and written == scanned_sha256 else None
    return found

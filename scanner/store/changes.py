"""The `changes` table: what `cas-audit fix apply` / `fix rollback` did on each server
(one row per change of a fix script that ran with --yes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from scanner.store.models import Change

__all__ = ["ChangeRecord", "changes_between", "record_changes"]


@dataclass(frozen=True)
class ChangeRecord:
    ticket: str
    kind: str  # apply | rollback
    operator: str
    server_name: str
    protocol: str
    config_path: str
    before_sha256: str
    after_sha256: str
    found_sha256: str
    backup_path: str
    restart: str
    result: str
    message: str
    changed_at: datetime
    id: int | None = None  # the history's row id (None before it is recorded)


def record_changes(store: Any, records: Sequence[ChangeRecord]) -> None:
    """Add `records` to the history in one transaction."""
    if not records:
        return
    with store._write("recording changes") as session:
        for r in records:
            session.add(Change(
                ticket=r.ticket, kind=r.kind, operator=r.operator[:256], server_name=r.server_name[:256],
                protocol=r.protocol[:16], config_path=r.config_path or None, before_sha256=r.before_sha256 or None,
                after_sha256=r.after_sha256 or None, found_sha256=r.found_sha256 or None,
                backup_path=r.backup_path or None, restart=r.restart[:16] or "none", result=r.result[:16],
                message=r.message or None, changed_at=r.changed_at))


def changes_between(store: Any, start: datetime | None, end: datetime | None) -> list[ChangeRecord]:
    """The recorded changes in [start, end] (either open), oldest first."""
    with store._read("reading changes") as session:
        query = select(Change).order_by(Change.changed_at, Change.id)
        if start is not None:
            query = query.where(Change.changed_at >= start)
        if end is not None:
            query = query.where(Change.changed_at <= end)
        rows = session.scalars(query).all()
        return [ChangeRecord(
            ticket=c.ticket, kind=c.kind, operator=c.operator, server_name=c.server_name, protocol=c.protocol,
            config_path=c.config_path or "", before_sha256=c.before_sha256 or "", after_sha256=c.after_sha256 or "",
            found_sha256=c.found_sha256 or "", backup_path=c.backup_path or "", restart=c.restart, result=c.result,
            message=c.message or "", changed_at=c.changed_at, id=c.id) for c in rows]

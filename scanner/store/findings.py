"""The findings of a run: saving them (each stored once as a shared document) and reading
them back, with the findings the run resolved."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, cast, delete, func, insert, select, type_coerce

from scanner.facts import INACTIVE_STATES, FindingState
from scanner.store.base import StoreBase, chunks
from scanner.store.documents import finding_document, finding_fields
from scanner.store.models import Document, Finding, ResolvedFinding
from scanner.store.record import document_ids
from scanner.store.seal import is_sealed, reseal_tail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FindingRow:
    """One finding of a run, as stored in the findings table.

    `server_name` and `protocol` are None for findings about a site or the
    organisation; `evidence` and `waiver` are JSON (datetimes are stored as ISO strings).
    """

    rule: str
    severity: str
    state: FindingState
    server_name: str | None
    site: str | None
    protocol: str | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    first_seen_run_id: int | None = None
    first_seen_at: datetime | None = None
    waiver: dict[str, Any] | None = None
    id: int | None = None  # set when read back
    run_id: int | None = None  # set when read back: the run the finding belongs to


class Findings(StoreBase):
    """Writing and reading the findings of runs."""

    def save_findings(
        self,
        run_id: int,
        findings: Sequence[FindingRow],
        resolved: Sequence[tuple[str, str | None, str | None]],
    ) -> None:
        """Store the findings and resolved findings of a run, replacing any saved before."""
        with self._write(f"save the findings of run {run_id}") as session:
            run = self._require_run(session, run_id)
            sealed = is_sealed(session, run_id)
            if sealed and run.status == "aborted":  # recorded aborted (and sealed) by another command meanwhile
                log.warning("run %d was sealed (recorded aborted) before its findings were saved: they are "
                            "not added to it", run_id)
                return
            session.execute(delete(Finding).where(Finding.run_id == run_id))
            session.execute(delete(ResolvedFinding).where(ResolvedFinding.run_id == run_id))
            keys = sorted({f.server_name.casefold() for f in findings if f.server_name})
            ids = self._known_server_ids(session, keys)
            docs = [
                finding_document(
                    rule=f.rule, severity=f.severity, state=f.state, server_name=f.server_name, site=f.site,
                    protocol=f.protocol, message=f.message, evidence=f.evidence,
                    first_seen_run_id=f.first_seen_run_id, first_seen_at=f.first_seen_at, waiver=f.waiver,
                )
                for f in findings
            ]
            body_ids = document_ids(session, [("finding", body) for body, _extra in docs])
            rows = [
                {
                    "run_id": run_id,
                    "server_id": ids.get(f.server_name.casefold()) if f.server_name else None,
                    "body_id": body_id,
                    "extra": extra,
                }
                for f, body_id, (_body, extra) in zip(findings, body_ids, docs, strict=True)
            ]
            for chunk in chunks(rows):
                session.execute(insert(Finding), list(chunk))
            resolved_rows = [
                {"run_id": run_id, "rule": rule, "server_name": server, "protocol": protocol}
                for rule, server, protocol in resolved
            ]
            for resolved_chunk in chunks(resolved_rows):
                session.execute(insert(ResolvedFinding), list(resolved_chunk))
            if sealed and not reseal_tail(session, run_id):
                log.warning("the findings of run %d were saved after later runs were sealed: "
                            "`cas-audit verify` will name run %d", run_id, run_id)

    def findings(self, run_id: int) -> list[FindingRow]:
        """The findings saved for a run, in the order they were saved."""
        with self._read(f"read the findings of run {run_id}") as session:
            self._require_run(session, run_id)
            rows = session.execute(
                select(Finding.id, Document.body, Finding.extra)
                .join(Document, Document.id == Finding.body_id)
                .where(Finding.run_id == run_id)
                .order_by(Finding.id)
            )
            return [
                FindingRow(**finding_fields(body, extra), id=finding_id, run_id=run_id) for finding_id, body, extra in rows
            ]

    def active_finding_counts(self) -> dict[int, int]:
        """How many active findings (`facts.is_active`) every run saved, by run id (runs
        without one are left out). One query: each finding document's state is read once,
        in the database, however many runs share it."""
        with self._read("count the active findings of the runs") as session:
            postgresql = session.get_bind().dialect.name == "postgresql"
            body = cast(Document.body, JSON) if postgresql else type_coerce(Document.body, JSON)
            active = select(Document.id).where(Document.kind == "finding",
                                               body["state"].as_string().not_in(INACTIVE_STATES))
            query = (select(Finding.run_id, func.count()).where(Finding.body_id.in_(active))
                     .group_by(Finding.run_id))
            return {run_id: int(count) for run_id, count in session.execute(query)}

    def resolved(self, run_id: int) -> list[tuple[str, str | None, str | None]]:
        """(rule, server_name, protocol) of the findings resolved in a run."""
        with self._read(f"read the resolved findings of run {run_id}") as session:
            self._require_run(session, run_id)
            rows = session.execute(
                select(ResolvedFinding.rule, ResolvedFinding.server_name, ResolvedFinding.protocol)
                .where(ResolvedFinding.run_id == run_id)
                .order_by(ResolvedFinding.id)
            )
            return [(rule, server, protocol) for rule, server, protocol in rows]

"""PostgreSQL: index the columns that refer to documents, so that deleting a document
(`prune`) checks its references through an index instead of scanning the tables (20 s for
553 documents of 36,000 scans; bench/README.md). SQLite's prune turns that check off for its
deletion (scanner/store/retention.py) and gets no index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (("ix_server_scans_state_id", "server_scans", "state_id"),
            ("ix_observations_state_id", "observations", "state_id"),
            ("ix_findings_body_id", "findings", "body_id"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, column in _INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, _column in _INDEXES:
        op.drop_index(name, table_name=table)

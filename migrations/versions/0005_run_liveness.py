"""Run liveness: a run records the process that owns it and a heartbeat, so that the
next command finds a run whose scanner died and records it aborted (with why).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('scan_runs') as batch:
        batch.add_column(sa.Column('owner_pid', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('owner_started', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('end_reason', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scan_runs') as batch:
        batch.drop_column('end_reason')
        batch.drop_column('heartbeat_at')
        batch.drop_column('owner_started')
        batch.drop_column('owner_pid')

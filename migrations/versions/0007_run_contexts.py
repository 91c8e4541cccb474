"""What a kept run's report read from runs that `prune` removed: its Changes sheet and
trend as they were, so that its reports regenerate byte for byte (scanner/store/retention.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('run_contexts',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['scan_runs.id'], name=op.f('fk_run_contexts_run_id_scan_runs')),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_run_contexts'))
    )


def downgrade() -> None:
    op.drop_table('run_contexts')

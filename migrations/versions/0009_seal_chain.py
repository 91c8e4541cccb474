"""The history's seal chain (scanner/store/seal.py): one link per finished run or prune
checkpoint. `scanner.store.db.upgrade` seals the runs that finished before this revision
once the schema is at head (in run id order), so an existing history is covered too.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('seal_chain',
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('seal', sa.String(length=64), nullable=False),
    sa.Column('sealed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('body', sa.Text(), nullable=True),
    sa.CheckConstraint("kind IN ('run', 'checkpoint')", name=op.f('ck_seal_chain_kind')),
    sa.PrimaryKeyConstraint('position', name=op.f('pk_seal_chain')),
    sa.UniqueConstraint('run_id', name=op.f('uq_seal_chain_run_id'))
    )


def downgrade() -> None:
    op.drop_table('seal_chain')

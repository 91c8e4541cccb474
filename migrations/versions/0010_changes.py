"""The change history of `cas-audit fix apply` / `fix rollback` (issue 16): one row per
change a fix script made or refused on one server.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('operator', sa.String(length=256), nullable=False),
    sa.Column('server_name', sa.String(length=256), nullable=False),
    sa.Column('protocol', sa.String(length=16), nullable=False),
    sa.Column('config_path', sa.Text(), nullable=True),
    sa.Column('before_sha256', sa.String(length=64), nullable=True),
    sa.Column('after_sha256', sa.String(length=64), nullable=True),
    sa.Column('found_sha256', sa.String(length=64), nullable=True),
    sa.Column('backup_path', sa.Text(), nullable=True),
    sa.Column('restart', sa.String(length=16), nullable=False),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('apply', 'rollback')", name=op.f('ck_changes_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_changes'))
    )
    op.create_index(op.f('ix_changes_changed_at'), 'changes', ['changed_at'], unique=False)
    op.create_index(op.f('ix_changes_server_name'), 'changes', ['server_name'], unique=False)
    op.create_index(op.f('ix_changes_ticket'), 'changes', ['ticket'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_changes_ticket'), table_name='changes')
    op.drop_index(op.f('ix_changes_server_name'), table_name='changes')
    op.drop_index(op.f('ix_changes_changed_at'), table_name='changes')
    op.drop_table('changes')

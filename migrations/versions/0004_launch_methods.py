"""Per server, how the collector last reached PowerShell ("env" or "stdin"), so the next
scan goes straight to the launch that worked (docs/launch.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('launch_methods',
    sa.Column('server_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('learned_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("method IN ('env', 'stdin')", name=op.f('ck_launch_methods_method')),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_launch_methods_server_id_servers'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('server_id', name=op.f('pk_launch_methods'))
    )


def downgrade() -> None:
    op.drop_table('launch_methods')

"""Server scans keep the rollup the registry's Patches list names, beside the one the
build names (the Patches list is a second opinion on the build).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('server_scans') as batch:
        batch.add_column(sa.Column('rollup_listed', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('server_scans') as batch:
        batch.drop_column('rollup_listed')

"""The Client Access Server a refused cross-site logon (event 1008) names, as its message
text says it (scanner/parse/events.py); null for rows written before, or when the event
did not name it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('refused_logons') as batch:
        batch.add_column(sa.Column('cas', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('refused_logons') as batch:
        batch.drop_column('cas')

"""one active and one next signing key

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:07:14.086999
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.create_index('uq_signing_keys_one_per_live_state', ['state'], unique=True, sqlite_where=sa.text("state IN ('active', 'next')"), postgresql_where=sa.text("state IN ('active', 'next')"))



def downgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_index('uq_signing_keys_one_per_live_state', sqlite_where=sa.text("state IN ('active', 'next')"), postgresql_where=sa.text("state IN ('active', 'next')"))


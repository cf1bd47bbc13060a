"""authz lookup index and generation

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 17:13:14.730600
"""

from __future__ import annotations

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_rules', schema=None) as batch_op:
        batch_op.create_index('ix_access_rules_group_id_imaging_server_id', ['group_id', 'imaging_server_id'], unique=False)
    # Bumped by every commit that changes what a decision depends on; other processes on
    # the same SQLite file watch it (see server.services.authz_state).
    op.execute("INSERT INTO portico_meta (key, value) VALUES ('authz_generation', '0')")


def downgrade() -> None:
    op.execute("DELETE FROM portico_meta WHERE key = 'authz_generation'")
    with op.batch_alter_table('access_rules', schema=None) as batch_op:
        batch_op.drop_index('ix_access_rules_group_id_imaging_server_id')


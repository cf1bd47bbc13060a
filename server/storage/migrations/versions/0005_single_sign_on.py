"""single sign-on: pending logins, console test logins, one-time codes, refresh tokens

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:05:45.856529
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sso_test_logins',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('ticket_hash', sa.String(length=64), nullable=False),
    sa.Column('auth_server_id', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=150), nullable=False),
    sa.Column('dry_run', sa.Boolean(), nullable=False),
    sa.Column('code_challenge', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['auth_server_id'], ['auth_servers.id'], name=op.f('fk_sso_test_logins_auth_server_id_auth_servers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sso_test_logins')),
    sa.UniqueConstraint('ticket_hash', name=op.f('uq_sso_test_logins_ticket_hash'))
    )
    with op.batch_alter_table('sso_test_logins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sso_test_logins_auth_server_id'), ['auth_server_id'], unique=False)

    op.create_table('sso_one_time_codes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('redirect_uri', sa.String(length=2000), nullable=False),
    sa.Column('code_challenge', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_sso_one_time_codes_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sso_one_time_codes'))
    )
    with op.batch_alter_table('sso_one_time_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sso_one_time_codes_session_id'), ['session_id'], unique=False)

    op.create_table('sso_pending_logins',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('auth_server_id', sa.Integer(), nullable=False),
    sa.Column('state_hash', sa.String(length=64), nullable=True),
    sa.Column('nonce', sa.String(length=64), nullable=True),
    sa.Column('code_verifier_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('callback_url', sa.String(length=2000), nullable=False),
    sa.Column('redirect_uri', sa.String(length=2000), nullable=False),
    sa.Column('client_state', sa.String(length=500), nullable=True),
    sa.Column('dry_run', sa.Boolean(), nullable=False),
    sa.Column('test_login_id', sa.String(length=32), nullable=True),
    sa.Column('code_challenge', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['auth_server_id'], ['auth_servers.id'], name=op.f('fk_sso_pending_logins_auth_server_id_auth_servers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['test_login_id'], ['sso_test_logins.id'], name=op.f('fk_sso_pending_logins_test_login_id_sso_test_logins'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sso_pending_logins'))
    )
    with op.batch_alter_table('sso_pending_logins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sso_pending_logins_auth_server_id'), ['auth_server_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sso_pending_logins_expires_at'), ['expires_at'], unique=False)

    op.create_table('sso_refresh_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_sso_refresh_tokens_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sso_refresh_tokens'))
    )
    with op.batch_alter_table('sso_refresh_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sso_refresh_tokens_session_id'), ['session_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sso_refresh_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sso_refresh_tokens_session_id'))

    op.drop_table('sso_refresh_tokens')
    with op.batch_alter_table('sso_pending_logins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sso_pending_logins_expires_at'))
        batch_op.drop_index(batch_op.f('ix_sso_pending_logins_auth_server_id'))

    op.drop_table('sso_pending_logins')
    with op.batch_alter_table('sso_one_time_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sso_one_time_codes_session_id'))

    op.drop_table('sso_one_time_codes')
    with op.batch_alter_table('sso_test_logins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sso_test_logins_auth_server_id'))

    op.drop_table('sso_test_logins')

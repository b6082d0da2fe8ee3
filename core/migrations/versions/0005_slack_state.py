"""slack_work and slack_confirmations: Slack work and confirmations survive a restart

Revision ID: 0005_slack_state
Revises: 0004_github
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005_slack_state'
down_revision = '0004_github'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('slack_work',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('slack_work', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_slack_work_done_at'), ['done_at'], unique=False)
    op.create_table('slack_confirmations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('requester', sa.String(length=64), nullable=False),
    sa.Column('command', sa.JSON(), nullable=False),
    sa.Column('actor', sa.JSON(), nullable=False),
    sa.Column('origin', sa.JSON(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answer', sa.String(length=16), nullable=True),
    sa.Column('answer_key', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('slack_confirmations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_slack_confirmations_expires_at'), ['expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('slack_confirmations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_slack_confirmations_expires_at'))
    op.drop_table('slack_confirmations')
    with op.batch_alter_table('slack_work', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_slack_work_done_at'))
    op.drop_table('slack_work')

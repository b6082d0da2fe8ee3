"""GitHub App: deliveries, served repositories, fork approvals

Revision ID: 0004_github
Revises: 0003_slack
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004_github'
down_revision = '0003_slack'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('deliveries',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=2000), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('github_repositories',
    sa.Column('full_name', sa.String(length=255), nullable=False),
    sa.Column('installation_id', sa.BigInteger(), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('full_name')
    )
    with op.batch_alter_table('github_repositories', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_github_repositories_installation_id'),
                              ['installation_id'], unique=False)
    op.create_table('github_approvals',
    sa.Column('repository', sa.String(length=255), nullable=False),
    sa.Column('sha', sa.String(length=64), nullable=False),
    sa.Column('pull_request', sa.Integer(), nullable=False),
    sa.Column('approved_by', sa.String(length=200), nullable=False),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('repository', 'sha')
    )


def downgrade() -> None:
    op.drop_table('github_approvals')
    with op.batch_alter_table('github_repositories', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_github_repositories_installation_id'))
    op.drop_table('github_repositories')
    op.drop_table('deliveries')

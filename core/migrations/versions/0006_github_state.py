"""GitHub App state that must survive a restart: delivery payloads until handled, each
repository's app, the newest push per branch, and jobbot's comment per pull request

Revision ID: 0006_github_state
Revises: 0005_slack_state
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_github_state'
down_revision = '0005_slack_state'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payload', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('owner', sa.String(length=200), nullable=True))
    op.create_table('github_repository_apps',
    sa.Column('repository', sa.String(length=255), nullable=False),
    sa.Column('app', sa.String(length=63), nullable=False),
    sa.Column('sha', sa.String(length=64), nullable=False),
    sa.Column('app_yaml', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('repository'),
    sa.UniqueConstraint('app')
    )
    op.create_table('github_branch_heads',
    sa.Column('repository', sa.String(length=255), nullable=False),
    sa.Column('branch', sa.String(length=255), nullable=False),
    sa.Column('sha', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('repository', 'branch')
    )
    op.create_table('github_pull_request_comments',
    sa.Column('repository', sa.String(length=255), nullable=False),
    sa.Column('pull_request', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('comment_id', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('repository', 'pull_request')
    )


def downgrade() -> None:
    op.drop_table('github_pull_request_comments')
    op.drop_table('github_branch_heads')
    op.drop_table('github_repository_apps')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('owner')
        batch_op.drop_column('payload')

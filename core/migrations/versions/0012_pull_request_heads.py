"""GitHub App: the head shas each pull request had and since when, for /ok-to-test

Revision ID: 0012_pull_request_heads
Revises: 0011_slack_work_owner
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_pull_request_heads'
down_revision = '0011_slack_work_owner'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('github_pull_request_heads',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('repository', sa.String(length=255), nullable=False),
    sa.Column('pull_request', sa.Integer(), nullable=False),
    sa.Column('sha', sa.String(length=64), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('repository', 'pull_request', 'since', 'sha',
                        name='uq_github_pull_request_heads')
    )


def downgrade() -> None:
    op.drop_table('github_pull_request_heads')

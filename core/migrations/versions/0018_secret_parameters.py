"""Runs: the sealed values of their secret parameters

Revision ID: 0018_secret_parameters
Revises: 0012_pull_request_heads
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0018_secret_parameters'
down_revision = '0012_pull_request_heads'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('secret_parameters', sa.JSON(), nullable=False,
                                   server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('secret_parameters')

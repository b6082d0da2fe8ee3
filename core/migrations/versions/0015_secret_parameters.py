"""Runs: the sealed values of their secret parameters

Revision ID: 0015_secret_parameters
Revises: 0012_pull_request_heads
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015_secret_parameters'
down_revision = '0014_replica_leases'
branch_labels = None
depends_on = None


# Plain ALTER TABLE (SQLite has both since 3.35): a batch copy of `runs` would be dropped
# and recreated, which the foreign keys of attempts and run events refuse.
def upgrade() -> None:
    op.add_column('runs', sa.Column('secret_parameters', sa.JSON(), nullable=False,
                                    server_default='{}'))


def downgrade() -> None:
    op.drop_column('runs', 'secret_parameters')

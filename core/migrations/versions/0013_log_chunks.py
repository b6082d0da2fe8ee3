"""Logs in the database (used with PostgreSQL): masked chunks of each attempt's log, in order

Revision ID: 0013_log_chunks
Revises: 0012_pull_request_heads
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_log_chunks'
down_revision = '0012_pull_request_heads'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('log_chunks',
    sa.Column('run_id', sa.String(length=128), nullable=False),
    sa.Column('attempt', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('first_line', sa.Integer(), nullable=False),
    sa.Column('lines', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('compressed', sa.Boolean(), nullable=False),
    sa.Column('stamp', sa.String(length=40), nullable=True),
    sa.Column('stamp_lines', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'attempt', 'seq')
    )


def downgrade() -> None:
    op.drop_table('log_chunks')

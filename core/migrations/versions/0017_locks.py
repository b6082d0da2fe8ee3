"""Locks: the lock a run's job names, its place in the line, and the locks' holders

Revision ID: 0017_locks
Revises: 0016_approvals
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017_locks'
down_revision = '0016_approvals'
branch_labels = None
depends_on = None


# Plain ALTER TABLE (as 0015): a batch copy of `runs` would break its foreign keys.
def upgrade() -> None:
    op.add_column('runs', sa.Column('lock', sa.String(length=63), nullable=True))
    op.add_column('runs', sa.Column('lock_ticket', sa.BigInteger(), nullable=True))
    op.add_column('runs', sa.Column('request_digest', sa.String(length=64), nullable=True))
    op.create_index('ix_runs_lock_line', 'runs', ['app', 'lock', 'state', 'lock_ticket'],
                    unique=False)
    op.create_table('run_locks',
    sa.Column('app', sa.String(length=63), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('holder', sa.String(length=32), nullable=True),
    sa.Column('last_ticket', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('app', 'name')
    )


def downgrade() -> None:
    op.drop_table('run_locks')
    op.drop_index('ix_runs_lock_line', table_name='runs')
    op.drop_column('runs', 'request_digest')
    op.drop_column('runs', 'lock_ticket')
    op.drop_column('runs', 'lock')

"""Approvals: what a waiting run's approvals are for, when it expires, and who decided

Revision ID: 0016_approvals
Revises: 0015_secret_parameters
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016_approvals'
down_revision = '0015_secret_parameters'
branch_labels = None
depends_on = None


# Plain ALTER TABLE for runs (as 0015): a batch copy would drop the table the foreign keys
# of attempts and run events point at.
def upgrade() -> None:
    op.add_column('runs', sa.Column('spec_digest', sa.String(length=64), nullable=True))
    op.add_column('runs', sa.Column('approval_expires_at', sa.DateTime(timezone=True),
                                    nullable=True))
    op.create_table('run_approvals',
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('who', sa.String(length=200), nullable=False),
    sa.Column('display', sa.String(length=200), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'who')
    )


def downgrade() -> None:
    op.drop_table('run_approvals')
    op.drop_column('runs', 'approval_expires_at')
    op.drop_column('runs', 'spec_digest')

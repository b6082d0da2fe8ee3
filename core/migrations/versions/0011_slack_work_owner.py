"""slack_work: the process that recorded a request, so another replays it only if that one died

Revision ID: 0011_slack_work_owner
Revises: 0010_job_state_fillfactor
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_slack_work_owner'
down_revision = '0010_job_state_fillfactor'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('slack_work') as batch:
        batch.add_column(sa.Column('owner', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('slack_work') as batch:
        batch.drop_column('owner')

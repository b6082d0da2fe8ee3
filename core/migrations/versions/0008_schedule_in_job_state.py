"""Schedule state moves into job_state: fingerprint and last_slot per job, no schedule_state

Each scheduler round numbers a job's runs (job_state.last_number) and moves its last slot
(schedule_state.last_slot). As two tables that was two rows, two pages written per job at
every commit; as one row it is one. The rows of schedule_state are copied over, then the table is dropped.

Revision ID: 0008_schedule_in_job_state
Revises: 0007_scheduler_indexes
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_schedule_in_job_state'
down_revision = '0007_scheduler_indexes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fingerprint', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('last_slot', sa.DateTime(timezone=True), nullable=True))
    # Jobs scheduled but never numbered (no slot fired yet) have no job_state row yet.
    # (`WHERE true`: SQLite needs a WHERE before ON CONFLICT in an INSERT ... SELECT.)
    op.execute("INSERT INTO job_state (app, job, last_number, paused) "
               "SELECT app, job, 0, false FROM schedule_state WHERE true "
               "ON CONFLICT (app, job) DO NOTHING")
    op.execute("UPDATE job_state SET "
               "fingerprint = (SELECT s.fingerprint FROM schedule_state s "
               "WHERE s.app = job_state.app AND s.job = job_state.job), "
               "last_slot = (SELECT s.last_slot FROM schedule_state s "
               "WHERE s.app = job_state.app AND s.job = job_state.job)")
    op.drop_table('schedule_state')


def downgrade() -> None:
    op.create_table('schedule_state',
                    sa.Column('app', sa.String(length=63), nullable=False),
                    sa.Column('job', sa.String(length=63), nullable=False),
                    sa.Column('fingerprint', sa.String(length=64), nullable=False),
                    sa.Column('last_slot', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('app', 'job'))
    op.execute("INSERT INTO schedule_state (app, job, fingerprint, last_slot, updated_at) "
               "SELECT app, job, fingerprint, last_slot, last_slot FROM job_state "
               "WHERE fingerprint IS NOT NULL AND last_slot IS NOT NULL")
    with op.batch_alter_table('job_state', schema=None) as batch_op:
        batch_op.drop_column('last_slot')
        batch_op.drop_column('fingerprint')

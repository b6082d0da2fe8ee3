"""Indexes for the scheduler's rounds: drop runs (app, job, created_at), add job_state paused

Runs: a job's runs are listed and pruned by number, which grows with created_at, and
queries across jobs filter on app, which the unique (app, job, number) index serves as well.
The dropped index cost every new run a B-tree insert and a dirty page at commit.

Job state: every scheduler round asks which jobs are paused; without an index that read
every job's row (10,000 jobs: about a millisecond per round).

Revision ID: 0007_scheduler_indexes
Revises: 0006_github_state
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = '0007_scheduler_indexes'
down_revision = '0006_github_state'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_app_job_created')
    with op.batch_alter_table('job_state', schema=None) as batch_op:
        batch_op.create_index('ix_job_state_paused', ['paused'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job_state', schema=None) as batch_op:
        batch_op.drop_index('ix_job_state_paused')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_app_job_created', ['app', 'job', 'created_at'],
                              unique=False)

"""PostgreSQL: job_state pages kept half empty, so a scheduler round updates its rows in place

Each round numbers a due job's runs and moves its last slot: an UPDATE of every due job's
row. With full pages PostgreSQL wrote each new row version to another page, with a new
entry in both of the table's indexes; with room on the page the update is a heap-only
tuple, and the indexes are untouched. Existing rows move into the free space as they are updated and vacuumed. SQLite has no such
setting: nothing is done there.

Revision ID: 0010_job_state_fillfactor
Revises: 0009_slot_keys_time_first
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = '0010_job_state_fillfactor'
down_revision = '0009_slot_keys_time_first'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE job_state SET (fillfactor = 50)')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE job_state RESET (fillfactor)')

"""Slot idempotency keys put the slot time first: cron:<time>:<app>/<job>

The unique index on runs.idempotency_key is where a second scheduler meets a slot already
recorded. With the job first (cron:<app>/<job>:<time>), the slots of one tick went to one
index page per job; with the time first they sort together, and a batch writes a few
adjacent pages.
Recorded slots get the new form, so a scheduler of this version still meets them.

Revision ID: 0009_slot_keys_time_first
Revises: 0008_schedule_in_job_state
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = '0009_slot_keys_time_first'
down_revision = '0008_schedule_in_job_state'
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    _rewrite(_time_first)


def downgrade() -> None:
    _rewrite(_job_first)


def _time_first(key: str) -> str | None:
    """cron:<app>/<job>:<time> -> cron:<time>:<app>/<job>; None if already so."""
    head, _, rest = key.removeprefix("cron:").partition(":")
    return f"cron:{rest}:{head}" if "/" in head else None


def _job_first(key: str) -> str | None:
    """cron:<time>:<app>/<job> -> cron:<app>/<job>:<time>; None if already so."""
    time, _, target = key.removeprefix("cron:").rpartition(":")
    return f"cron:{target}:{time}" if "/" in target and "/" not in time else None


def _rewrite(convert: Callable[[str], str | None]) -> None:
    """Each slot key, converted; read and written in batches (history is pruned per job, but
    a database may still hold hundreds of thousands of slots)."""
    conn = op.get_bind()
    after = ""
    while True:
        rows = conn.execute(sa.text(
            "SELECT id, idempotency_key FROM runs WHERE idempotency_key LIKE 'cron:%' "
            "AND id > :after ORDER BY id LIMIT :batch"), {"after": after, "batch": BATCH}).all()
        if not rows:
            return
        changed = [{"id": run_id, "key": new} for run_id, key in rows
                   if (new := convert(key)) is not None]
        if changed:
            conn.execute(sa.text("UPDATE runs SET idempotency_key = :key WHERE id = :id"),
                         changed)
        after = rows[-1][0]

"""Per-job state (run counter, pause, schedule) and the pruning of finished runs."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, delete, func, select, tuple_, update
from sqlalchemy.sql import Select
from sqlmodel import col
from sqlmodel import select as orm_select

from core.models import JobState, RunState, utcnow
from core.store.base import (
    ATTEMPTS,
    CURSORS,
    FAILED_STATES,
    FINAL_STATES,
    JOB_STATE,
    LOG_CHUNKS,
    RUN_APPROVALS,
    RUN_EVENTS,
    RUNS,
    StoreBase,
    chunks,
    upsert_for,
)

# app, job, schedule fingerprint, last slot handled
ScheduleRow = tuple[str, str, str, datetime]
# The event id every outbox subscriber has delivered up to (None: no subscriber yet).
_SLOWEST_CURSOR = select(func.min(CURSORS.c.last_event_id))


@functools.cache
def _count_statement(dialect: str) -> Any:
    statement = upsert_for(dialect)(JOB_STATE)
    return statement.on_conflict_do_update(index_elements=["app", "job"], set_={
        "last_number": JOB_STATE.c.last_number + statement.excluded.last_number,
        "fingerprint": func.coalesce(statement.excluded.fingerprint, JOB_STATE.c.fingerprint),
        "last_slot": func.coalesce(statement.excluded.last_slot, JOB_STATE.c.last_slot),
    })


def count_runs(conn: Connection, counts: dict[tuple[str, str], int],
               schedules: Sequence[ScheduleRow] = ()) -> dict[tuple[str, str], int]:
    """Add `counts` new runs to each job's counter and save `schedules`, creating the jobs'
    rows where missing; the last run number of each job in `counts`.

    The rows stay locked until the transaction ends, so runs of one job are numbered one
    transaction after the other, without gaps. They are written in (app, job) order: two
    transactions lock their common rows in the same order and never deadlock.
    """
    saved = {(app, job): (fingerprint, last) for app, job, fingerprint, last in schedules}
    rows = [{"app": app, "job": job, "last_number": counts.get((app, job), 0), "paused": False,
             "fingerprint": saved.get((app, job), (None, None))[0],
             "last_slot": saved.get((app, job), (None, None))[1]}
            for app, job in sorted(counts.keys() | saved.keys())]
    if rows:
        # An executemany, not RETURNING: psycopg would parse a multi-row statement's text.
        conn.execute(_count_statement(conn.dialect.name), rows)
    numbers: dict[tuple[str, str], int] = {}
    for chunk in chunks(list(counts)):
        numbers.update(((app, job), number) for app, job, number in conn.execute(
            select(JOB_STATE.c.app, JOB_STATE.c.job, JOB_STATE.c.last_number)
            .where(tuple_(JOB_STATE.c.app, JOB_STATE.c.job).in_(chunk))))
    return numbers


def _ranked_history(beyond: int, touched_after: int | None = None) -> Select[Any]:
    """Finished runs ranked newest first among their job's runs of the same kind (0
    succeeded, 1 failed, 2 skipped), those ranked beyond `beyond`: (id, app, job, kind,
    rank) rows. Of every job, or of the jobs with a run that reached a final state in an
    event after `touched_after`."""
    kind = case((RUNS.c.state == RunState.SUCCEEDED.value, 0),
                (RUNS.c.state.in_(FAILED_STATES), 1),
                (RUNS.c.state == RunState.SKIPPED.value, 2))  # else NULL: not finished
    ranked = select(RUNS.c.id, RUNS.c.app, RUNS.c.job, kind.label("kind"),
                    func.row_number().over(partition_by=(RUNS.c.app, RUNS.c.job, kind),
                                           order_by=RUNS.c.number.desc()).label("rank"))
    if touched_after is None:
        ranked = ranked.where(RUNS.c.state.in_(FINAL_STATES))
    else:
        # No state filter here, nor on `changed` below (the events say which state they left
        # the run in): SQLite would read every finished run through ix_runs_state to find a
        # few jobs' runs. The jobs' live runs are ranked apart (kind NULL), and left out.
        changed = RUNS.alias("changed")
        touched = (select(changed.c.app, changed.c.job).distinct()
                   .select_from(RUN_EVENTS.join(changed, changed.c.id == RUN_EVENTS.c.run_id))
                   .where(RUN_EVENTS.c.id > touched_after, RUN_EVENTS.c.state.in_(FINAL_STATES))
                   .subquery("touched"))
        ranked = ranked.join(touched, (RUNS.c.app == touched.c.app)
                             & (RUNS.c.job == touched.c.job))
    history = ranked.subquery("history")
    return select(history).where(history.c.rank > beyond, history.c.kind.is_not(None))


class JobStore(StoreBase):
    def job_state(self, app: str, job: str) -> JobState:
        with self._read() as session:
            return session.get(JobState, (app, job)) or JobState(app=app, job=job)

    def set_paused(self, app: str, job: str, paused: bool, actor: str) -> bool:
        """Pause or resume; returns False if the job already was in that state."""
        with self._writing() as conn:
            count_runs(conn, {(app, job): 0})
            result = conn.execute(
                update(JOB_STATE)
                .where(JOB_STATE.c.app == app, JOB_STATE.c.job == job,
                       JOB_STATE.c.paused == (not paused))
                .values(paused=paused, paused_by=actor if paused else None,
                        paused_at=utcnow() if paused else None))
            return result.rowcount == 1

    def paused_jobs(self) -> dict[tuple[str, str], str | None]:
        """Every paused job, with who paused it."""
        with self._reading() as conn:
            rows = conn.execute(select(JOB_STATE.c.app, JOB_STATE.c.job, JOB_STATE.c.paused_by)
                                .where(JOB_STATE.c.paused.is_(True)))
            return {(app, job): by for app, job, by in rows}

    def schedule_states(self) -> dict[tuple[str, str], JobState]:
        """The job_state rows that hold a schedule (fingerprint and last slot)."""
        with self._read() as session:
            return {(s.app, s.job): s for s in session.exec(
                orm_select(JobState).where(col(JobState.fingerprint).is_not(None)))}

    def save_schedule_states(self, states: Sequence[ScheduleRow]) -> None:
        """Save (app, job, fingerprint, last slot); a later slot never goes backwards because
        each scheduler only saves slots it has handled, and slots only move forward."""
        if states:
            with self._writing() as conn:
                count_runs(conn, {}, states)

    def forget_schedule_states(self, jobs: Sequence[tuple[str, str]]) -> None:
        """Forget the schedule of (app, job) pairs that no longer exist (their run numbers
        stay: a job that comes back goes on counting)."""
        with self._writing() as conn:
            for chunk in chunks(list(jobs)):
                conn.execute(update(JOB_STATE)
                             .where(tuple_(JOB_STATE.c.app, JOB_STATE.c.job).in_(chunk))
                             .values(fingerprint=None, last_slot=None))

    def prune_history(self, limits: dict[tuple[str, str], tuple[int, int, int]],
                      touched_after: int | None = None) -> list[str]:
        """Delete finished runs beyond (succeeded, failed, skipped) kept per job, with their
        attempts, events and log chunks, once every outbox subscriber's cursor has passed their
        events; returns the deleted run ids (so their logs can go too).

        `touched_after` (an event id, from `history_mark`): look only at the jobs with a run
        that reached a final state after it; None looks at every job's finished runs.
        """
        if not limits:
            return []
        floor = min(min(limit) for limit in limits.values())
        doomed: list[str] = []
        with self._reading() as conn:
            for run_id, app, job, kind, rank in conn.execute(
                    _ranked_history(floor, touched_after)):
                limit = limits.get((app, job))
                if limit is not None and rank > limit[kind]:
                    doomed.append(run_id)
            # A run whose events some subscriber (Slack notifier, GitHub check runs) has not
            # delivered yet stays until every cursor has passed them: deleting it would make
            # the lagging subscriber skip (or fail on) its events.
            slowest = conn.execute(_SLOWEST_CURSOR).scalar()
            if slowest is not None and doomed:
                pending: set[str] = set()
                for chunk in chunks(doomed):
                    pending.update(conn.execute(
                        select(RUN_EVENTS.c.run_id).distinct()
                        .where(RUN_EVENTS.c.run_id.in_(chunk), RUN_EVENTS.c.id > slowest)
                    ).scalars())
                doomed = [run_id for run_id in doomed if run_id not in pending]
        with self._writing() as conn:
            for chunk in chunks(doomed):
                conn.execute(delete(ATTEMPTS).where(ATTEMPTS.c.run_id.in_(chunk)))
                conn.execute(delete(RUN_EVENTS).where(RUN_EVENTS.c.run_id.in_(chunk)))
                conn.execute(delete(RUN_APPROVALS).where(RUN_APPROVALS.c.run_id.in_(chunk)))
                conn.execute(delete(RUNS).where(RUNS.c.id.in_(chunk)))
                conn.execute(delete(LOG_CHUNKS).where(LOG_CHUNKS.c.run_id.in_(chunk)))
        return doomed

    def history_mark(self) -> int:
        """Where a later `prune_history(touched_after=)` may start: the last event, or the
        slowest subscriber's cursor if it is behind (so the runs held back for it are looked
        at again once it has passed them)."""
        with self._reading() as conn:
            last = int(conn.execute(select(func.coalesce(func.max(RUN_EVENTS.c.id), 0)))
                       .scalar_one())
            slowest = conn.execute(_SLOWEST_CURSOR).scalar()
        return last if slowest is None else min(last, int(slowest))

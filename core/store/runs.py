"""Runs: recording them (one, or a batch of cron slots), their states and attempts, and the
run-event outbox with its subscribers' cursors."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from core.models import Attempt, Run, RunEvent, RunState, SubscriberCursor, utcnow
from core.run_ids import new_run_ids
from core.store.audit import AuditRecord
from core.store.base import (
    AUDIT_LOG,
    LIVE_STATES,
    RUN_EVENTS,
    RUNS,
    StoreBase,
    chunks,
    upsert_for,
)
from core.store.jobs import ScheduleRow, count_runs
from core.store.locks import Handed, lock_of, release, take_tickets, waiting_alike

# From which states each state may be reached; a final state is never left.
_REACHABLE_FROM: dict[RunState, tuple[RunState, ...]] = {
    RunState.RUNNING: (RunState.QUEUED,),
    RunState.SUCCEEDED: (RunState.QUEUED, RunState.RUNNING),
    RunState.FAILED: (RunState.QUEUED, RunState.RUNNING, RunState.WAITING),
    RunState.TIMED_OUT: (RunState.QUEUED, RunState.RUNNING),
    RunState.CANCELLED: (RunState.QUEUED, RunState.RUNNING, RunState.NEEDS_APPROVAL,
                         RunState.WAITING),
    # Approvals move runs in and out of needs_approval themselves (core/store/approvals.py).
}
# How many of a job's other live runs a trigger's reply mentions.
ACTIVE_LIMIT = 10


@dataclass(slots=True)
class NewRun:
    """What is needed to record a run; the store adds its id and per-job number."""

    app: str
    job: str
    source: str
    actor: str
    state: RunState = RunState.QUEUED
    ref: str | None = None
    sha: str | None = None
    image: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    # Secret parameter values, sealed (core.sealing): never stored in the clear.
    secret_parameters: dict[str, str] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    scheduled_for: datetime | None = None
    rerun_of: str | None = None
    executor: str = "local"
    owner: str | None = None
    reason: str | None = None
    # For a run waiting for approval: what it is approved for, and until when it waits.
    spec_digest: str | None = None
    approval_expires_at: datetime | None = None
    # The lock its job names, and the digest of what it is asked to run with (a like request
    # joins a run waiting for that lock instead of recording another).
    lock: str | None = None
    request_digest: str | None = None

    def __post_init__(self) -> None:
        if self.scheduled_for is not None and self.scheduled_for.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")

    def row(self, run_id: str, number: int, now: datetime) -> dict[str, Any]:
        """The runs row of this run: the one list of columns a new run is written with."""
        row = {
            "id": run_id, "app": self.app, "job": self.job, "number": number,
            "state": self.state.value, "source": self.source, "actor": self.actor,
            "ref": self.ref, "sha": self.sha, "image": self.image,
            "overrides": dict(self.overrides), "origin": dict(self.origin),
            "idempotency_key": self.idempotency_key, "scheduled_for": self.scheduled_for,
            "rerun_of": self.rerun_of, "executor": self.executor, "owner": self.owner,
            "created_at": now, "started_at": None, "reason": self.reason,
            "finished_at": now if self.state.is_final else None,
        }
        if self.secret_parameters:
            # Left out when empty, as for nearly every run: the column's default fills it.
            row["secret_parameters"] = dict(self.secret_parameters)
        if self.spec_digest is not None:
            row["spec_digest"] = self.spec_digest
            row["approval_expires_at"] = self.approval_expires_at
        if self.lock is not None and not self.state.is_final:
            row.update(lock=self.lock, request_digest=self.request_digest, lock_ticket=None)
        return row


class ActiveRun(NamedTuple):
    """Another queued or running run of the same job, as a trigger's reply mentions it."""

    id: str
    number: int
    state: str
    actor: str


@dataclass(frozen=True)
class Created:
    """What create_run did: the run, whether it is new, and the job's other live runs."""

    run: Run
    created: bool
    active: list[ActiveRun]
    # Found waiting for its lock with the same request: the trigger joined it.
    joined: bool = False


class _KeyUsed(Exception):
    """An idempotency key of the runs being written is used: the transaction rolls back."""


# Statements of the trigger path are built once: building one costs more than running it.
_ACTIVE = (select(RUNS.c.id, RUNS.c.number, RUNS.c.state, RUNS.c.actor)
           .where(RUNS.c.app == bindparam("app"), RUNS.c.job == bindparam("job"),
                  RUNS.c.id != bindparam("id"), RUNS.c.state.in_(LIVE_STATES))
           .order_by(RUNS.c.number.desc()).limit(ACTIVE_LIMIT))
_INSERT_EVENT = RUN_EVENTS.insert()
_INSERT_AUDIT = AUDIT_LOG.insert()


@functools.cache
def _insert_statement(dialect: str) -> Any:
    # The number of rows written tells whether a key was used (psycopg sums an executemany's).
    return (upsert_for(dialect)(RUNS).on_conflict_do_nothing(index_elements=["idempotency_key"])
            .execution_options(preserve_rowcount=True))


def _active(conn: Connection, run: Run) -> list[ActiveRun]:
    rows = conn.execute(_ACTIVE, {"app": run.app, "job": run.job, "id": run.id})
    return [ActiveRun(*row) for row in rows]


def _slot_audit(new: NewRun) -> AuditRecord:
    queued = new.state is RunState.QUEUED
    return AuditRecord(actor=new.actor, source=new.source, action="run" if queued else "skip",
                       target=f"{new.app}/{new.job}", result="started" if queued else "skipped",
                       detail=new.reason)


class RunStore(StoreBase):
    def create_run(self, new: NewRun, audit: AuditRecord | None = None) -> Created:
        """Record a run, its first event and `audit` in one transaction.

        With an idempotency key already used, nothing is written and that run is returned.
        """
        try:
            with self._writing() as conn:
                if new.lock and new.request_digest and new.state is RunState.QUEUED:
                    alike = waiting_alike(conn, new.app, new.job, new.lock, new.request_digest)
                    if alike is not None:
                        joined = self.get_run(alike)
                        assert joined is not None
                        return Created(joined, False, _active(conn, joined), joined=True)
                run = self._insert_runs(conn, [new], [audit])[0]
                return Created(run, True, _active(conn, run))
        except _KeyUsed:
            pass  # rolled back: the job's number is given back
        existing = self.run_by_key(new.idempotency_key or "")
        if existing is None:
            raise RuntimeError(f"idempotency key {new.idempotency_key!r} conflicted, "
                               "but no run has it")
        with self._reading() as conn:
            return Created(existing, False, _active(conn, existing))

    def create_runs(self, news: Sequence[NewRun], audit: bool = True,
                    schedule_states: Sequence[ScheduleRow] = ()) -> list[Created]:
        """Record many runs (cron slots) and the jobs' schedule state in one transaction.

        Returns what was created, in order; runs whose idempotency key was already used are
        left out (another scheduler recorded that slot first).
        """
        fresh = list(news)
        if not fresh and not schedule_states:
            return []
        # A pass meets a used key only if another process used it after the check: the whole
        # batch rolls back (so no run number is skipped) and goes again without it.
        for _ in range(len(fresh) + 1):
            try:
                with self._writing() as conn:
                    used = self._used_keys(conn, [n.idempotency_key for n in fresh
                                                  if n.idempotency_key])
                    fresh = [n for n in fresh if n.idempotency_key not in used]
                    audits = [_slot_audit(n) if audit else None for n in fresh]
                    runs = self._insert_runs(conn, fresh, audits, schedule_states)
                return [Created(run, True, []) for run in runs]
            except _KeyUsed:
                continue
        raise RuntimeError("every pass of a batch of runs met an idempotency key not seen used")

    def _insert_runs(self, conn: Connection, news: Sequence[NewRun],
                     audits: Sequence[AuditRecord | None],
                     schedules: Sequence[ScheduleRow] = ()) -> list[Run]:
        """Number and insert `news`, with their `created` events and audit lines, and save
        `schedules`; the runs as written. Raises _KeyUsed if a key is taken."""
        counts: dict[tuple[str, str], int] = {}
        lines: dict[tuple[str, str], int] = {}
        for new in news:
            counts[(new.app, new.job)] = counts.get((new.app, new.job), 0) + 1
            if new.lock is not None and not new.state.is_final:
                lines[(new.app, new.lock)] = lines.get((new.app, new.lock), 0) + 1
        # Tickets first: every transaction locks a lock's row before anything else it locks.
        tickets = {key: take_tickets(conn, *key, count) for key, count in sorted(lines.items())}
        last = count_runs(conn, counts, schedules)
        if not news:
            return []
        numbers = {key: last[key] - count for key, count in counts.items()}
        now = utcnow()
        rows = []
        for new, run_id in zip(news, new_run_ids(len(news)), strict=True):
            numbers[(new.app, new.job)] += 1
            row = new.row(run_id, numbers[(new.app, new.job)], now)
            if "lock_ticket" in row:
                row["lock_ticket"] = tickets[(new.app, new.lock or "")]
                tickets[(new.app, new.lock or "")] += 1
            rows.append(row)
        if lines:  # one statement for all rows: every row names the same columns
            for row in rows:
                for key in ("lock", "request_digest", "lock_ticket"):
                    row.setdefault(key, None)
        if conn.execute(_insert_statement(self.dialect), rows).rowcount != len(rows):
            raise _KeyUsed()
        conn.execute(_INSERT_EVENT, [
            {"run_id": row["id"], "kind": "created", "state": row["state"],
             "data": {"reason": row["reason"]} if row["reason"] else {}, "created_at": now}
            for row in rows])
        audit_lines = [record.row(f"#{row['number']} ({row['id']})")
                       for record, row in zip(audits, rows, strict=True) if record is not None]
        if audit_lines:
            conn.execute(_INSERT_AUDIT, audit_lines)
        return [Run.model_construct(**{"secret_parameters": {}, "spec_digest": None,
                                       "approval_expires_at": None, "lock": None,
                                       "lock_ticket": None, "request_digest": None, **row})
                for row in rows]

    @staticmethod
    def _used_keys(conn: Connection, keys: list[str]) -> set[str]:
        used: set[str] = set()
        for chunk in chunks(keys):
            used.update(conn.execute(select(RUNS.c.idempotency_key)
                                     .where(RUNS.c.idempotency_key.in_(chunk))).scalars())
        return used

    def get_run(self, run_id: str) -> Run | None:
        with self._read() as session:
            return session.get(Run, run_id)

    def run_by_key(self, key: str) -> Run | None:
        with self._read() as session:
            return session.exec(orm_select(Run).where(Run.idempotency_key == key)).first()

    def run_by_number(self, app: str, job: str, number: int) -> Run | None:
        with self._read() as session:
            return session.exec(
                orm_select(Run).where(Run.app == app, Run.job == job, Run.number == number)
            ).first()

    def list_runs(
        self,
        *,
        app: str | None = None,
        job: str | None = None,
        states: Sequence[RunState] | None = None,
        limit: int = 50,
        before_number: int | None = None,
    ) -> list[Run]:
        """Newest first."""
        query = orm_select(Run)
        if app:
            query = query.where(Run.app == app)
        if job:
            query = query.where(Run.job == job)
        if states:
            query = query.where(col(Run.state).in_([s.value for s in states]))
        if before_number is not None:
            query = query.where(col(Run.number) < before_number)
        order = (col(Run.number).desc(),) if job else (col(Run.created_at).desc(),)
        with self._read() as session:
            return list(session.exec(query.order_by(*order).limit(limit)))

    def active_runs(self, app: str, job: str | None = None) -> list[Run]:
        return self.list_runs(
            app=app, job=job, states=(RunState.QUEUED, RunState.WAITING, RunState.RUNNING),
            limit=1000)

    def live_runs(self, jobs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Run]]:
        """Queued and running runs of each of `jobs` (app, job), newest first: one query for
        all the jobs a scheduler round applies Forbid or Replace to."""
        found: dict[tuple[str, str], list[Run]] = {}
        with self._read() as session:
            for chunk in chunks(sorted(set(jobs))):
                query = (orm_select(Run)
                         .where(tuple_(col(Run.app), col(Run.job)).in_(chunk),
                                col(Run.state).in_(LIVE_STATES))
                         .order_by(col(Run.number).desc()))
                for run in session.exec(query):
                    found.setdefault((run.app, run.job), []).append(run)
        return found

    def unfinished_runs(self, executor: str | None = None) -> list[Run]:
        query = orm_select(Run).where(col(Run.state).in_(LIVE_STATES))
        if executor:
            query = query.where(Run.executor == executor)
        with self._read() as session:
            return list(session.exec(query.order_by(col(Run.created_at))))

    def transition(
        self,
        run_id: str,
        state: RunState,
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        data: dict[str, Any] | None = None,
        external_id: str | None = None,
    ) -> Run | None:
        """Move a run to `state` and append its event, atomically; None if it may not move."""
        return self.transition_handing_over(run_id, state, reason=reason, exit_code=exit_code,
                                            data=data, external_id=external_id).run

    def transition_handing_over(
        self,
        run_id: str,
        state: RunState,
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        data: dict[str, Any] | None = None,
        external_id: str | None = None,
        hands_over: bool = False,
        claimer: str | None = None,
    ) -> Handed:
        """transition(); with `hands_over`, a run made final that held its lock hands it, in
        the same transaction, to the next run in line, which becomes `claimer`'s to launch
        (with no claimer, it stays its owner's)."""
        now = utcnow()
        values: dict[str, Any] = {"state": state.value}
        if external_id is not None:
            values["external_id"] = external_id
        if reason is not None:
            values["reason"] = reason
        if exit_code is not None:
            values["exit_code"] = exit_code
        if state is RunState.RUNNING:
            values.setdefault("started_at", now)
        if state.is_final:
            values["finished_at"] = now
        allowed = [s.value for s in _REACHABLE_FROM.get(state, ())]
        with self._write() as session:
            # The lock's row first: every transaction takes it before the runs it changes.
            lock = (lock_of(session.connection(), run_id)
                    if hands_over and state.is_final else None)
            result = session.execute(
                update(Run)
                .where(col(Run.id) == run_id, col(Run.state).in_(allowed))
                .values(**values)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return Handed(None)
            run = session.get(Run, run_id)
            assert run is not None
            session.refresh(run)
            payload = dict(data or {})
            if reason:
                payload.setdefault("reason", reason)
            if exit_code is not None:
                payload.setdefault("exit_code", exit_code)
            self._event(session, run, "state", payload)
            granted = None
            if lock is not None:
                granted_id = release(session.connection(), *lock, run_id, claimer)
                granted = session.get(Run, granted_id) if granted_id else None
            return Handed(run, granted)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set bookkeeping fields (owner, external id, cancel request) without an event."""
        with self._write() as session:
            session.execute(update(Run).where(col(Run.id) == run_id).values(**fields))

    def request_cancel(self, run_id: str, actor: str) -> Run | None:
        """Remember who asked to cancel a live run, and tell subscribers; None if it is final."""
        with self._write() as session:
            result = session.execute(
                update(Run)
                .where(col(Run.id) == run_id, col(Run.state).in_(LIVE_STATES))
                .values(cancel_requested_by=actor)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            run = session.get(Run, run_id)
            assert run is not None
            session.refresh(run)
            self._event(session, run, "cancel_requested", {"actor": actor})
            return run

    # -- attempts -------------------------------------------------------------------------

    def start_attempt(self, run_id: str, index: int, *, log_path: str | None,
                      handle: str | None) -> Attempt:
        with self._write() as session:
            attempt = Attempt(run_id=run_id, index=index, state=RunState.RUNNING.value,
                              started_at=utcnow(), log_path=log_path, handle=handle)
            session.add(attempt)
            run = session.get(Run, run_id)
            assert run is not None
            self._event(session, run, "attempt_started", {"attempt": index})
            return attempt

    def finish_attempt(self, run_id: str, index: int, state: RunState, *,
                       exit_code: int | None, reason: str | None = None) -> None:
        with self._write() as session:
            session.execute(
                update(Attempt)
                .where(col(Attempt.run_id) == run_id, col(Attempt.index) == index)
                .values(state=state.value, exit_code=exit_code, reason=reason,
                        finished_at=utcnow())
            )
            run = session.get(Run, run_id)
            assert run is not None
            self._event(session, run, "attempt_finished",
                        {"attempt": index, "state": state.value, "exit_code": exit_code,
                         "reason": reason})

    def attempts(self, run_id: str) -> list[Attempt]:
        with self._read() as session:
            return list(session.exec(
                orm_select(Attempt).where(Attempt.run_id == run_id).order_by(col(Attempt.index))
            ))

    # -- events (outbox) and subscriber cursors -------------------------------------------

    @staticmethod
    def _event(session: Session, run: Run, kind: str, data: dict[str, Any]) -> None:
        session.add(RunEvent(run_id=run.id, kind=kind, state=run.state, data=data,
                             created_at=utcnow()))

    def events_after(self, last_id: int, limit: int = 500) -> list[RunEvent]:
        with self._read() as session:
            return list(session.exec(
                orm_select(RunEvent).where(col(RunEvent.id) > last_id)
                .order_by(col(RunEvent.id)).limit(limit)
            ))

    def events_for(self, run_id: str) -> list[RunEvent]:
        with self._read() as session:
            return list(session.exec(
                orm_select(RunEvent).where(RunEvent.run_id == run_id).order_by(col(RunEvent.id))
            ))

    def last_event_id(self) -> int:
        with self._read() as session:
            return int(session.exec(orm_select(func.coalesce(func.max(RunEvent.id), 0))).one() or 0)

    def cursor(self, name: str) -> int | None:
        with self._read() as session:
            row = session.get(SubscriberCursor, name)
            return row.last_event_id if row else None

    def start_cursor(self, name: str) -> None:
        """Give subscriber `name` a cursor at the newest event, unless it has one: a new
        subscriber starts with what happens from now on. Of replicas starting at once, the
        first to write it wins, so a later one never moves it past undelivered events."""
        try:
            with self._write() as session:
                if session.get(SubscriberCursor, name) is not None:
                    return
                newest = session.exec(orm_select(func.coalesce(func.max(RunEvent.id), 0))).one()
                session.add(SubscriberCursor(name=name, last_event_id=int(newest or 0),
                                             updated_at=utcnow()))
        except IntegrityError:
            pass  # another replica wrote it first: its cursor stands

    def save_cursor(self, name: str, last_event_id: int) -> None:
        with self._write() as session:
            row = session.get(SubscriberCursor, name)
            if row is None:
                session.add(SubscriberCursor(name=name, last_event_id=last_event_id,
                                             updated_at=utcnow()))
            else:
                row.last_event_id = last_event_id
                row.updated_at = utcnow()

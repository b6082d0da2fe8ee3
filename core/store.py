"""All database access: runs, attempts, the run-event outbox, job state, cursors and audit."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    case,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import configure_mappers
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql import Select
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from core.models import (
    Attempt,
    AuditEntry,
    BranchHead,
    Delivery,
    ForkApproval,
    JobState,
    PullRequestComment,
    PullRequestHead,
    RepositoryApp,
    Run,
    RunEvent,
    RunState,
    ServedRepository,
    SlackConfirmation,
    SlackMessage,
    SlackWork,
    SubscriberCursor,
    utcnow,
)
from core.run_ids import new_run_id, new_run_ids
from core.run_insert import (
    CHUNK,
    JOB_STATE,
    RUN_EVENTS,
    RUNS,
    ActiveRun,
    KeyRace,
    RunInserter,
    ScheduleRow,
    SlotBatch,
    upsert_for,
)

# From which states each state may be reached; a final state is never left.
_REACHABLE_FROM: dict[RunState, tuple[RunState, ...]] = {
    RunState.RUNNING: (RunState.QUEUED,),
    RunState.SUCCEEDED: (RunState.QUEUED, RunState.RUNNING),
    RunState.FAILED: (RunState.QUEUED, RunState.RUNNING),
    RunState.TIMED_OUT: (RunState.QUEUED, RunState.RUNNING),
    RunState.CANCELLED: (RunState.QUEUED, RunState.RUNNING),
}


# Not frozen: the scheduler builds one per slot, and a frozen dataclass's __init__ costs
# twice as much (each field set through object.__setattr__). Nothing changes one once built.
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
    origin: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    scheduled_for: datetime | None = None
    rerun_of: str | None = None
    executor: str = "local"
    owner: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.scheduled_for is not None and self.scheduled_for.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")


@dataclass(frozen=True)
class NewDelivery:
    """A verified webhook delivery to record before it is answered."""

    id: str
    event: str
    action: str | None
    # The JSON body, kept until the delivery is handled.
    payload: str
    owner: str
    # (repository, branch, sha) when it is a push to a branch.
    head: tuple[str, str, str] | None = None


# Whether an unhandled request's owner (host:pid:start, or None) has died, given the time the
# oldest of its unhandled requests was received (core/intake.py `abandoned`).
Abandoned = Callable[[str | None, datetime], bool]


@dataclass(frozen=True)
class AuditRecord:
    """An audit-log line written in the same transaction as the change it describes."""

    actor: str
    source: str
    action: str
    target: str
    result: str
    detail: str | None = None


@dataclass(frozen=True)
class Created:
    """What create_run did: the run, whether it is new, and the job's other live runs."""

    run: Run
    created: bool
    active: list[ActiveRun]


DELIVERIES: Table = Delivery.__table__  # type: ignore[attr-defined]
BRANCH_HEADS: Table = BranchHead.__table__  # type: ignore[attr-defined]
# The outcome of a delivery recorded but not handled yet.
RECEIVED = "received"
ATTEMPTS: Table = Attempt.__table__  # type: ignore[attr-defined]
SLACK_WORK: Table = SlackWork.__table__  # type: ignore[attr-defined]
CURSORS: Table = SubscriberCursor.__table__  # type: ignore[attr-defined]
# Finished states counted against `history.failed` (skipped slots have their own bound).
FAILED_STATES = (RunState.FAILED.value, RunState.TIMED_OUT.value, RunState.CANCELLED.value)
FINAL_STATES = tuple(state.value for state in RunState if state.is_final)
# The event id every outbox subscriber has delivered up to (None: no subscriber yet).
_SLOWEST_CURSOR = select(func.min(CURSORS.c.last_event_id))


class _BatchStatements:
    """Statements of the scheduler's batches, built once per dialect."""

    def __init__(self, dialect: str) -> None:
        upsert = upsert_for(dialect)
        state = upsert(JOB_STATE)
        self.save_schedule = state.on_conflict_do_update(
            index_elements=["app", "job"],
            set_={"fingerprint": state.excluded.fingerprint, "last_slot": state.excluded.last_slot},
        )


# A batch meeting used keys is written again without them; after this many tries, one by one.
_BATCH_TRIES = 3
FINAL_STATE_VALUES = frozenset(s.value for s in RunState if s.is_final)


def _row(new: NewRun, run_id: str) -> dict[str, Any]:
    """A batch row: the run's columns known before it is written (the origin and overrides
    dicts are shared, not copied: the store never changes them)."""
    return {
        "id": run_id, "app": new.app, "job": new.job, "state": new.state.value,
        "source": new.source, "actor": new.actor, "ref": new.ref, "sha": new.sha,
        "image": new.image, "overrides": new.overrides, "origin": new.origin,
        "idempotency_key": new.idempotency_key, "scheduled_for": new.scheduled_for,
        "rerun_of": new.rerun_of, "executor": new.executor, "owner": new.owner,
        "reason": new.reason,
    }


def _written_run(row: dict[str, Any], number: int, now: datetime) -> Run:
    """The Run a batch row became (as read back: numbered, created now, never started)."""
    return detached_run({
        "id": row["id"], "app": row["app"], "job": row["job"], "number": number,
        "state": row["state"], "source": row["source"], "actor": row["actor"],
        "ref": row["ref"], "sha": row["sha"], "image": row["image"],
        "overrides": row["overrides"], "origin": row["origin"],
        "idempotency_key": row["idempotency_key"], "scheduled_for": row["scheduled_for"],
        "rerun_of": row["rerun_of"], "executor": row["executor"], "owner": row["owner"],
        "external_id": None, "created_at": now, "started_at": None,
        "finished_at": now if row["state"] in FINAL_STATE_VALUES else None,
        "exit_code": None, "reason": row["reason"], "cancel_requested_by": None,
    })


def _audit_values(record: AuditRecord) -> dict[str, Any]:
    return {
        "actor": record.actor, "source": record.source, "action": record.action,
        "target": record.target[:255], "result": record.result,
        "detail": record.detail[:2000] if record.detail else None,
    }


_RUN_FIELDS = frozenset(Run.model_fields)
_new_object = object.__new__
_set_slot = object.__setattr__


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


def detached_run(values: dict[str, Any]) -> Run:
    """A Run made of `values`, a fresh dict of every field in the model's order that the run
    keeps as its own: as Run.model_construct makes it (no validation, no session), without
    its per-field bookkeeping.

    The scheduler's batches build one per slot: a SQLModel table model's __init__ costs
    ~0.5 ms, model_construct ~12 us, this under 1 us. Read these copies; never add them to
    a session.
    """
    run: Run = _new_object(Run)
    # What SQLModel's __new__ and pydantic's model_construct set, in their slots.
    _set_slot(run, "__dict__", values)
    _set_slot(run, "__pydantic_fields_set__", set(_RUN_FIELDS))
    _set_slot(run, "__pydantic_extra__", None)
    _set_slot(run, "__pydantic_private__", None)
    return run


class Store:
    """The one place that talks SQL. Every method is one short transaction."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        # Set up the models' attribute instrumentation now rather than at the first query:
        # the batch path builds Run objects without a session (model_construct) and needs it.
        configure_mappers()
        self.engine = _make_engine(url, echo=echo)
        self.dialect = self.engine.dialect.name
        # SQLite has one writer at a time: event ids become visible in the order they were
        # handed out. PostgreSQL's sequence hands them out before the commit, so a smaller id
        # can become visible after a larger one (see Scheduler.prune).
        self.event_ids_visible_in_order = self.dialect == "sqlite"
        self._write_engine = self.engine.execution_options(jobbot_write=True)
        self._runs = RunInserter(self.dialect)
        self._batch = _BatchStatements(self.dialect)
        self._slots = SlotBatch(self.dialect)

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest migration; safe when several processes start at once."""
        from core.migrations.runner import upgrade

        with self._migration_lock():
            upgrade(self.engine)

    def schema_is_current(self) -> bool:
        from core.migrations.runner import is_current

        with self._reading() as conn:
            return is_current(conn)

    def ping(self) -> None:
        with self._reading() as conn:
            conn.execute(text("SELECT 1"))

    def close(self, wait: float = 2.0) -> None:
        """Close every connection. Calls still running in worker threads (cancelled callers'
        reads) get up to `wait` seconds to hand theirs back first: one handed back after the
        pool is gone would stay open until the garbage collector finds it."""
        deadline = time.monotonic() + wait
        pool = self.engine.pool
        while isinstance(pool, QueuePool) and pool.checkedout() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.engine.dispose()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(7326001)"))
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(7326001)"))
                    conn.commit()
        else:
            database = self.engine.url.database
            if not database or database == ":memory:":
                yield
                return
            with open(Path(database).with_suffix(".migrate.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    # -- sessions -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        # On SQLite a write transaction starts with BEGIN IMMEDIATE, so two processes queue on
        # busy_timeout instead of failing when a read lock cannot be upgraded.
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    # Reads end with COMMIT, not the ROLLBACK of closing: psycopg forgets every statement it
    # has prepared on a connection at each ROLLBACK, so on PostgreSQL the scheduler's batch
    # statement was parsed and planned anew each time (10-15% of the server's CPU for it).

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session
            session.commit()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn
            conn.commit()

    # -- runs -----------------------------------------------------------------------------

    def create_run(self, new: NewRun, audit: AuditRecord | None = None) -> Created:
        """Record a run, its first event and `audit` in one transaction.

        With an idempotency key already used, nothing is written and that run is returned.
        """
        now = utcnow()
        values: dict[str, Any] = {
            "id": new_run_id(), "app": new.app, "job": new.job, "state": new.state.value,
            "source": new.source, "actor": new.actor, "ref": new.ref, "sha": new.sha,
            "image": new.image, "overrides": dict(new.overrides), "origin": dict(new.origin),
            "idempotency_key": new.idempotency_key, "scheduled_for": new.scheduled_for,
            "rerun_of": new.rerun_of, "executor": new.executor, "owner": new.owner,
            "created_at": now, "reason": new.reason,
            "finished_at": now if new.state.is_final else None,
        }
        event_data = {"reason": new.reason} if new.reason else {}
        audit_values = _audit_values(audit) if audit else None
        with self._write_engine.connect() as conn:
            with conn.begin() as transaction:
                result = self._runs.insert(conn, values, event_data, audit_values)
                if result is None:
                    # Either the job's first run (no counter row yet) or a used key.
                    self._runs.ensure_job_state(conn, new.app, new.job)
                    result = self._runs.insert(conn, values, event_data, audit_values)
                if result is not None:
                    number, active = result
                    return Created(Run(**values, number=number), True, active)
                transaction.rollback()  # the key was used: give the number back
            existing = self.run_by_key(new.idempotency_key or "")
            if existing is None:
                raise RuntimeError(f"idempotency key {new.idempotency_key!r} conflicted, "
                                   "but no run has it")
            return Created(existing, False,
                           self._runs.active(conn, existing.app, existing.job, existing.id))

    def create_runs(self, news: Sequence[NewRun], audit: bool = True,
                    schedule_states: Sequence[ScheduleRow] = ()) -> list[Created]:
        """Record many runs (cron slots) and the jobs' schedule state in one transaction:
        the scheduler's hot path.

        Returns what was created, in order; runs whose idempotency key was already used are
        left out (another scheduler recorded that slot first). A batch that meets a used key
        is rolled back whole (so no run number is skipped) and written again without the
        used keys; after repeated races the runs are recorded one by one.
        """
        fresh = list(news)
        for _ in range(_BATCH_TRIES):
            if not fresh and not schedule_states:
                return []
            now = utcnow()
            rows = [_row(n, run_id) for n, run_id in zip(fresh, new_run_ids(len(fresh)),
                                                         strict=True)]
            try:
                with self._write_engine.connect() as conn, conn.begin():
                    numbered = self._slots.write(conn, rows, audit, schedule_states, now)
            except KeyRace:
                used = self._used_keys([n.idempotency_key for n in fresh if n.idempotency_key])
                fresh = [n for n in fresh if n.idempotency_key not in used]
                continue
            return [Created(_written_run(row, number, now), True, [])
                for row, (_, number) in zip(rows, numbered, strict=True)]
        created = [self.create_run(n, self._slot_audit(n) if audit else None) for n in fresh]
        self.save_schedule_states(schedule_states)
        return [c for c in created if c.created]

    def _used_keys(self, keys: Sequence[str]) -> set[str]:
        used: set[str] = set()
        with self._reading() as conn:
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start:start + CHUNK]
                used.update(conn.execute(select(RUNS.c.idempotency_key)
                                         .where(RUNS.c.idempotency_key.in_(chunk))).scalars())
        return used

    @staticmethod
    def _slot_audit(new: NewRun) -> AuditRecord:
        return AuditRecord(actor=new.actor, source=new.source,
                           action="run" if new.state is RunState.QUEUED else "skip",
                           target=f"{new.app}/{new.job}",
                           result="started" if new.state is RunState.QUEUED else "skipped",
                           detail=new.reason)

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
            app=app, job=job, states=(RunState.QUEUED, RunState.RUNNING), limit=1000
        )

    def live_runs(self, jobs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Run]]:
        """Queued and running runs of each of `jobs` (app, job), newest first: one query for
        all the jobs a scheduler round applies Forbid or Replace to."""
        found: dict[tuple[str, str], list[Run]] = {}
        wanted = sorted(set(jobs))
        live = [RunState.QUEUED.value, RunState.RUNNING.value]
        with self._read() as session:
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start:start + CHUNK]
                query = (orm_select(Run)
                         .where(tuple_(col(Run.app), col(Run.job)).in_(chunk),
                                col(Run.state).in_(live))
                         .order_by(col(Run.number).desc()))
                for run in session.exec(query):
                    found.setdefault((run.app, run.job), []).append(run)
        return found

    def unfinished_runs(self, executor: str | None = None) -> list[Run]:
        query = orm_select(Run).where(
            col(Run.state).in_([RunState.QUEUED.value, RunState.RUNNING.value])
        )
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
            result = session.execute(
                update(Run)
                .where(col(Run.id) == run_id, col(Run.state).in_(allowed))
                .values(**values)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            run = session.get(Run, run_id)
            assert run is not None
            session.refresh(run)
            payload = dict(data or {})
            if reason:
                payload.setdefault("reason", reason)
            if exit_code is not None:
                payload.setdefault("exit_code", exit_code)
            self._event(session, run, "state", payload)
            return run

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set bookkeeping fields (owner, external id, cancel request) without an event."""
        with self._write() as session:
            session.execute(update(Run).where(col(Run.id) == run_id).values(**fields))

    def request_cancel(self, run_id: str, actor: str) -> Run | None:
        """Remember who asked to cancel a live run, and tell subscribers; None if it is final."""
        with self._write() as session:
            result = session.execute(
                update(Run)
                .where(col(Run.id) == run_id,
                       col(Run.state).in_([RunState.QUEUED.value, RunState.RUNNING.value]))
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

    # -- events (outbox) ------------------------------------------------------------------

    def _event(self, session: Session, run: Run, kind: str, data: dict[str, Any]) -> None:
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

    def save_cursor(self, name: str, last_event_id: int) -> None:
        with self._write() as session:
            row = session.get(SubscriberCursor, name)
            if row is None:
                session.add(SubscriberCursor(name=name, last_event_id=last_event_id,
                                             updated_at=utcnow()))
            else:
                row.last_event_id = last_event_id
                row.updated_at = utcnow()

    # -- Slack threads --------------------------------------------------------------------

    def slack_message(self, run_id: str) -> SlackMessage | None:
        with self._read() as session:
            return session.get(SlackMessage, run_id)

    def save_slack_message(self, run_id: str, channel: str, ts: str,
                           last_event_id: int) -> None:
        """Remember a run's parent message and how far its thread got (insert or update)."""
        with self._write() as session:
            row = session.get(SlackMessage, run_id)
            if row is None:
                session.add(SlackMessage(run_id=run_id, channel=channel, ts=ts,
                                         last_event_id=last_event_id, updated_at=utcnow()))
            else:
                row.channel, row.ts, row.updated_at = channel, ts, utcnow()
                row.last_event_id = max(row.last_event_id, last_event_id)

    # -- Slack work and confirmations -----------------------------------------------------

    def record_slack_work(self, key: str, kind: str, body: dict[str, Any], owner: str) -> bool:
        """Record a command or click before its ack; False (nothing written) for a known key."""
        row = {"key": key, "kind": kind, "body": body, "received_at": utcnow(), "done_at": None,
               "owner": owner}
        with self._write() as session:
            inserted = session.execute(
                upsert_for(self.dialect)(SLACK_WORK).on_conflict_do_nothing(index_elements=["key"])
                .returning(SLACK_WORK.c.key), [row]).first()
        return inserted is not None

    def finish_slack_work(self, key: str) -> None:
        with self._write() as session:
            session.execute(update(SlackWork).where(col(SlackWork.key) == key)
                            .values(done_at=utcnow()))

    def take_over_slack_work(self, owner: str, abandoned: Abandoned) -> list[SlackWork]:
        """The unfinished work of dead processes (by `abandoned`), now `owner`'s, oldest first."""
        rows = self._take_over(SLACK_WORK, SLACK_WORK.c.done_at.is_(None), owner, abandoned)
        return sorted((SlackWork.model_validate(dict(row)) for row in rows),
                      key=lambda work: work.received_at)

    def prune_slack_work(self, received_before: datetime) -> int:
        """Forget work received before then, done or not (kept so late Slack retries find it)."""
        with self._write() as session:
            result = session.execute(delete(SlackWork)
                                     .where(col(SlackWork.received_at) < received_before))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def add_confirmation(self, row: SlackConfirmation) -> None:
        """Save a pending confirmation; ones expired a day ago are forgotten on the way."""
        with self._write() as session:
            session.execute(delete(SlackConfirmation).where(
                col(SlackConfirmation.expires_at) < utcnow() - timedelta(days=1)))
            session.add(row)

    def confirmation(self, confirmation_id: str) -> SlackConfirmation | None:
        with self._read() as session:
            return session.get(SlackConfirmation, confirmation_id)

    def answer_confirmation(self, confirmation_id: str, requester: str, answer: str,
                            answer_key: str, now: datetime) -> SlackConfirmation | None:
        """Record the requester's answer if the confirmation is open; the row as it now is.

        The caller compares `answer_key` with the row's to tell its own answer (also when
        replayed after a restart) from an earlier one.
        """
        with self._write() as session:
            row = session.get(SlackConfirmation, confirmation_id)
            if (row is not None and row.answer is None and row.requester == requester
                    and row.expires_at > now):
                row.answer, row.answer_key = answer, answer_key
            return row

    # -- jobs -----------------------------------------------------------------------------

    def job_state(self, app: str, job: str) -> JobState:
        with self._read() as session:
            return session.get(JobState, (app, job)) or JobState(app=app, job=job)

    def set_paused(self, app: str, job: str, paused: bool, actor: str) -> bool:
        """Pause or resume; returns False if the job already was in that state."""
        with self._write() as session:
            self._runs.ensure_job_state(session.connection(), app, job)
            result = session.execute(
                update(JobState)
                .where(col(JobState.app) == app, col(JobState.job) == job,
                       col(JobState.paused) == (not paused))
                .values(paused=paused, paused_by=actor if paused else None,
                        paused_at=utcnow() if paused else None)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def paused_jobs(self) -> dict[tuple[str, str], str | None]:
        """Every paused job, with who paused it."""
        with self._reading() as conn:
            rows = conn.execute(select(JOB_STATE.c.app, JOB_STATE.c.job, JOB_STATE.c.paused_by)
                                .where(JOB_STATE.c.paused.is_(True)))
            return {(app, job): by for app, job, by in rows}

    # -- schedules ------------------------------------------------------------------------

    def schedule_states(self) -> dict[tuple[str, str], JobState]:
        """The job_state rows that hold a schedule (fingerprint and last slot)."""
        with self._read() as session:
            return {(s.app, s.job): s for s in session.exec(
                orm_select(JobState).where(col(JobState.fingerprint).is_not(None)))}

    def save_schedule_states(self, states: Sequence[tuple[str, str, str, datetime]]) -> None:
        """Save (app, job, fingerprint, last slot); a later slot never goes backwards because
        each scheduler only saves slots it has handled, and slots only move forward."""
        if not states:
            return
        rows = [{"app": a, "job": j, "last_number": 0, "paused": False, "fingerprint": f,
                 "last_slot": s} for a, j, f, s in states]
        with self._write_engine.connect() as conn, conn.begin():
            for start in range(0, len(rows), CHUNK):
                conn.execute(self._batch.save_schedule, rows[start:start + CHUNK])

    def forget_schedule_states(self, jobs: Sequence[tuple[str, str]]) -> None:
        """Forget the schedule of (app, job) pairs that no longer exist (their run numbers
        stay: a job that comes back goes on counting)."""
        with self._write_engine.connect() as conn, conn.begin():
            for start in range(0, len(jobs), CHUNK):
                chunk = list(jobs[start:start + CHUNK])
                conn.execute(update(JOB_STATE)
                             .where(tuple_(JOB_STATE.c.app, JOB_STATE.c.job).in_(chunk))
                             .values(fingerprint=None, last_slot=None))

    def prune_history(self, limits: dict[tuple[str, str], tuple[int, int, int]],
                      touched_after: int | None = None) -> list[str]:
        """Delete finished runs beyond (succeeded, failed, skipped) kept per job, with their
        attempts and events, once every outbox subscriber's cursor has passed their events;
        returns the deleted run ids (so their logs can go too).

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
                for start in range(0, len(doomed), CHUNK):
                    pending.update(conn.execute(
                        select(RUN_EVENTS.c.run_id).distinct()
                        .where(RUN_EVENTS.c.run_id.in_(doomed[start:start + CHUNK]),
                               RUN_EVENTS.c.id > slowest)).scalars())
                doomed = [run_id for run_id in doomed if run_id not in pending]
        with self._write_engine.connect() as conn, conn.begin():
            for start in range(0, len(doomed), CHUNK):
                chunk = doomed[start:start + CHUNK]
                conn.execute(delete(ATTEMPTS).where(ATTEMPTS.c.run_id.in_(chunk)))
                conn.execute(delete(RUN_EVENTS).where(RUN_EVENTS.c.run_id.in_(chunk)))
                conn.execute(delete(RUNS).where(RUNS.c.id.in_(chunk)))
        return doomed

    def history_mark(self) -> int:
        """Where a later `prune_history(touched_after=)` may start: the last event, or the
        slowest subscriber's cursor if it is behind (so the runs held back for it are looked
        at again once it has passed them)."""
        last = self.last_event_id()
        with self._reading() as conn:
            slowest = conn.execute(_SLOWEST_CURSOR).scalar()
        return last if slowest is None else min(last, int(slowest))

    # -- audit ----------------------------------------------------------------------------

    def audit(self, record: AuditRecord) -> None:
        with self._write() as session:
            self._audit(session, record)

    def _audit(self, session: Session, record: AuditRecord) -> None:
        session.execute(self._runs.insert_audit, {**_audit_values(record), "at": utcnow()})

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        with self._read() as session:
            return list(session.exec(
                orm_select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
            ))


    # -- webhook deliveries, served repositories, fork approvals (the GitHub App) --------

    def record_delivery(self, delivery: NewDelivery) -> bool:
        """Record a delivery, payload included, before it is answered; False (nothing written)
        for a known id. A new push moves its branch's head, in the same transaction, unless a
        push answered later is stored there already."""
        now = utcnow()
        row = {"id": delivery.id, "event": delivery.event[:64],
               "action": delivery.action[:64] if delivery.action else None,
               "received_at": now, "outcome": RECEIVED, "payload": delivery.payload,
               "owner": delivery.owner}
        upsert = upsert_for(self.dialect)
        with self._write() as session:
            conn = session.connection()
            # Two replicas may record the same id at once: the conflict clause settles it.
            new = conn.execute(upsert(DELIVERIES).on_conflict_do_nothing(index_elements=["id"])
                               .returning(DELIVERIES.c.id), [row]).first() is not None
            if new and delivery.head is not None:
                repository, branch, sha = delivery.head
                head = upsert(BRANCH_HEADS)
                conn.execute(head.on_conflict_do_update(
                    index_elements=["repository", "branch"],
                    set_={"sha": head.excluded.sha, "updated_at": head.excluded.updated_at},
                    where=head.excluded.updated_at >= BRANCH_HEADS.c.updated_at),
                    [{"repository": repository, "branch": branch, "sha": sha, "updated_at": now}])
            return new

    def finish_delivery(self, delivery_id: str, outcome: str) -> None:
        """Record what a delivery did; its payload is no longer needed."""
        with self._write() as session:
            session.execute(update(DELIVERIES).where(DELIVERIES.c.id == delivery_id)
                            .values(outcome=outcome[:2000], payload=None))

    def take_over_deliveries(self, owner: str, abandoned: Abandoned) -> list[Delivery]:
        """The unhandled deliveries of dead processes (by `abandoned`), now `owner`'s, oldest
        first."""
        rows = self._take_over(DELIVERIES, DELIVERIES.c.outcome == RECEIVED, owner, abandoned)
        return sorted((Delivery.model_validate(dict(row)) for row in rows),
                      key=lambda delivery: (delivery.received_at, delivery.id))

    def _take_over(self, table: Table, unhandled: Any, owner: str,
                   abandoned: Abandoned) -> list[Any]:
        """Make the unhandled rows of every abandoned owner `owner`'s; the rows taken. Each
        owner's rows move with one conditional UPDATE: of two processes starting at once, the
        second finds them moved and takes nothing."""
        with self._write() as session:
            conn = session.connection()
            owners = conn.execute(select(table.c.owner, func.min(table.c.received_at))
                                  .where(unhandled).group_by(table.c.owner)).all()
            taken: list[Any] = []
            for previous, oldest in owners:
                if previous == owner or not abandoned(previous, oldest):
                    continue
                mine = (table.c.owner.is_(None) if previous is None
                        else table.c.owner == previous)
                taken.extend(conn.execute(update(table).where(unhandled, mine)
                                          .values(owner=owner).returning(*table.c)).mappings())
            return taken

    def unhandled_delivery_count(self) -> int:
        with self._read() as session:
            return int(session.execute(select(func.count()).select_from(DELIVERIES)
                                       .where(DELIVERIES.c.outcome == RECEIVED)).scalar_one())

    def prune_deliveries(self, received_before: datetime) -> int:
        """Forget handled deliveries received before then; unhandled ones stay to be replayed."""
        with self._write() as session:
            result = session.execute(delete(Delivery)
                                     .where(col(Delivery.received_at) < received_before)
                                     .where(col(Delivery.outcome) != RECEIVED))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def delivery(self, delivery_id: str) -> Delivery | None:
        with self._read() as session:
            return session.get(Delivery, delivery_id)

    def add_repositories(self, installation_id: int, names: Sequence[str]) -> None:
        with self._write() as session:
            for name in names:
                row = session.get(ServedRepository, name)
                if row is None:
                    session.add(ServedRepository(full_name=name, installation_id=installation_id,
                                                 added_at=utcnow()))
                else:
                    row.installation_id = installation_id

    def remove_repositories(self, names: Sequence[str] | None = None, *,
                            installation_id: int | None = None) -> None:
        """Forget `names`, or every repository of `installation_id` (the app was uninstalled)."""
        with self._write() as session:
            query = orm_select(ServedRepository)
            if names is not None:
                query = query.where(col(ServedRepository.full_name).in_(list(names)))
            if installation_id is not None:
                query = query.where(col(ServedRepository.installation_id) == installation_id)
            for row in session.exec(query):
                session.delete(row)

    def served_repositories(self) -> list[ServedRepository]:
        with self._read() as session:
            return list(session.exec(orm_select(ServedRepository)
                                     .order_by(col(ServedRepository.full_name))))

    def branch_head(self, repository: str, branch: str) -> str | None:
        """The sha of the newest push received for the branch."""
        with self._read() as session:
            row = session.get(BranchHead, (repository, branch))
            return row.sha if row is not None else None

    def repository_apps(self) -> list[RepositoryApp]:
        with self._read() as session:
            return list(session.exec(orm_select(RepositoryApp)
                                     .order_by(col(RepositoryApp.repository))))

    def save_repository_app(self, repository: str, app: str, sha: str, app_yaml: str) -> str | None:
        """Remember the app `repository` defines; if another repository already defines an app
        of that name, nothing changes and that repository is returned."""
        with self._write() as session:
            other = session.exec(orm_select(RepositoryApp).where(
                col(RepositoryApp.app) == app,
                col(RepositoryApp.repository) != repository)).first()
            if other is not None:
                return other.repository
            row = session.get(RepositoryApp, repository)
            if row is None:
                session.add(RepositoryApp(repository=repository, app=app, sha=sha,
                                          app_yaml=app_yaml, updated_at=utcnow()))
            else:
                row.app, row.sha, row.app_yaml, row.updated_at = app, sha, app_yaml, utcnow()
            return None

    def pull_request_comment(self, repository: str, number: int) -> int | None:
        with self._read() as session:
            row = session.get(PullRequestComment, (repository, number))
            return row.comment_id if row is not None else None

    def save_pull_request_comment(self, repository: str, number: int, comment_id: int) -> None:
        with self._write() as session:
            row = session.get(PullRequestComment, (repository, number))
            if row is None:
                session.add(PullRequestComment(repository=repository, pull_request=number,
                                               comment_id=comment_id))
            else:
                row.comment_id = comment_id

    def approve_sha(self, repository: str, sha: str, pull_request: int, by: str) -> None:
        with self._write() as session:
            if session.get(ForkApproval, (repository, sha)) is None:
                session.add(ForkApproval(repository=repository, sha=sha,
                                         pull_request=pull_request, approved_by=by,
                                         approved_at=utcnow()))

    def approval(self, repository: str, sha: str) -> ForkApproval | None:
        with self._read() as session:
            return session.get(ForkApproval, (repository, sha))

    def runs_for_sha(self, sha: str, limit: int = 200) -> list[Run]:
        """Runs of any job at this commit, newest first."""
        with self._read() as session:
            return list(session.exec(orm_select(Run).where(col(Run.sha) == sha)
                                     .order_by(col(Run.created_at).desc()).limit(limit)))


    def runs_for_pull_request(self, repository: str, number: int, limit: int = 50) -> list[Run]:
        """Runs started for a pull request (origin repository and pull_request), newest first."""
        origin = col(Run.origin)
        query = (orm_select(Run)
                 .where(origin["repository"].as_string() == repository,
                        origin["pull_request"].as_integer() == number)
                 .order_by(col(Run.created_at).desc()).limit(limit))
        with self._read() as session:
            return list(session.exec(query))

    # -- GitHub: which app a repository defines, and the heads a pull request had ---------

    def repository_app(self, repository: str) -> RepositoryApp | None:
        """The app `repository` defines, as last stored (by any replica)."""
        with self._read() as session:
            return session.get(RepositoryApp, repository)

    def record_pull_request_head(self, repository: str, number: int, sha: str,
                                 since: datetime) -> None:
        """Remember that `sha` became the head of the pull request at `since` (once: a
        repeated event changes nothing)."""
        try:
            with self._write() as session:
                found = session.exec(orm_select(PullRequestHead).where(
                    col(PullRequestHead.repository) == repository,
                    col(PullRequestHead.pull_request) == number,
                    col(PullRequestHead.since) == since,
                    col(PullRequestHead.sha) == sha)).first()
                if found is None:
                    session.add(PullRequestHead(repository=repository, pull_request=number,
                                                sha=sha, since=since))
        except IntegrityError:
            return  # another replica recorded the same event at the same moment

    def pull_request_heads(self, repository: str, number: int) -> list[PullRequestHead]:
        """The heads the pull request had, in the order they became head (the same second:
        in the order jobbot heard of them)."""
        with self._read() as session:
            return list(session.exec(orm_select(PullRequestHead).where(
                col(PullRequestHead.repository) == repository,
                col(PullRequestHead.pull_request) == number)
                .order_by(col(PullRequestHead.since), col(PullRequestHead.id))))


def _make_engine(url: str, *, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        database = url.split("///", 1)[1] if "///" in url else ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, pool_size=8, max_overflow=16,
                               connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("jobbot_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)

"""Locks (app.yaml `lock:`): the line of runs waiting for a lock, grants and hand-overs.

Every statement that changes a lock's holder or its line first locks the lock's row (SELECT
... FOR UPDATE on PostgreSQL; on SQLite the write transaction already excludes every other
writer), so one run holds a lock at a time whichever replica grants it. Runs wait in the order
of their tickets, handed out from the lock's row when the run is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select, update
from sqlmodel import col
from sqlmodel import select as orm_select

from core.models import Run, RunLock, RunState, utcnow
from core.store.base import FINAL_STATES, RUN_EVENTS, RUNS, StoreBase, upsert_for

LOCKS: Table = RunLock.__table__  # type: ignore[attr-defined]
WAITING = RunState.WAITING.value
QUEUED = RunState.QUEUED.value
# How many runs at the head of a line are told (a `line` run event) that their place changed;
# runs further back see their place when they get this close.
LINE_UPDATES = 10


@dataclass(frozen=True)
class LinePlace:
    """Where a waiting run stands: 1 is next; `holder` is the run holding the lock (if any)."""

    lock: str
    position: int
    holder: Run | None


@dataclass(frozen=True)
class Handed:
    """A run made final, and the waiting run the lock went to (now queued, claimed by the
    replica that made the first run final), if any."""

    run: Run | None
    granted: Run | None = None


def _lock_row(conn: Connection, app: str, lock: str) -> Any:
    """The lock's row, created if missing, locked until the transaction ends."""
    insert = upsert_for(conn.dialect.name)(LOCKS)
    conn.execute(insert.on_conflict_do_nothing(index_elements=["app", "name"]),
                 [{"app": app, "name": lock, "holder": None, "last_ticket": 0,
                   "updated_at": utcnow()}])
    return conn.execute(select(LOCKS).where(LOCKS.c.app == app, LOCKS.c.name == lock)
                        .with_for_update()).one()


def take_tickets(conn: Connection, app: str, lock: str, count: int) -> int:
    """Hand out `count` tickets of a lock's line; the first one."""
    row = _lock_row(conn, app, lock)
    conn.execute(update(LOCKS).where(LOCKS.c.app == app, LOCKS.c.name == lock)
                 .values(last_ticket=row.last_ticket + count))
    return int(row.last_ticket) + 1


def waiting_alike(conn: Connection, app: str, job: str, lock: str, digest: str) -> str | None:
    """The id of a waiting run of the job asked to run with the same things (its request
    digest), to join instead of recording another; the lock's row is locked, so no like run
    can be recorded meanwhile."""
    _lock_row(conn, app, lock)
    found = conn.execute(select(RUNS.c.id).where(
        RUNS.c.app == app, RUNS.c.lock == lock, RUNS.c.state == WAITING, RUNS.c.job == job,
        RUNS.c.request_digest == digest).order_by(RUNS.c.lock_ticket).limit(1)).scalar()
    return str(found) if found is not None else None


def lock_of(conn: Connection, run_id: str) -> tuple[str, str] | None:
    """The (app, lock) of a run that names a lock, with the lock's row locked."""
    row = conn.execute(select(RUNS.c.app, RUNS.c.lock).where(RUNS.c.id == run_id)).first()
    if row is None or row.lock is None:
        return None
    _lock_row(conn, row.app, row.lock)
    return row.app, row.lock


def _holder_is_free(conn: Connection, holder: str | None) -> bool:
    """Whether a lock held by `holder` is free: nobody, or a run that is over (or gone)."""
    if holder is None:
        return True
    state = conn.execute(select(RUNS.c.state).where(RUNS.c.id == holder)).scalar()
    return state is None or state in FINAL_STATES


def _event(conn: Connection, run_id: str, kind: str, state: str, data: dict[str, Any]) -> None:
    conn.execute(RUN_EVENTS.insert(), [{"run_id": run_id, "kind": kind, "state": state,
                                        "data": data, "created_at": utcnow()}])


def _line(conn: Connection, app: str, lock: str, limit: int | None = None) -> list[str]:
    query = (select(RUNS.c.id).where(RUNS.c.app == app, RUNS.c.lock == lock,
                                     RUNS.c.state == WAITING)
             .order_by(RUNS.c.lock_ticket, RUNS.c.id))
    return [str(i) for i in conn.execute(query.limit(limit) if limit else query).scalars()]


def _tell_line(conn: Connection, app: str, lock: str) -> None:
    """A `line` event for each run at the head of the line: their places changed."""
    rows = [{"run_id": run_id, "kind": "line", "state": WAITING,
             "data": {"lock": lock, "position": place}, "created_at": utcnow()}
            for place, run_id in enumerate(_line(conn, app, lock, LINE_UPDATES), start=1)]
    if rows:
        conn.execute(RUN_EVENTS.insert(), rows)


def _first(conn: Connection, app: str, lock: str) -> Any:
    """The (id, state) of the first run in a free lock's line: waiting, or recorded and not
    yet at its gate (queued: it takes the lock there itself); None if there is none."""
    return conn.execute(select(RUNS.c.id, RUNS.c.state).where(
        RUNS.c.app == app, RUNS.c.lock == lock, RUNS.c.state.in_((WAITING, QUEUED)))
        .order_by(RUNS.c.lock_ticket, RUNS.c.id).limit(1)).first()


def hand_over(conn: Connection, app: str, lock: str, claimer: str | None) -> str | None:
    """Give the (locked, free) lock to the first run in line if it waits: it moves to
    `queued` and is `claimer`'s to launch (with no claimer, its owner's). Its id, or None."""
    first = _first(conn, app, lock)
    granted = None
    if first is not None and first.state == WAITING:
        claimed = {"owner": claimer} if claimer is not None else {}
        conn.execute(update(RUNS).where(RUNS.c.id == first.id, RUNS.c.state == WAITING)
                     .values(state=QUEUED, **claimed))
        granted = str(first.id)
    conn.execute(update(LOCKS).where(LOCKS.c.app == app, LOCKS.c.name == lock)
                 .values(holder=granted, updated_at=utcnow()))
    if granted is not None:
        _event(conn, granted, "state", QUEUED, {"lock": lock, "granted": True})
        _tell_line(conn, app, lock)
    return granted


def release(conn: Connection, app: str, lock: str, run_id: str,
            claimer: str | None) -> str | None:
    """`run_id` is over: if it held the (locked) lock, hand it to the next in line."""
    row = conn.execute(select(LOCKS.c.holder).where(LOCKS.c.app == app,
                                                    LOCKS.c.name == lock)).one()
    if row.holder == run_id or _holder_is_free(conn, row.holder):
        return hand_over(conn, app, lock, claimer)
    return None


class LockStore(StoreBase):
    def _run(self, run_id: str) -> Run | None:
        with self._read() as session:
            return session.get(Run, run_id)

    def enter_lock(self, run_id: str, claimer: str | None) -> tuple[bool, Run | None]:
        """At a locked run's launch: whether it holds its lock now (granted, or held already),
        and a waiting run granted instead (claimed by `claimer`, or left to its owner) when
        the lock was free with runs before this one in line. A run not granted moves to
        `waiting`."""
        with self._writing() as conn:
            where = lock_of(conn, run_id)
            row = conn.execute(select(RUNS.c.state, RUNS.c.lock_ticket)
                               .where(RUNS.c.id == run_id)).one()
            if where is None:
                return row.state == QUEUED, None
            app, lock = where
            holder = conn.execute(select(LOCKS.c.holder).where(
                LOCKS.c.app == app, LOCKS.c.name == lock)).scalar()
            if holder == run_id:
                return True, None
            if row.state != QUEUED:
                return False, None  # cancelled meanwhile, or already waiting
            free = _holder_is_free(conn, holder)
            # Runs recorded before this one and not yet at their gate are ahead of it too.
            before = (RUNS.c.app == app, RUNS.c.lock == lock,
                      RUNS.c.lock_ticket < row.lock_ticket)
            ahead = conn.execute(select(func.count()).select_from(RUNS).where(
                *before, RUNS.c.state == WAITING)).scalar_one()
            recorded = conn.execute(select(func.count()).select_from(RUNS).where(
                *before, RUNS.c.state == QUEUED, RUNS.c.id != (holder or ""))).scalar_one()
            if free and not ahead and not recorded:
                conn.execute(update(LOCKS).where(LOCKS.c.app == app, LOCKS.c.name == lock)
                             .values(holder=run_id, updated_at=utcnow()))
                return True, None
            conn.execute(update(RUNS).where(RUNS.c.id == run_id, RUNS.c.state == QUEUED)
                         .values(state=WAITING))
            _event(conn, run_id, "state", WAITING, {"lock": lock, "position": ahead + 1})
            granted = hand_over(conn, app, lock, claimer) if free else None
        return False, self._run(granted) if granted else None

    def cancel_waiting(self, run_id: str, actor: str) -> Run | None:
        """End a waiting run `cancelled` (it leaves the line, whose next runs move up); None
        if it is not waiting (granted, or over, meanwhile)."""
        with self._writing() as conn:
            where = lock_of(conn, run_id)
            if where is None:
                return None
            now = utcnow()
            reason = f"cancelled by {actor}"
            moved = conn.execute(update(RUNS).where(RUNS.c.id == run_id, RUNS.c.state == WAITING)
                                 .values(state=RunState.CANCELLED.value, finished_at=now,
                                         reason=reason))
            if moved.rowcount != 1:
                return None
            _event(conn, run_id, "state", RunState.CANCELLED.value, {"reason": reason})
            _tell_line(conn, *where)
        return self._run(run_id)

    def lost_grants(self, claimer: str | None) -> list[Run]:
        """Grant the locks that are free while runs wait for them (a replica died between a
        grant and its launch, or a run ended without handing over), each to its first waiting
        run, claimed by `claimer` (or left to its owner); those runs."""
        with self._reading() as conn:
            lines = select(RUNS.c.app, RUNS.c.lock).where(RUNS.c.state == WAITING).group_by(
                RUNS.c.app, RUNS.c.lock).subquery()
            locks = [(app, lock, holder) for app, lock, holder in conn.execute(
                select(lines.c.app, lines.c.lock, LOCKS.c.holder).select_from(
                    lines.outerjoin(LOCKS, (LOCKS.c.app == lines.c.app)
                                    & (LOCKS.c.name == lines.c.lock))))
                     if _holder_is_free(conn, holder)]
        granted: list[str] = []
        for app, lock, _ in locks:  # free when read: checked again with the row locked
            with self._writing() as conn:
                holder = _lock_row(conn, app, lock).holder
                if _holder_is_free(conn, holder):
                    run_id = hand_over(conn, app, lock, claimer)
                    if run_id:
                        granted.append(run_id)
        return [run for run_id in granted if (run := self._run(run_id)) is not None]

    def granted_to(self, owner: str) -> list[Run]:
        """`owner`'s runs that hold their lock but have not started: a process that does not
        launch others' runs handed the lock to them, for their owner to launch."""
        with self._read() as session:
            return list(session.exec(orm_select(Run).join(
                RunLock, (col(RunLock.app) == Run.app) & (col(RunLock.name) == Run.lock)
                & (col(RunLock.holder) == Run.id)).where(
                Run.owner == owner, Run.state == QUEUED)).all())

    def line_place(self, run: Run) -> LinePlace | None:
        """Where a waiting run stands in its lock's line, and who holds the lock."""
        if run.lock is None or run.state != WAITING:
            return None
        with self._read() as session:
            ahead = session.exec(orm_select(func.count()).select_from(Run).where(
                Run.app == run.app, Run.lock == run.lock, Run.state == WAITING,
                col(Run.lock_ticket) < run.lock_ticket)).one()
            lock = session.get(RunLock, (run.app, run.lock))
            holder = session.get(Run, lock.holder) if lock and lock.holder else None
        if holder is not None and holder.run_state.is_final:
            holder = None
        return LinePlace(run.lock, int(ahead) + 1, holder)

    def lock_line(self, app: str, lock: str) -> tuple[Run | None, list[Run]]:
        """A lock's holder (if it holds it still) and its waiting runs, first first."""
        with self._read() as session:
            row = session.get(RunLock, (app, lock))
            holder = session.get(Run, row.holder) if row and row.holder else None
            waiting = list(session.exec(orm_select(Run).where(
                Run.app == app, Run.lock == lock, Run.state == WAITING)
                .order_by(col(Run.lock_ticket), col(Run.id))))
        if holder is not None and holder.run_state.is_final:
            holder = None
        return holder, waiting

"""The store's engine, sessions and migration lock, and what every topic module shares."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import configure_mappers
from sqlalchemy.pool import QueuePool
from sqlmodel import Session

from core.models import (
    Attempt,
    AuditEntry,
    BranchHead,
    Delivery,
    JobState,
    LogChunk,
    Run,
    RunApproval,
    RunEvent,
    RunState,
    SlackWork,
    SubscriberCursor,
)

RUNS: Table = Run.__table__  # type: ignore[attr-defined]
RUN_EVENTS: Table = RunEvent.__table__  # type: ignore[attr-defined]
ATTEMPTS: Table = Attempt.__table__  # type: ignore[attr-defined]
AUDIT_LOG: Table = AuditEntry.__table__  # type: ignore[attr-defined]
JOB_STATE: Table = JobState.__table__  # type: ignore[attr-defined]
CURSORS: Table = SubscriberCursor.__table__  # type: ignore[attr-defined]
SLACK_WORK: Table = SlackWork.__table__  # type: ignore[attr-defined]
DELIVERIES: Table = Delivery.__table__  # type: ignore[attr-defined]
BRANCH_HEADS: Table = BranchHead.__table__  # type: ignore[attr-defined]
LOG_CHUNKS: Table = LogChunk.__table__  # type: ignore[attr-defined]
RUN_APPROVALS: Table = RunApproval.__table__  # type: ignore[attr-defined]

# Rows per statement for lists of keys: SQLite allows 32,766 bound parameters.
CHUNK = 500
LIVE_STATES = (RunState.QUEUED.value, RunState.WAITING.value, RunState.RUNNING.value)
FINAL_STATES = tuple(state.value for state in RunState if state.is_final)
# Finished states counted against `history.failed` (skipped slots have their own bound).
FAILED_STATES = (RunState.FAILED.value, RunState.TIMED_OUT.value, RunState.CANCELLED.value,
                 RunState.DENIED.value, RunState.EXPIRED.value)

# Whether an unhandled request's owner (host:pid:start, or None) has died, given the time the
# oldest of its unhandled requests was received (core/intake.py `abandoned`).
Abandoned = Callable[[str | None, datetime], bool]


def upsert_for(dialect: str) -> Any:
    """INSERT with ON CONFLICT for this dialect (PostgreSQL's or SQLite's)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def chunks(items: list[Any]) -> Iterator[list[Any]]:
    """`items` in slices of CHUNK, for IN lists."""
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


class StoreBase:
    """The engine and the transactions every topic's methods run in."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        # Run objects of new runs are built without a session (model_construct), which needs
        # the models' attribute instrumentation set up.
        configure_mappers()
        self.engine = _make_engine(url, echo=echo)
        self.dialect = self.engine.dialect.name
        # SQLite has one writer at a time: event ids become visible in the order they were
        # handed out. PostgreSQL's sequence hands them out before the commit, so a smaller id
        # can become visible after a larger one (see Scheduler.prune).
        self.event_ids_visible_in_order = self.dialect == "sqlite"
        self._write_engine = self.engine.execution_options(jobbot_write=True)
        self._upsert = upsert_for(self.dialect)

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

    # On SQLite a write transaction starts with BEGIN IMMEDIATE, so two processes queue on
    # busy_timeout instead of failing when a read lock cannot be upgraded. Reads end with
    # COMMIT, not the ROLLBACK of closing: psycopg forgets the statements it has prepared on
    # a connection at each ROLLBACK, and would parse and plan every read anew.

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._write_engine.connect() as conn, conn.begin():
            yield conn

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

    def _take_over(self, table: Table, unhandled: Any, owner: str,
                   abandoned: Abandoned) -> list[Any]:
        """Make the unhandled requests (Slack work, GitHub deliveries) of every abandoned owner
        `owner`'s; the rows taken. Each owner's rows move with one conditional UPDATE: of two
        processes starting at once, the second finds them moved and takes nothing."""
        with self._writing() as conn:
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

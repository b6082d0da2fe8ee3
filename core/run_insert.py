"""The trigger hot path: record a run, its first event and an audit line in few round trips."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, bindparam, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from core.models import AuditEntry, JobState, Run, RunEvent, RunState

RUNS: Table = Run.__table__  # type: ignore[attr-defined]
RUN_EVENTS: Table = RunEvent.__table__  # type: ignore[attr-defined]
AUDIT_LOG: Table = AuditEntry.__table__  # type: ignore[attr-defined]
JOB_STATE: Table = JobState.__table__  # type: ignore[attr-defined]
# SQLite allows 32,766 bound parameters per statement; batches stay well below.
CHUNK = 500
LIVE_STATES = (RunState.QUEUED.value, RunState.RUNNING.value)
ACTIVE_LIMIT = 10


class ActiveRun(NamedTuple):
    """Another queued or running run of the same job, as a trigger's reply mentions it."""

    id: str
    number: int
    state: str
    actor: str


# PostgreSQL: one statement numbers the run, inserts it, its event and the audit line, and
# reads the job's other live runs (from the snapshot before the insert). Each statement is a
# network round trip, so this keeps a trigger close to the cost of a bare INSERT.
_POSTGRES_INSERT = text("""
WITH bumped AS (
    UPDATE job_state SET last_number = last_number + 1
    WHERE app = :app AND job = :job
    RETURNING last_number
), inserted AS (
    INSERT INTO runs (id, app, job, number, state, source, actor, ref, sha, image, overrides,
                      origin, idempotency_key, scheduled_for, rerun_of, executor, owner,
                      created_at, reason, finished_at)
    SELECT :id, :app, :job, bumped.last_number, :state, :source, :actor, :ref, :sha, :image,
           CAST(:overrides AS JSON), CAST(:origin AS JSON), :idempotency_key, :scheduled_for,
           :rerun_of, :executor, :owner, :created_at, :reason, :finished_at
    FROM bumped
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, number
), event AS (
    INSERT INTO run_events (run_id, kind, state, data, created_at)
    SELECT inserted.id, 'created', :state, CAST(:event_data AS JSON), :created_at FROM inserted
), audit AS (
    INSERT INTO audit_log (at, actor, source, action, target, result, detail)
    SELECT :created_at, :a_actor, :a_source, :a_action,
           left(:a_target || '#' || inserted.number || ' (' || inserted.id || ')', 255),
           :a_result, :a_detail
    FROM inserted WHERE :with_audit
)
SELECT inserted.number,
       (SELECT coalesce(json_agg(json_build_array(o.id, o.number, o.state, o.actor)), '[]')
        FROM (SELECT id, number, state, actor FROM runs
              WHERE app = :app AND job = :job AND state IN ('queued', 'running')
              ORDER BY number DESC LIMIT 10) AS o)
FROM inserted
""")


class RunInserter:
    """Inserts new runs for one database dialect; statements are built once and reused."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self._bump = (
            update(JOB_STATE)
            .where(JOB_STATE.c.app == bindparam("b_app"), JOB_STATE.c.job == bindparam("b_job"))
            .values(last_number=JOB_STATE.c.last_number + 1)
            .returning(JOB_STATE.c.last_number)
        )
        self.first_job_state = insert(JOB_STATE).values(
            app=bindparam("app"), job=bindparam("job"), last_number=0, paused=False,
        )
        self._insert_run = (
            sqlite.insert(RUNS).on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(RUNS.c.id)
        )
        self.insert_event = insert(RUN_EVENTS)
        self.insert_audit = insert(AUDIT_LOG)
        self._active = (
            select(RUNS.c.id, RUNS.c.number, RUNS.c.state, RUNS.c.actor)
            .where(RUNS.c.app == bindparam("b_app"), RUNS.c.job == bindparam("b_job"),
                   RUNS.c.id != bindparam("b_id"), RUNS.c.state.in_(LIVE_STATES))
            .order_by(RUNS.c.number.desc())
            .limit(ACTIVE_LIMIT)
        )

    def ensure_job_state(self, conn: Connection, app: str, job: str) -> None:
        """Create the job's counter row if it has none (a job's first run ever)."""
        found = conn.execute(
            select(JOB_STATE.c.last_number).where(JOB_STATE.c.app == app, JOB_STATE.c.job == job)
        ).first()
        if found is None:
            upsert = self._upsert(JOB_STATE).values(app=app, job=job, last_number=0, paused=False)
            conn.execute(upsert.on_conflict_do_nothing())

    def insert(self, conn: Connection, values: dict[str, Any], event_data: dict[str, Any],
               audit: dict[str, Any] | None) -> tuple[int, list[ActiveRun]] | None:
        """Insert the run; its number and the job's other live runs, or None if the key is taken.

        Returns None without a job_state row too: call ensure_job_state and try again.
        """
        if self.dialect == "postgresql":
            return self._insert_postgres(conn, values, event_data, audit)
        number = conn.execute(self._bump, {"b_app": values["app"], "b_job": values["job"]}
                              ).scalar_one_or_none()
        if number is None:
            return None
        values = {**values, "number": number}
        if conn.execute(self._insert_run, values).scalar_one_or_none() is None:
            return None
        conn.execute(self.insert_event, {"run_id": values["id"], "kind": "created",
                                          "state": values["state"], "data": event_data,
                                          "created_at": values["created_at"]})
        if audit:
            conn.execute(self.insert_audit, {
                **audit, "at": values["created_at"],
                "target": f"{audit['target']}#{number} ({values['id']})"[:255]})
        rows = conn.execute(self._active, {"b_app": values["app"], "b_job": values["job"],
                                           "b_id": values["id"]})
        return int(number), [ActiveRun(*row) for row in rows]

    def active(self, conn: Connection, app: str, job: str, run_id: str) -> list[ActiveRun]:
        """Up to ten queued or running runs of the job other than `run_id`, newest first."""
        rows = conn.execute(self._active, {"b_app": app, "b_job": job, "b_id": run_id})
        return [ActiveRun(*row) for row in rows]

    def _insert_postgres(self, conn: Connection, values: dict[str, Any],
                         event_data: dict[str, Any],
                         audit: dict[str, Any] | None) -> tuple[int, list[ActiveRun]] | None:
        params = {
            **{k: values[k] for k in ("id", "app", "job", "state", "source", "actor", "ref",
                                      "sha", "image", "idempotency_key", "scheduled_for",
                                      "rerun_of", "executor", "owner", "created_at", "reason",
                                      "finished_at")},
            "overrides": json.dumps(values["overrides"]), "origin": json.dumps(values["origin"]),
            "event_data": json.dumps(event_data), "with_audit": audit is not None,
            **{f"a_{k}": (audit or {}).get(k) for k in ("actor", "source", "action", "target",
                                                        "result", "detail")},
        }
        row = conn.execute(_POSTGRES_INSERT, params).first()
        if row is None:
            return None
        number, active = row
        return int(number), [ActiveRun(*item) for item in active]

    def _upsert(self, table: Table) -> Any:
        return upsert_for(self.dialect)(table)


def upsert_for(dialect: str) -> Any:
    """INSERT with ON CONFLICT for this dialect (PostgreSQL's or SQLite's)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


# -- cron slots in batches: the scheduler's hot path --------------------------------------

FINAL_STATES = tuple(s.value for s in RunState if s.is_final)
ScheduleRow = tuple[str, str, str, datetime]  # app, job, fingerprint, last slot


class KeyRace(Exception):
    """An idempotency key of the batch was used by another process: nothing was written."""


class SlotBatch:
    """Writes a tick's slots (runs, their `created` events, audit lines) and the schedule
    state in one transaction, with a constant number of statements whatever the batch size.

    Built on the driver's own parameters (no ORM objects, no per-row SQLAlchemy type
    processing): per slot, that processing cost more than SQLite's own work.
    """

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self._counters: set[tuple[str, str]] = set()  # job_state rows known to exist

    def write(self, conn: Connection, rows: Sequence[dict[str, Any]], audit: bool,
              states: Sequence[ScheduleRow], now: datetime) -> list[tuple[str, int]]:
        """Insert `rows` (run column values without number and created_at); returns the
        (id, number) of each, in order. Raises KeyRace if any key was already used."""
        missing = {(r["app"], r["job"]) for r in rows} - self._counters
        if self.dialect == "postgresql":
            # Batches of several schedulers queue here instead of deadlocking on each
            # other's job_state rows and keys; the later one then sees the keys used.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7326002)")
            if missing:
                conn.execute(_PG_COUNTERS, {"apps": [a for a, _ in missing],
                                            "jobs": [j for _, j in missing]})
            numbered = self._write_postgres(conn, rows, audit, states, now)
        else:
            numbered = self._write_sqlite(conn, rows, audit, states, now)
        self._counters.update(missing)
        return numbered

    def _write_postgres(self, conn: Connection, rows: Sequence[dict[str, Any]], audit: bool,
                        states: Sequence[ScheduleRow], now: datetime) -> list[tuple[str, int]]:
        # The batch travels as one JSON text: encoding it is C work (json), where 17 arrays
        # of 10,000 values each cost the driver's per-value adaptation.
        stamps: dict[datetime | None, str | None] = {}
        records = []
        # Per job: how many runs to number, and the schedule to save (either may be absent).
        jobs: dict[tuple[str, str], dict[str, Any]] = {
            (a, j): {"app": a, "job": j, "n": 0, "fingerprint": f, "last_slot": last.isoformat()}
            for a, j, f, last in states}
        for index, r in enumerate(rows):
            at = r["scheduled_for"]
            if at not in stamps:
                stamps[at] = at.isoformat() if at is not None else None
            records.append({**r, "scheduled_for": stamps[at], "ord": index})
            job = jobs.get((r["app"], r["job"]))
            if job is None:
                job = jobs[(r["app"], r["job"])] = {"app": r["app"], "job": r["job"], "n": 0,
                                                    "fingerprint": None, "last_slot": None}
            job["n"] += 1
        params = {
            "rows": json.dumps(records, separators=(",", ":")),
            "jobs": json.dumps(list(jobs.values()), separators=(",", ":")),
            "now": now, "with_audit": audit, "final": list(FINAL_STATES),
        }
        result = conn.execute(_PG_SLOTS, params)
        numbers: dict[str, int] = {run_id: number for run_id, number in result}
        if len(numbers) != len(rows):
            raise KeyRace()
        return [(r["id"], int(numbers[r["id"]])) for r in rows]

    def _write_sqlite(self, conn: Connection, rows: Sequence[dict[str, Any]], audit: bool,
                      states: Sequence[ScheduleRow], now: datetime) -> list[tuple[str, int]]:
        cursor = conn.connection.cursor()  # the transaction's own DBAPI connection
        try:
            stamp = sqlite_timestamp(now)
            encoded = _JsonMemo()
            stamps: dict[datetime | None, str | None] = {}  # a tick's slots share few times

            def timestamp(at: datetime | None) -> str | None:
                found = stamps.get(at)
                if found is None:
                    found = stamps[at] = sqlite_timestamp(at)
                return found

            per_job: dict[tuple[str, str], int] = {}
            for r in rows:
                per_job[(r["app"], r["job"])] = per_job.get((r["app"], r["job"]), 0) + 1
            schedules = {(app, job): (digest, last) for app, job, digest, last in states}
            # Inside BEGIN IMMEDIATE nobody else writes: read the jobs' counters in one query
            # and write the new values in one executemany (a statement per job, from Python,
            # cost more than SQLite's own work for it).
            base = _last_numbers(cursor, list(per_job))
            unnumbered = [key for key in per_job if key not in base]
            if unnumbered:  # a job's first run ever
                cursor.executemany(_SQLITE_COUNTER, unnumbered)
            numbers, numbers_and_schedules = [], []
            for (app, job), count in per_job.items():
                last = base.setdefault((app, job), 0) + count
                # A job's runs are numbered and its last slot moved in the same row.
                schedule = schedules.pop((app, job), None)
                if schedule is None:
                    numbers.append((last, app, job))
                else:
                    numbers_and_schedules.append(
                        (last, schedule[0], timestamp(schedule[1]), app, job))
            cursor.executemany(_SQLITE_NUMBER, numbers)
            cursor.executemany(_SQLITE_NUMBER_AND_SCHEDULE, numbers_and_schedules)
            numbered: list[tuple[str, int]] = []
            values = []
            for r in rows:
                key = (r["app"], r["job"])
                base[key] += 1
                numbered.append((r["id"], base[key]))
                final = r["state"] in FINAL_STATES
                values.append((
                    r["id"], r["app"], r["job"], base[key], r["state"], r["source"], r["actor"],
                    r["ref"], r["sha"], r["image"], encoded(r["overrides"]), encoded(r["origin"]),
                    r["idempotency_key"], timestamp(r["scheduled_for"]), r["rerun_of"],
                    r["executor"], r["owner"], stamp, r["reason"], stamp if final else None))
            cursor.executemany(_SQLITE_RUN, values)
            if cursor.rowcount != len(values):
                raise KeyRace()
            cursor.executemany(_SQLITE_EVENT, [
                (r["id"], r["state"], encoded({"reason": r["reason"]} if r["reason"] else {}),
                 stamp) for r in rows])
            if audit:
                cursor.executemany(_SQLITE_AUDIT, [
                    (stamp, r["actor"], r["source"], "run" if r["state"] == "queued" else "skip",
                     f"{r['app']}/{r['job']}#{number} ({run_id})"[:255],
                     "started" if r["state"] == "queued" else "skipped",
                     r["reason"][:2000] if r["reason"] else None)
                    for r, (run_id, number) in zip(rows, numbered, strict=True)])
            # Due jobs without a run in this batch (their slot moved): the schedule alone. An
            # UPDATE costs less than an upsert (which first tries the INSERT); the upsert
            # writes the rows that were missing.
            if schedules:
                cursor.executemany(_SQLITE_SCHEDULE_UPDATE, [
                    (digest, timestamp(last), app, job)
                    for (app, job), (digest, last) in schedules.items()])
                if cursor.rowcount != len(schedules):
                    cursor.executemany(_SQLITE_SCHEDULE, [
                        (app, job, digest, timestamp(last))
                        for (app, job), (digest, last) in schedules.items()])
            return numbered
        finally:
            cursor.close()


def _last_numbers(cursor: Any, jobs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The last run number of each (app, job) that has a job_state row."""
    by_app: dict[str, list[str]] = {}
    for app, job in jobs:
        by_app.setdefault(app, []).append(job)
    found: dict[tuple[str, str], int] = {}
    for app, names in by_app.items():
        for start in range(0, len(names), CHUNK):
            chunk = names[start:start + CHUNK]
            sql = _SQLITE_LAST_NUMBERS.format(", ".join("?" for _ in chunk))
            for job, number in cursor.execute(sql, (app, *chunk)):
                found[(app, job)] = number
    return found


class _JsonMemo:
    """json.dumps of the same few dicts (a job's origin, `{}`), encoded once per batch."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[Any, str]] = {}

    def __call__(self, value: dict[str, Any]) -> str:
        if not value:
            return "{}"
        found = self._done.get(id(value))
        if found is None:
            # The object is kept with its text so its id cannot be reused within the batch.
            found = self._done[id(value)] = (value, json.dumps(value))
        return found[1]


def sqlite_timestamp(value: datetime | None) -> str | None:
    """A timestamp as SQLAlchemy stores it in SQLite (UTC, naive, microseconds)."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


_SQLITE_LAST_NUMBERS = "SELECT job, last_number FROM job_state WHERE app = ? AND job IN ({})"
_SQLITE_NUMBER = "UPDATE job_state SET last_number = ? WHERE app = ? AND job = ?"
_SQLITE_COUNTER = ("INSERT INTO job_state (app, job, last_number, paused) VALUES (?, ?, 0, 0) "
                   "ON CONFLICT DO NOTHING")
_SQLITE_RUN = (
    "INSERT INTO runs (id, app, job, number, state, source, actor, ref, sha, image, overrides, "
    "origin, idempotency_key, scheduled_for, rerun_of, executor, owner, created_at, reason, "
    "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (idempotency_key) DO NOTHING")
_SQLITE_EVENT = ("INSERT INTO run_events (run_id, kind, state, data, created_at) "
                 "VALUES (?, 'created', ?, ?, ?)")
_SQLITE_AUDIT = ("INSERT INTO audit_log (at, actor, source, action, target, result, detail) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)")
_SQLITE_NUMBER_AND_SCHEDULE = ("UPDATE job_state SET last_number = ?, fingerprint = ?, "
                               "last_slot = ? WHERE app = ? AND job = ?")
_SQLITE_SCHEDULE_UPDATE = ("UPDATE job_state SET fingerprint = ?, last_slot = ? "
                           "WHERE app = ? AND job = ?")
_SQLITE_SCHEDULE = (
    "INSERT INTO job_state (app, job, last_number, paused, fingerprint, last_slot) "
    "VALUES (?, ?, 0, 0, ?, ?) ON CONFLICT (app, job) DO UPDATE SET "
    "fingerprint = excluded.fingerprint, last_slot = excluded.last_slot")

_PG_COUNTERS = text(
    "INSERT INTO job_state (app, job, last_number, paused) "
    "SELECT app, job, 0, false FROM unnest(CAST(:apps AS text[]), CAST(:jobs AS text[])) "
    "AS v(app, job) ON CONFLICT DO NOTHING")
# One statement for the whole tick: number the runs per job, insert them, their events,
# their audit lines and the jobs' schedule state. The rows come as one JSON parameter, not
# VALUES lists: the statement text (and so its plan) is the same for every batch size.
_PG_SLOTS = text("""
WITH v AS (
    SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS v(
        id text, app text, job text, state text, source text, actor text, ref text,
        sha text, image text, overrides json, origin json, idempotency_key text,
        scheduled_for timestamptz, rerun_of text, executor text, owner text, reason text,
        ord int)
), jobs AS (
    -- Per job, computed by the caller: a join of two CTEs here made the planner, with
    -- job_state's statistics, pick a nested loop over them (seconds for 4,000 jobs).
    SELECT * FROM json_to_recordset(CAST(:jobs AS json))
        AS j(app text, job text, n int, fingerprint text, last_slot timestamptz)
), bumped AS (
    -- A job's runs are numbered and its last slot moved in the same row (a statement may
    -- change a row once: the jobs without runs here get their schedule in `rest` below).
    UPDATE job_state SET last_number = job_state.last_number + jobs.n,
        fingerprint = coalesce(jobs.fingerprint, job_state.fingerprint),
        last_slot = coalesce(jobs.last_slot, job_state.last_slot)
    FROM jobs WHERE jobs.n > 0 AND job_state.app = jobs.app AND job_state.job = jobs.job
    RETURNING job_state.app, job_state.job, job_state.last_number - jobs.n AS base
), numbered AS (
    SELECT v.*, bumped.base + row_number() OVER (PARTITION BY v.app, v.job ORDER BY v.ord)
           AS number
    FROM v JOIN bumped ON bumped.app = v.app AND bumped.job = v.job
), inserted AS (
    INSERT INTO runs (id, app, job, number, state, source, actor, ref, sha, image, overrides,
                      origin, idempotency_key, scheduled_for, rerun_of, executor, owner,
                      created_at, reason, finished_at)
    SELECT id, app, job, number, state, source, actor, ref, sha, image,
           coalesce(overrides, CAST('{}' AS json)), coalesce(origin, CAST('{}' AS json)),
           idempotency_key, scheduled_for,
           rerun_of, executor, owner, :now, reason,
           CASE WHEN state = ANY(CAST(:final AS text[])) THEN CAST(:now AS timestamptz) END
    FROM numbered
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, app, job, number, state, source, actor, reason
), events AS (
    INSERT INTO run_events (run_id, kind, state, data, created_at)
    SELECT id, 'created', state,
           CASE WHEN reason IS NULL THEN CAST('{}' AS json)
                ELSE json_build_object('reason', reason) END, :now
    FROM inserted
), audit AS (
    INSERT INTO audit_log (at, actor, source, action, target, result, detail)
    SELECT :now, actor, source, CASE WHEN state = 'queued' THEN 'run' ELSE 'skip' END,
           left(app || '/' || job || '#' || number || ' (' || id || ')', 255),
           CASE WHEN state = 'queued' THEN 'started' ELSE 'skipped' END, left(reason, 2000)
    FROM inserted WHERE :with_audit
), rest AS (
    INSERT INTO job_state (app, job, last_number, paused, fingerprint, last_slot)
    SELECT app, job, 0, false, fingerprint, last_slot FROM jobs WHERE n = 0
    ON CONFLICT (app, job) DO UPDATE SET fingerprint = excluded.fingerprint,
        last_slot = excluded.last_slot
)
SELECT id, number FROM inserted
""")

"""The trigger hot path: record a run, its first event and an audit line in few round trips."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, bindparam, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from core.models import AuditEntry, JobState, Run, RunEvent, RunState

RUNS: Table = Run.__table__  # type: ignore[attr-defined]
RUN_EVENTS: Table = RunEvent.__table__  # type: ignore[attr-defined]
AUDIT_LOG: Table = AuditEntry.__table__  # type: ignore[attr-defined]
JOB_STATE: Table = JobState.__table__  # type: ignore[attr-defined]
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

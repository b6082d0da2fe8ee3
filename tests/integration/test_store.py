"""The run store, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from core.models import RunState
from core.store import AuditRecord, NewRun, Store
from tests.conftest import fresh_database_url


def new(job: str = "hello", **kwargs: object) -> NewRun:
    return NewRun(app="demo", job=job, source="cli", actor="cli:ada", **kwargs)  # type: ignore[arg-type]


def test_migrations_match_the_models(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
    assert store.schema_is_current()


def test_postgresql_reads_keep_the_statements_psycopg_prepared(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """psycopg prepares a statement once a connection has run it five times, and forgets
    them all at a ROLLBACK: reads end with COMMIT, so a statement the scheduler runs every
    round is not parsed and planned anew each time."""
    store = Store(fresh_database_url("postgresql", tmp_path, request))
    store.migrate()
    try:
        for _ in range(20):  # five times or more on each pooled connection
            store.paused_jobs()  # a Core read
            store.schedule_states()  # a Session read
        connections = [store.engine.connect() for _ in range(store.engine.pool.size())]
        prepared = {statement for conn in connections for statement in conn.execute(
            text("SELECT statement FROM pg_prepared_statements")).scalars()}
        for conn in connections:
            conn.close()
        assert any("paused_by" in statement for statement in prepared), prepared
        assert any("fingerprint" in statement for statement in prepared), prepared
    finally:
        store.close()


def test_postgresql_updates_job_state_rows_in_place(tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    """A scheduler round updates every due job's row: with room on its page, each is a
    heap-only update that touches neither of the table's indexes."""
    store = Store(fresh_database_url("postgresql", tmp_path, request))
    store.migrate()
    try:
        with store.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO job_state (app, job, last_number, paused, fingerprint, last_slot) "
                "SELECT 'demo', 'job-' || i, 0, false, md5(i::text), now() "
                "FROM generate_series(1, 2000) AS i"))
        update = text("UPDATE job_state SET last_number = last_number + 1, last_slot = now()")
        pages = text("SELECT job, (ctid::text::point)[0] FROM job_state")
        positions = []
        for _ in range(5):  # a round per transaction, as the scheduler's
            with store.engine.begin() as conn:
                conn.execute(update)
            with store.engine.connect() as conn:
                positions.append(dict(conn.execute(pages).all()))
        moved = [sum(a[job] != b[job] for job in a) for a, b in itertools.pairwise(positions)]
        # Once the first rounds have settled a few rows, nearly every update writes the new
        # row version on the old one's page, and with no indexed column changed it is a
        # heap-only update. With full pages about 1,950 of the 2,000 rows moved every round.
        assert max(moved[1:]) <= 20, moved
    finally:
        store.close()


def test_migrate_twice_is_harmless(store: Store) -> None:
    store.migrate()
    assert store.schema_is_current()


def test_runs_are_numbered_per_job(store: Store) -> None:
    first = store.create_run(new("hello")).run
    second = store.create_run(new("hello")).run
    other = store.create_run(new("report")).run
    assert (first.number, second.number, other.number) == (1, 2, 1)
    assert first.id != second.id
    found = store.run_by_number("demo", "hello", 2)
    assert found is not None
    assert found.id == second.id


def test_a_repeated_idempotency_key_returns_the_first_run(store: Store) -> None:
    first = store.create_run(new(idempotency_key="slack:trigger-1"))
    again = store.create_run(new(idempotency_key="slack:trigger-1"))
    assert first.created
    assert not again.created
    run = first.run
    assert again.run.id == run.id
    assert len(store.list_runs(app="demo", job="hello")) == 1
    assert [e.kind for e in store.events_for(run.id)] == ["created"]


def test_concurrent_triggers_with_one_key_make_one_run(store: Store) -> None:
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def trigger() -> None:
        try:
            outcome = store.create_run(new(idempotency_key="github:delivery-7"))
            results.append((outcome.run.id, outcome.created))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=trigger) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({run_id for run_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_concurrent_triggers_get_distinct_numbers(store: Store) -> None:
    numbers: list[int] = []
    lock = threading.Lock()

    def trigger() -> None:
        for _ in range(5):
            run = store.create_run(new()).run
            with lock:
                numbers.append(run.number)

    threads = [threading.Thread(target=trigger) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(1, 21))


def test_transitions_follow_the_state_machine(store: Store) -> None:
    run = store.create_run(new()).run
    running = store.transition(run.id, RunState.RUNNING)
    assert running is not None
    assert running.started_at is not None
    done = store.transition(run.id, RunState.FAILED, exit_code=3, reason="exit code 3")
    assert done is not None
    assert (done.state, done.exit_code, done.reason) == ("failed", 3, "exit code 3")
    assert done.finished_at is not None
    # A final state is never left, and the losing writer learns it.
    assert store.transition(run.id, RunState.SUCCEEDED) is None
    assert store.transition(run.id, RunState.RUNNING) is None
    assert store.get_run(run.id).state == "failed"  # type: ignore[union-attr]


def test_events_are_an_ordered_outbox(store: Store) -> None:
    run = store.create_run(new()).run
    store.transition(run.id, RunState.RUNNING)
    store.start_attempt(run.id, 1, log_path="/tmp/x", handle="h:1:1")
    store.finish_attempt(run.id, 1, RunState.SUCCEEDED, exit_code=0)
    store.transition(run.id, RunState.SUCCEEDED, exit_code=0)
    events = store.events_after(0)
    assert [(e.kind, e.state) for e in events] == [
        ("created", "queued"), ("state", "running"), ("attempt_started", "running"),
        ("attempt_finished", "running"), ("state", "succeeded"),
    ]
    ids = [e.id for e in events]
    assert ids == sorted(ids)
    assert [e.id for e in store.events_after(ids[2])] == ids[3:]
    assert store.last_event_id() == ids[-1]


def test_subscriber_cursors_persist(store: Store) -> None:
    assert store.cursor("slack") is None
    store.save_cursor("slack", 5)
    store.save_cursor("slack", 9)
    assert store.cursor("slack") == 9


def test_attempts_are_recorded(store: Store) -> None:
    run = store.create_run(new()).run
    store.start_attempt(run.id, 1, log_path="a.log", handle=None)
    store.finish_attempt(run.id, 1, RunState.FAILED, exit_code=1, reason="exit code 1")
    store.start_attempt(run.id, 2, log_path="b.log", handle=None)
    attempts = store.attempts(run.id)
    assert [(a.index, a.state, a.exit_code) for a in attempts] == [
        (1, "failed", 1), (2, "running", None)]


def test_cancel_requests_only_reach_live_runs(store: Store) -> None:
    run = store.create_run(new()).run
    requested = store.request_cancel(run.id, "ada")
    assert requested is not None
    assert requested.cancel_requested_by == "ada"
    store.transition(run.id, RunState.CANCELLED, reason="cancelled by ada")
    assert store.request_cancel(run.id, "bob") is None


def test_pause_and_resume(store: Store) -> None:
    assert store.set_paused("demo", "report", True, "ada")
    assert not store.set_paused("demo", "report", True, "ada")
    state = store.job_state("demo", "report")
    assert state.paused
    assert state.paused_by == "ada"
    assert store.set_paused("demo", "report", False, "ada")
    assert not store.job_state("demo", "report").paused


def test_skipped_slots_are_final_at_once(store: Store) -> None:
    slot = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    run = store.create_run(new("report", state=RunState.SKIPPED, reason="paused",
                               scheduled_for=slot, idempotency_key="cron:demo/report:x")).run
    assert run.state == "skipped"
    assert run.finished_at is not None
    assert store.get_run(run.id).scheduled_for == slot  # type: ignore[union-attr]


def test_timestamps_come_back_in_utc(store: Store) -> None:
    run = store.create_run(new()).run
    loaded = store.get_run(run.id)
    assert loaded is not None
    assert loaded.created_at.tzinfo is not None
    with pytest.raises(Exception, match="naive"):
        store.create_run(new(scheduled_for=datetime(2026, 1, 1)))


def test_audit_log(store: Store) -> None:
    store.audit(AuditRecord(actor="slack:U1", source="slack", action="run",
                            target="demo/hello", result="denied", detail="only <@U2> may"))
    entry = store.audit_log()[0]
    assert (entry.actor, entry.action, entry.result) == ("slack:U1", "run", "denied")


def test_create_run_reports_the_other_active_runs(store: Store) -> None:
    first = store.create_run(new()).run
    second = store.create_run(new())
    assert [r.id for r in second.active] == [first.id]
    store.transition(first.id, RunState.CANCELLED)
    store.transition(second.run.id, RunState.CANCELLED)
    assert store.create_run(new()).active == []


def test_list_runs_pages_by_number(store: Store) -> None:
    for _ in range(5):
        store.create_run(new())
    page = store.list_runs(app="demo", job="hello", limit=2)
    assert [r.number for r in page] == [5, 4]
    assert [r.number for r in store.list_runs(app="demo", job="hello", limit=2,
                                              before_number=4)] == [3, 2]


def test_sqlite_uses_wal(tmp_path: object) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_slack_threads_are_remembered_per_run(store: Store) -> None:
    run = store.create_run(new("hello")).run
    assert store.slack_message(run.id) is None
    store.save_slack_message(run.id, "C1", "1700000001.000100", 0)
    store.save_slack_message(run.id, "C1", "1700000001.000100", 7)
    store.save_slack_message(run.id, "C1", "1700000001.000100", 3)  # never goes back
    saved = store.slack_message(run.id)
    assert saved is not None
    assert (saved.channel, saved.ts, saved.last_event_id) == ("C1", "1700000001.000100", 7)

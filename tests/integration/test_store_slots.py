"""The scheduler's store calls: batched slot runs, schedule state, paused jobs, pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from core.migrations.runner import downgrade, upgrade
from core.models import RunState
from core.scheduler import slot_key
from core.store import NewRun, Store

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def slot(job: str, minute: int, state: RunState = RunState.QUEUED) -> NewRun:
    at = T + timedelta(minutes=minute)
    return NewRun(app="demo", job=job, source="schedule", actor="schedule", state=state,
                  scheduled_for=at, idempotency_key=slot_key("demo", job, at),
                  reason="paused by ada" if state is RunState.SKIPPED else None)


def test_a_batch_numbers_runs_per_job_and_leaves_out_used_keys(store: Store) -> None:
    store.create_run(NewRun(app="demo", job="a", source="cli", actor="cli:ada"))
    first = store.create_runs([slot("a", 1), slot("b", 1), slot("a", 2, RunState.SKIPPED)])
    assert [(c.run.job, c.run.number, c.run.state) for c in first] == [
        ("a", 2, "queued"), ("b", 1, "queued"), ("a", 3, "skipped")]
    again = store.create_runs([slot("a", 1), slot("a", 3), slot("b", 1)])
    assert [(c.run.job, c.run.number) for c in again] == [("a", 4)]
    runs = store.list_runs(app="demo", job="a")
    assert [r.number for r in runs] == [4, 3, 2, 1]  # no gaps
    skipped = store.run_by_key(slot_key("demo", "a", T + timedelta(minutes=2)))
    assert skipped is not None
    assert (skipped.state, skipped.reason) == ("skipped", "paused by ada")
    assert skipped.finished_at is not None
    assert [e.kind for e in store.events_for(skipped.id)] == ["created"]
    assert store.audit_log(limit=10)[0].action == "run"
    assert store.create_runs([]) == []


def test_a_batch_meeting_a_key_used_after_its_check_goes_again_without_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_runs([slot("a", 1)])
    checked: list[list[str]] = []
    check = store._used_keys

    def late_check(conn: sa.Connection, keys: list[str]) -> set[str]:
        # The first check runs before another process's slot a1 commits.
        checked.append(keys)
        return set() if len(checked) == 1 else check(conn, keys)

    monkeypatch.setattr(store, "_used_keys", late_check)
    created = store.create_runs([slot("a", 1), slot("a", 2), slot("b", 1)])
    assert [(c.run.job, c.run.number) for c in created] == [("a", 2), ("b", 1)]
    assert len(checked) == 2
    assert [r.number for r in store.list_runs(app="demo", job="a")] == [2, 1]  # no gap
    assert len(store.list_runs(app="demo", job="b")) == 1


def test_schedule_state_and_paused_jobs(store: Store) -> None:
    store.save_schedule_states([("demo", "a", "f1", T), ("demo", "b", "f2", T)])
    store.save_schedule_states([("demo", "a", "f3", T + timedelta(hours=1))])
    states = store.schedule_states()
    assert (states[("demo", "a")].fingerprint, states[("demo", "a")].last_slot) == (
        "f3", T + timedelta(hours=1))
    assert states[("demo", "b")].fingerprint == "f2"
    assert store.paused_jobs() == {}
    store.set_paused("demo", "a", True, "ada")
    assert store.paused_jobs() == {("demo", "a"): "ada"}


def test_a_batch_saves_the_schedule_of_jobs_with_and_without_runs(store: Store) -> None:
    store.save_schedule_states([("demo", "a", "old", T)])
    later = T + timedelta(minutes=5)
    created = store.create_runs([slot("a", 5), slot("b", 5)], schedule_states=[
        ("demo", "a", "fa", later), ("demo", "b", "fb", later),
        ("demo", "c", "fc", later),  # due, but no slot of it in this batch; no row yet
    ])
    assert [(c.run.job, c.run.number) for c in created] == [("a", 1), ("b", 1)]
    states = store.schedule_states()
    assert {key: (s.fingerprint, s.last_slot) for key, s in states.items()} == {
        ("demo", job): (f"f{job}", later) for job in "abc"}
    assert store.job_state("demo", "c").last_number == 0
    store.forget_schedule_states([("demo", "a")])
    assert set(store.schedule_states()) == {("demo", "b"), ("demo", "c")}
    assert store.job_state("demo", "a").last_number == 1  # its runs keep their numbers


def test_the_schedule_state_table_moves_into_job_state(db_url: str) -> None:
    store = Store(db_url)
    try:
        upgrade(store.engine, "0007_scheduler_indexes")
        old = sa.table("schedule_state", sa.column("app"), sa.column("job"),
                       sa.column("fingerprint"), sa.column("last_slot", sa.DateTime(True)),
                       sa.column("updated_at", sa.DateTime(True)))
        with store.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO job_state (app, job, last_number, paused) "
                                 "VALUES ('demo', 'a', 7, false)"))
            conn.execute(sa.insert(old), [
                {"app": "demo", "job": job, "fingerprint": f"f{job}", "last_slot": T,
                 "updated_at": T} for job in "ab"])
        store.migrate()
        assert {key: (s.fingerprint, s.last_slot) for key, s
                in store.schedule_states().items()} == {("demo", "a"): ("fa", T),
                                                        ("demo", "b"): ("fb", T)}
        assert store.job_state("demo", "a").last_number == 7
        assert "schedule_state" not in sa.inspect(store.engine).get_table_names()
        # And back: the schedules return to their own table.
        downgrade(store.engine, "0007_scheduler_indexes")
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(old.c.app, old.c.job, old.c.fingerprint,
                                          old.c.last_slot).order_by(old.c.job)).all()
        assert [(app, job, f, last.replace(tzinfo=UTC) if last.tzinfo is None else last)
                for app, job, f, last in rows] == [("demo", "a", "fa", T), ("demo", "b", "fb", T)]
        assert "fingerprint" not in {c["name"] for c in sa.inspect(store.engine).get_columns(
            "job_state")}
    finally:
        store.close()


def test_slot_keys_put_the_time_first_and_back(db_url: str) -> None:
    store = Store(db_url)
    try:
        upgrade(store.engine, "0008_schedule_in_job_state")
        old = {job: f"cron:demo/{job}:{T.isoformat()}" for job in "ab"}
        made = {key: store.create_run(NewRun(app="demo", job=job, source="schedule",
                                             actor="schedule", scheduled_for=T,
                                             idempotency_key=key)).run.id
                for job, key in [*old.items(), ("c", "slack:T1:C1:42")]}
        store.migrate()
        # A scheduler of this version meets the slots recorded before it.
        for job in "ab":
            found = store.run_by_key(slot_key("demo", job, T))
            assert found is not None and found.id == made[old[job]]
        assert store.run_by_key("slack:T1:C1:42") is not None
        downgrade(store.engine, "0008_schedule_in_job_state")
        # Read as rows: the Run model has columns that later migrations add.
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT idempotency_key, id FROM runs"))
            assert {key: run_id for key, run_id in rows if key in made} == made
    finally:
        store.close()


def test_prune_keeps_the_newest_of_each_kind(store: Store) -> None:
    made = store.create_runs([slot("a", m) for m in range(6)]
                             + [slot("a", m, RunState.SKIPPED) for m in range(6, 9)])
    for created, state in zip(made[:6], ["succeeded"] * 3 + ["failed"] * 3, strict=True):
        store.transition(created.run.id, RunState(state))
    deleted = store.prune_history({("demo", "a"): (2, 1, 1), ("demo", "other"): (0, 0, 0)})
    assert len(deleted) == 1 + 2 + 2
    kept = sorted((r.number, r.state) for r in store.list_runs(app="demo", job="a"))
    assert kept == [(2, "succeeded"), (3, "succeeded"), (6, "failed"), (9, "skipped")]
    assert all(store.get_run(run_id) is None for run_id in deleted)


def test_prune_keeps_runs_whose_events_a_subscriber_has_not_delivered(store: Store) -> None:
    made = [c.run for c in store.create_runs([slot("a", m) for m in range(4)])]
    for run in made:
        store.transition(run.id, RunState.SUCCEEDED)
    last_of = {run.id: store.events_for(run.id)[-1].id or 0 for run in made}
    # The Slack notifier is up to date; GitHub check runs lag: they have delivered the
    # events of runs #1 and #2 but not the last event of #3.
    store.save_cursor("slack", store.last_event_id())
    store.save_cursor("github-checks", last_of[made[1].id])
    limits = {("demo", "a"): (1, 1, 1)}
    assert sorted(store.prune_history(limits)) == sorted(r.id for r in made[:2])
    assert store.get_run(made[2].id) is not None
    assert [e.kind for e in store.events_for(made[2].id)] == ["created", "state"]
    # Nothing new until the lagging subscriber moves on; then #3 goes (#4 is kept anyway).
    assert store.prune_history(limits) == []
    store.save_cursor("github-checks", last_of[made[2].id])
    assert store.prune_history(limits) == [made[2].id]
    assert [r.number for r in store.list_runs(app="demo", job="a")] == [4]


def test_prune_after_a_mark_looks_only_at_jobs_with_runs_finished_since(store: Store) -> None:
    made = {job: [c.run for c in store.create_runs([slot(job, m) for m in range(3)])]
            for job in ("a", "b", "c")}
    for job in ("a", "b"):
        for run in made[job][:2]:
            store.transition(run.id, RunState.SUCCEEDED)
    mark = store.history_mark()
    store.transition(made["a"][2].id, RunState.FAILED)  # after the mark: "a" is looked at
    store.transition(made["c"][2].id, RunState.RUNNING)  # not final: "c" is not
    limits = {("demo", job): (1, 1, 1) for job in "abc"}
    assert store.prune_history(limits, touched_after=mark) == [made["a"][0].id]
    assert store.prune_history(limits, touched_after=store.history_mark()) == []
    # "b" had a run too many before the mark: only a prune of every job finds it.
    assert store.prune_history(limits) == [made["b"][0].id]
    assert [r.state for r in store.list_runs(app="demo", job="c")] == ["running", "queued",
                                                                       "queued"]


def test_the_history_mark_waits_for_the_slowest_subscriber(store: Store) -> None:
    made = [c.run for c in store.create_runs([slot("a", m) for m in range(3)])]
    store.save_cursor("slack", store.last_event_id())
    for run in made:
        store.transition(run.id, RunState.SUCCEEDED)
    limits = {("demo", "a"): (1, 1, 1)}
    # Slack has not delivered the runs' last events: they stay, and the mark stays before
    # them, so a prune from it looks at job "a" again once Slack has caught up.
    mark = store.history_mark()
    assert mark == store.cursor("slack") < store.last_event_id()
    assert store.prune_history(limits) == []
    store.save_cursor("slack", store.last_event_id())
    assert sorted(store.prune_history(limits, touched_after=mark)) == sorted(
        r.id for r in made[:2])
    assert store.history_mark() == store.last_event_id()


def test_prune_deletes_only_finished_runs(store: Store) -> None:
    made = [c.run for c in store.create_runs([slot("a", m) for m in range(3)])]
    store.transition(made[0].id, RunState.RUNNING)
    store.transition(made[2].id, RunState.FAILED)
    assert store.prune_history({("demo", "a"): (0, 0, 0)}) == [made[2].id]
    assert sorted(r.state for r in store.list_runs(app="demo", job="a")) == ["queued", "running"]


def test_new_runs_are_returned_as_they_are_stored(store: Store) -> None:
    made = [c.run for c in store.create_runs([slot("a", 1), slot("a", 2, RunState.SKIPPED)])]
    made.append(store.create_run(NewRun(app="demo", job="a", source="cli", actor="cli:ada",
                                        overrides={"X": "1"}, origin={"channel": "C1"})).run)
    for run in made:
        stored = store.get_run(run.id)
        assert stored is not None
        assert run.model_dump() == stored.model_dump()
    assert [(r.label, r.run_state) for r in made] == [
        ("a #1", RunState.QUEUED), ("a #2", RunState.SKIPPED), ("a #3", RunState.QUEUED)]

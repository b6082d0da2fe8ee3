"""The scheduler on virtual time, against the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

from core.cron import Schedule
from core.metrics import REGISTRY
from core.models import Run, RunState
from core.policy import Actor
from core.scheduler import Scheduler, slot_key
from core.service import JobService
from core.spec import load_app
from core.store import Store
from tests.conftest import fresh_database_url
from tests.support.apps import make_service, python_job, write_app
from tests.support.clock import VirtualClock

QUICK = "pass"
SLOW = "import time; time.sleep(60)"
T0 = datetime(2026, 11, 20, 10, 0, 30, tzinfo=UTC)
OPERATOR = Actor.cli("ops")


class World:
    """A service, a virtual clock and a scheduler over one app.yaml in a temporary directory."""

    def __init__(self, tmp_path: Path, store: Store, jobs: list[dict[str, Any]],
                 start: datetime = T0) -> None:
        self.tmp_path = tmp_path
        self.store = store
        self.clock = VirtualClock(start)
        self.service = self._service(jobs)
        self.scheduler = Scheduler(self.service, self.clock)

    def _service(self, jobs: list[dict[str, Any]]) -> JobService:
        app = load_app(write_app(self.tmp_path / "app", jobs))
        return make_service(app, self.store, self.tmp_path / "data")

    def edit(self, jobs: list[dict[str, Any]]) -> None:
        """Change app.yaml as a reload does: the catalog gets the new definitions."""
        self.service.catalog.replace(load_app(write_app(self.tmp_path / "app", jobs)))

    def restart(self) -> None:
        """A new scheduler process: nothing kept in memory."""
        self.scheduler = Scheduler(self.service, self.clock)

    async def at(self, when: datetime) -> int:
        self.clock.set(when)
        return await self.scheduler.tick()

    async def every(self, step: timedelta, until: datetime) -> None:
        while self.clock.now() + step <= until:
            await self.at(self.clock.now() + step)

    def runs(self, job: str) -> list[Run]:
        return list(reversed(self.store.list_runs(app="demo", job=job, limit=10_000)))

    async def settle(self) -> None:
        await self.service.shutdown("test over")


@pytest.fixture
async def worlds() -> AsyncIterator[list[World]]:
    made: list[World] = []
    yield made
    for world in made:
        await world.settle()


def world(worlds: list[World], tmp_path: Path, store: Store, jobs: list[dict[str, Any]],
          start: datetime = T0) -> World:
    made = World(tmp_path, store, jobs, start)
    worlds.append(made)
    return made


def at(hour: int, minute: int = 0, day: int = 20) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


async def test_each_slot_becomes_one_scheduled_run(tmp_path: Path, store: Store,
                                                   worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [python_job("hourly", QUICK, schedule="0 * * * *")])
    await w.every(timedelta(minutes=10), at(13, 5))
    runs = w.runs("hourly")
    assert [r.scheduled_for for r in runs] == [at(11), at(12), at(13)]
    assert {r.source for r in runs} == {"schedule"}
    assert runs[0].idempotency_key == slot_key("demo", "hourly", at(11))
    assert all(r.state != RunState.SKIPPED.value for r in runs)


async def test_a_new_schedule_never_fires_at_once(tmp_path: Path, store: Store,
                                                  worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [python_job("often", QUICK, schedule="* * * * *")])
    assert await w.at(T0) == 0
    assert w.runs("often") == []
    assert await w.at(at(10, 1) + timedelta(seconds=20)) == 1
    # The slot of 10:01:00 was fired at 10:01:20 on the virtual clock.
    assert REGISTRY.get_sample_value("jobbot_scheduler_lag_seconds") == 20.0


async def test_an_edit_computes_the_next_slot_from_now(tmp_path: Path, store: Store,
                                                       worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [python_job("job", QUICK, schedule="0 * * * *")])
    await w.every(timedelta(minutes=15), at(11, 45))
    assert [r.scheduled_for for r in w.runs("job")] == [at(11)]
    # At 11:45 the schedule becomes :30 past; 11:30 is behind us and must not fire.
    w.edit([python_job("job", QUICK, schedule="30 * * * *")])
    assert await w.at(at(11, 46)) == 0
    await w.every(timedelta(minutes=1), at(12, 31))
    assert [r.scheduled_for for r in w.runs("job")] == [at(11), at(12, 30)]
    # A restart with the same (edited) schedule keeps its place: no missed slots invented.
    w.restart()
    assert await w.at(at(12, 40)) == 0
    # An edit that keeps the same next slot fires it once.
    w.edit([python_job("job", QUICK, schedule="30 */1 * * *")])
    assert await w.at(at(12, 50)) == 0
    assert await w.at(at(13, 30)) == 1
    assert await w.at(at(13, 31)) == 0


async def test_a_removed_job_that_comes_back_starts_from_now(
        tmp_path: Path, store: Store, worlds: list[World]) -> None:
    other = python_job("other", QUICK, schedule="0 0 1 1 *")
    job = python_job("job", QUICK, schedule="0 * * * *", starting_deadline="3h")
    w = world(worlds, tmp_path, store, [job, other])
    await w.every(timedelta(minutes=20), at(11, 5))
    assert [r.scheduled_for for r in w.runs("job")] == [at(11)]
    w.edit([other])  # removed at 11:05 ...
    await w.every(timedelta(minutes=20), at(13, 25))
    assert ("demo", "job") not in store.schedule_states()
    w.edit([job, other])  # ... and back at 13:25, with the same schedule
    assert await w.at(at(13, 26)) == 0  # no catch-up for 12:00 or 13:00, nothing skipped
    await w.every(timedelta(minutes=10), at(14, 6))
    runs = w.runs("job")
    assert [r.scheduled_for for r in runs] == [at(11), at(14)]
    assert "skipped" not in {r.state for r in runs}


async def test_a_job_removed_while_jobbot_restarts_does_not_catch_up(
        tmp_path: Path, store: Store, worlds: list[World]) -> None:
    other = python_job("other", QUICK, schedule="0 0 1 1 *")
    job = python_job("job", QUICK, schedule="*/10 * * * *")
    w = world(worlds, tmp_path, store, [job, other])
    await w.every(timedelta(minutes=5), at(10, 25))
    assert len(w.runs("job")) == 2  # 10:10 and 10:20
    # Restarted at 11:00 with the job gone from app.yaml; it comes back at 14:33.
    w.edit([other])
    w.restart()
    await w.every(timedelta(minutes=30), at(14, 30))
    w.edit([job, other])
    assert await w.at(at(14, 33)) == 0
    assert await w.at(at(14, 40)) == 1
    assert [r.scheduled_for for r in w.runs("job")] == [at(10, 10), at(10, 20), at(14, 40)]
    # The other way round: a schedule edit (fingerprint change) while a restart also starts
    # from now, and so does going back to the first schedule later.
    w.edit([{**job, "schedule": "5 * * * *"}, other])
    w.restart()
    assert await w.at(at(15, 1)) == 0
    assert await w.at(at(15, 5)) == 1
    w.edit([job, other])
    assert await w.at(at(15, 55)) == 0
    assert await w.at(at(16, 0)) == 1


async def test_after_an_outage_missed_slots_are_recorded_and_one_catches_up(
        tmp_path: Path, store: Store, worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [
        python_job("hourly", QUICK, schedule="0 * * * *", starting_deadline="20m"),
        python_job("strict", QUICK, schedule="0 * * * *", starting_deadline="5m"),
        python_job("lenient", QUICK, schedule="0 * * * *"),
    ])
    await w.at(T0)
    w.restart()  # down from 10:00:30 until 15:10
    await w.at(at(15, 10))
    for name in ("hourly", "strict", "lenient"):
        runs = w.runs(name)
        assert [r.scheduled_for for r in runs] == [at(h) for h in (11, 12, 13, 14, 15)]
        assert all(r.state == RunState.SKIPPED.value for r in runs[:4])
        assert all("missed: no jobbot scheduler was running" in (r.reason or "")
                   for r in runs[:4])
    # One catch-up run for the most recent slot, if within starting_deadline (none: always).
    assert w.runs("hourly")[-1].state != RunState.SKIPPED.value
    assert w.runs("lenient")[-1].state != RunState.SKIPPED.value
    strict = w.runs("strict")[-1]
    assert strict.state == RunState.SKIPPED.value
    assert strict.reason == "missed: 600s late, beyond starting_deadline 300s"


async def test_a_long_outage_records_a_bounded_number_of_slots(tmp_path: Path, store: Store,
                                                               worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [python_job("minutely", QUICK, schedule="* * * * *")])
    await w.at(T0)
    w.restart()
    await w.at(T0 + timedelta(days=3))
    runs = w.runs("minutely")
    skipped = [r for r in runs if r.state == RunState.SKIPPED.value]
    assert len(skipped) == 100
    assert len(runs) == 101
    missed = 3 * 24 * 60 - 101  # slots 10:01 .. 10:00 three days later, minus those recorded
    assert f"({missed} earlier missed slots since 2026-11-20T10:01:00+00:00" in (
        skipped[0].reason or "")
    assert runs[-1].scheduled_for == T0 + timedelta(days=3) - timedelta(seconds=30)


async def test_paused_slots_are_skipped_and_resume_fires_nothing_old(
        tmp_path: Path, store: Store, worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [python_job("job", QUICK, schedule="0 * * * *")])
    await w.at(T0)
    await w.service.pause("job", OPERATOR)
    await w.every(timedelta(minutes=10), at(12, 40))
    await w.service.resume("job", OPERATOR)
    assert await w.at(at(12, 41)) == 0
    await w.every(timedelta(minutes=10), at(13, 1))
    runs = w.runs("job")
    assert [(r.scheduled_for, r.state, r.reason) for r in runs[:2]] == [
        (at(11), "skipped", "paused by ops"), (at(12), "skipped", "paused by ops")]
    assert runs[2].scheduled_for == at(13)
    assert runs[2].state != "skipped"


async def test_suspend_in_app_yaml_skips_slots(tmp_path: Path, store: Store,
                                               worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store,
              [python_job("job", QUICK, schedule="0 * * * *", suspend=True)])
    await w.every(timedelta(minutes=30), at(12, 1))
    assert [(r.state, r.reason) for r in w.runs("job")] == [
        ("skipped", "suspended: app.yaml sets suspend: true")] * 2


async def wait_state(service: JobService, run_id: str, states: set[str]) -> Run:
    for _ in range(400):
        run = await service.get_run(run_id)
        if run.state in states:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {states}")


async def test_forbid_skips_a_slot_while_a_run_is_active(tmp_path: Path, store: Store,
                                                         worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [python_job(
        "job", SLOW, schedule="* * * * *", concurrency_policy="Forbid", stop_grace_period=1)])
    await w.at(T0)
    await w.at(at(10, 1))
    first = w.runs("job")[0]
    await wait_state(w.service, first.id, {"running"})
    await w.at(at(10, 2))
    second = w.runs("job")[1]
    assert second.state == "skipped"
    assert second.reason == f"Forbid: another run is still active: #{first.number} (running)"
    # The policy is not applied to manual runs; the reply names the active run instead.
    manual = await w.service.trigger("job", OPERATOR)
    assert manual.created
    assert [a.id for a in manual.active] == [first.id]


async def test_replace_cancels_the_running_one_and_starts_the_new_one(
        tmp_path: Path, store: Store, worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [python_job(
        "job", SLOW, schedule="* * * * *", concurrency_policy="Replace", stop_grace_period=1)])
    await w.at(T0)
    await w.at(at(10, 1))
    first = w.runs("job")[0]
    await wait_state(w.service, first.id, {"running"})
    await w.at(at(10, 2))
    replaced = await wait_state(w.service, first.id, {"cancelled"})
    assert replaced.cancel_requested_by == "schedule"
    second = w.runs("job")[1]
    assert second.scheduled_for == at(10, 2)
    assert second.state in ("queued", "running")


async def test_a_manual_run_leaves_the_schedule_alone(tmp_path: Path, store: Store,
                                                      worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [python_job("job", QUICK, schedule="0 * * * *")])
    await w.at(T0)
    before = store.schedule_states()[("demo", "job")]
    manual = await w.service.trigger("job", OPERATOR)
    await w.service.wait(manual.run.id)
    assert store.schedule_states()[("demo", "job")].last_slot == before.last_slot
    await w.every(timedelta(minutes=20), at(11, 1))
    assert [(r.source, r.scheduled_for) for r in w.runs("job")] == [
        ("cli", None), ("schedule", at(11))]


async def test_history_keeps_the_newest_runs_and_deletes_older_logs(
        tmp_path: Path, store: Store, worlds: list[World]) -> None:
    history = {"succeeded": 2, "failed": 1}
    w = world(worlds, tmp_path, store, [
        python_job("good", "print('ok')", schedule="* * * * *", history=history),
        python_job("bad", "import sys; print('no'); sys.exit(1)", schedule="* * * * *",
                   history=history),
    ])
    await w.at(T0)
    for minute in range(1, 6):
        await w.at(at(10, minute))
    for name in ("good", "bad"):
        for run in w.runs(name):
            await w.service.wait(run.id)
    logs = w.service.log_store
    before = w.runs("good") + w.runs("bad")
    assert all(logs.attempts(r.id) == [1] for r in before)
    assert await w.scheduler.prune() == 3 + 4
    assert [(r.number, r.state) for r in w.runs("good")] == [(4, "succeeded"), (5, "succeeded")]
    assert [(r.number, r.state) for r in w.runs("bad")] == [(5, "failed")]
    kept = {r.id for r in w.runs("good") + w.runs("bad")}
    gone = [r for r in before if r.id not in kept]
    assert len(gone) == 7
    assert all(logs.attempts(r.id) == [] for r in gone)
    assert all(store.events_for(r.id) == [] for r in gone)
    assert all(store.attempts(r.id) == [] for r in gone)
    assert all(logs.attempts(r) == [1] for r in kept)
    # Later prunes look only at the jobs with runs finished since: both, here.
    for minute in range(6, 9):
        await w.at(at(10, minute))
    for name in ("good", "bad"):
        for run in w.runs(name):
            await w.service.wait(run.id)
    assert await w.scheduler.prune() == 3 + 3
    assert [(r.number, r.state) for r in w.runs("good")] == [(7, "succeeded"), (8, "succeeded")]
    assert [(r.number, r.state) for r in w.runs("bad")] == [(8, "failed")]


async def test_daylight_saving_days_on_the_scheduler(tmp_path: Path, store: Store,
                                                     worlds: list[World]) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 10, 24, 12, 0, tzinfo=berlin).astimezone(UTC)
    w = world(worlds, tmp_path, store, [
        python_job("nightly", QUICK, schedule="30 2 * * *", timezone="Europe/Berlin"),
        # History kept long enough to count a whole day of runs.
        python_job("hourly", QUICK, schedule="@hourly", timezone="Europe/Berlin",
                   history={"succeeded": 100, "failed": 100}),
        python_job("ny", QUICK, schedule="30 1 * * *", timezone="America/New_York"),
    ], start=start)
    end = datetime(2026, 10, 26, 0, 0, tzinfo=berlin).astimezone(UTC)
    await w.every(timedelta(minutes=15), end)
    nightly = [r.scheduled_for.astimezone(berlin).isoformat() for r in w.runs("nightly")
               if r.scheduled_for]
    assert nightly == ["2026-10-25T02:30:00+02:00"]
    day = datetime(2026, 10, 25, tzinfo=berlin).astimezone(UTC)
    hourly = [r for r in w.runs("hourly") if r.scheduled_for and day <= r.scheduled_for < end]
    assert len(hourly) == 25
    assert all(r.state != "skipped" for r in w.runs("hourly"))
    new_york = ZoneInfo("America/New_York")
    assert [r.scheduled_for.astimezone(new_york).isoformat() for r in w.runs("ny")
            if r.scheduled_for] == ["2026-10-25T01:30:00-04:00"]


async def test_leap_day_job_on_the_scheduler(tmp_path: Path, store: Store,
                                             worlds: list[World]) -> None:
    start = datetime(2028, 2, 28, 23, 0, tzinfo=UTC)
    w = world(worlds, tmp_path, store, [python_job("leap", QUICK, schedule="0 12 29 2 *")],
              start=start)
    await w.every(timedelta(hours=6), datetime(2028, 3, 2, tzinfo=UTC))
    assert [r.scheduled_for for r in w.runs("leap")] == [datetime(2028, 2, 29, 12, tzinfo=UTC)]


async def test_the_loop_sleeps_on_the_clock_and_stops_when_cancelled(
        tmp_path: Path, store: Store, worlds: list[World]) -> None:
    w = world(worlds, tmp_path, store, [python_job("job", QUICK, schedule="0 * * * *")])
    loop = asyncio.create_task(w.scheduler.run())
    for _ in range(100):
        if store.schedule_states():
            break
        await asyncio.sleep(0.02)
    w.clock.set(at(11, 0))
    for _ in range(200):
        if w.runs("job"):
            break
        await asyncio.sleep(0.02)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    assert [r.scheduled_for for r in w.runs("job")] == [at(11)]


async def test_three_schedulers_on_one_postgresql_fire_every_slot_exactly_once(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = fresh_database_url("postgresql", tmp_path, request)
    jobs = [
        python_job("five", QUICK, schedule="*/5 * * * *"),
        python_job("hourly", QUICK, schedule=["0 * * * *", "30 2 * * *"],
                   timezone="Europe/Berlin"),
        python_job("hashed", QUICK, schedule="H/10 * * * *"),
        python_job("guarded", QUICK, schedule="*/15 * * * *", concurrency_policy="Forbid"),
        python_job("paused", QUICK, schedule="*/5 * * * *"),
    ]
    history = {"succeeded": 1000, "failed": 1000}
    jobs = [{**job, "history": history} for job in jobs]
    start = datetime(2026, 10, 24, 22, 0, 10, tzinfo=UTC)  # across Berlin's autumn change
    end = start + timedelta(hours=4)
    stores = [Store(url) for _ in range(3)]
    for store in stores:
        store.migrate()  # three processes starting at once
    services = [make_service(load_app(write_app(tmp_path / "app", jobs)), store,
                             tmp_path / f"data{i}") for i, store in enumerate(stores)]
    await services[0].pause("paused", OPERATOR)
    rng = random.Random(7)

    async def drive(index: int) -> None:
        clock = VirtualClock(start)
        scheduler = Scheduler(services[index], clock)
        while clock.now() < end:
            clock.set(min(end, clock.now() + timedelta(seconds=rng.randint(5, 150))))
            await scheduler.tick()
            if index == 2 and rng.random() < 0.05:
                scheduler = Scheduler(services[index], clock)  # a restart
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(drive(i) for i in range(3)))
        for job in jobs:
            name = str(job["name"])
            runs = stores[0].list_runs(app="demo", job=name, limit=10_000)
            expected = list(Schedule(cast(list[str], job["schedule"]) if isinstance(
                job["schedule"], list) else [str(job["schedule"])],
                str(job.get("timezone", "UTC")), name).times(start, end))
            slots = sorted(r.scheduled_for for r in runs if r.scheduled_for)
            assert slots == expected, name  # every slot, each exactly once
            if name == "paused":
                assert {r.state for r in runs} == {"skipped"}
            elif name != "guarded":
                assert "skipped" not in {r.state for r in runs}
        # The repeated Berlin hour: `0 * * * *` follows real time, `30 2` fires once.
        berlin = [r.scheduled_for.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M%z")
                  for r in stores[0].list_runs(app="demo", job="hourly", limit=100)
                  if r.scheduled_for]
        assert berlin.count("02:00+0100") == berlin.count("02:00+0200") == 1
        assert (berlin.count("02:30+0200"), berlin.count("02:30+0100")) == (1, 0)
    finally:
        for service in services:
            await service.shutdown("test over")
        for store in stores:
            store.close()

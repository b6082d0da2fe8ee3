"""Locks (app.yaml `lock:`) through JobService and the local executor, on SQLite and
PostgreSQL: one holder at a time, first-come order, release however a run ends, cancelling a
waiting run, joining a like request, and the hand-over after a replica's death."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.catalog import Catalog
from core.events import Changes
from core.executors.local import LocalExecutor
from core.links import Links
from core.logs import logs_for
from core.models import Run, RunState
from core.policy import Actor
from core.procs import ProcessId
from core.secrets import LocalSecrets
from core.service import JobService, Slot
from core.spec import load_app
from core.store import Store
from tests.conftest import fresh_database_url
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSender
from tests.integration.test_cli import spawn
from tests.support.apps import dead_process, python_job, service_for, write_app
from tests.support.pages import KEY, make_app
from tests.support.server import ServeProcess, wait_until

ADA = Actor.cli("ada")
BOB = Actor.cli("bob")
# Each run waits for its gate file to appear, then exits with the code the file holds.
GATED = """
    import os, pathlib, sys, time
    gate = pathlib.Path(os.environ["GATE"])
    print("started", flush=True)
    while not gate.exists():
        time.sleep(0.02)
    sys.exit(int(gate.read_text() or 0))
"""


def gated_jobs(**extra: Any) -> list[dict[str, object]]:
    return [
        python_job("migrate", GATED, env={"GATE": ""}, lock="db-prod", **extra),
        python_job("seed", GATED, env={"GATE": ""}, lock="db-prod"),
        python_job("other", GATED, env={"GATE": ""}, lock="cache"),
        python_job("unlocked", GATED, env={"GATE": ""}),
    ]


class Gates:
    """Gate files: `open(name, code)` lets the run given that gate end with `code`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def open(self, name: str, code: int = 0) -> None:
        (self.directory / name).write_text(str(code))


async def until(service: JobService, run_id: str, *states: RunState) -> Run:
    """The run once it is in one of `states` (seen through the store)."""
    wanted = {s.value for s in states}

    async def check() -> Run:
        while True:
            changed = service.changes.snapshot()
            run = await service.get_run(run_id)
            if run.state in wanted:
                return run
            await service.changes.wait(0.05, since=changed)

    return await asyncio.wait_for(check(), 30)


async def trigger(service: JobService, job: str, gate: str, actor: Actor = ADA,
                  **kwargs: Any) -> Run:
    return (await service.trigger(job, actor, overrides={"GATE": gate}, **kwargs)).run


def assert_one_at_a_time(runs: list[Run]) -> None:
    started = sorted((r for r in runs if r.started_at), key=lambda r: r.started_at or 0)
    for before, after in itertools.pairwise(started):
        assert before.finished_at is not None and after.started_at is not None
        assert before.finished_at <= after.started_at, (before.label, after.label)


async def test_one_run_holds_the_lock_and_the_others_wait_in_order(
        store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, gated_jobs())
    gates = Gates(tmp_path / "gates")
    first = await trigger(service, "migrate", gates.path("a"))
    await until(service, first.id, RunState.RUNNING)
    second = await trigger(service, "seed", gates.path("b"), BOB)
    third = await trigger(service, "migrate", gates.path("c"))
    # Another lock and no lock at all are not held up.
    other = await trigger(service, "other", gates.path("o"))
    free = await trigger(service, "unlocked", gates.path("u"))
    assert second.state == third.state == RunState.WAITING.value
    await until(service, other.id, RunState.RUNNING)
    await until(service, free.id, RunState.RUNNING)
    places = [await service.line_place(await service.get_run(r.id)) for r in (second, third)]
    assert [(p.lock, p.position, p.holder.id if p.holder else None) for p in places if p] == [
        ("db-prod", 1, first.id), ("db-prod", 2, first.id)]
    assert (await service.get_run(second.id)).started_at is None  # waiting: not launched

    gates.open("a", 0)  # success hands over to the next in line
    await until(service, second.id, RunState.RUNNING)
    assert (await service.get_run(third.id)).state == RunState.WAITING.value
    place = await service.line_place(await service.get_run(third.id))
    assert place is not None and (place.position, place.holder and place.holder.id) == (
        1, second.id)
    gates.open("b", 1)  # so does a failure
    await until(service, third.id, RunState.RUNNING)
    gates.open("c", 0)
    for name in ("o", "u"):
        gates.open(name, 0)
    runs = [await until(service, r.id, RunState.SUCCEEDED, RunState.FAILED)
            for r in (first, second, third)]
    assert [r.state for r in runs] == ["succeeded", "failed", "succeeded"]
    assert_one_at_a_time(runs)
    assert [r.id for r in sorted(runs, key=lambda r: r.started_at or 0)] == [
        first.id, second.id, third.id]


async def test_a_cancelled_holder_hands_over_and_a_cancelled_waiter_leaves_the_line(
        store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, gated_jobs(stop_grace_period=1))
    gates = Gates(tmp_path / "gates")
    holder = await trigger(service, "migrate", gates.path("a"))
    await until(service, holder.id, RunState.RUNNING)
    leaving = await trigger(service, "seed", gates.path("b"))
    staying = await trigger(service, "seed", gates.path("c"))
    assert (await service.line_place(staying)).position == 2  # type: ignore[union-attr]

    cancelled = await service.cancel(leaving.id, BOB)
    assert (cancelled.state, cancelled.reason) == ("cancelled", "cancelled by bob")
    assert cancelled.started_at is None and cancelled.finished_at is not None
    staying = await service.get_run(staying.id)
    assert (await service.line_place(staying)).position == 1  # type: ignore[union-attr]
    assert [e.kind for e in await asyncio.to_thread(store.events_for, staying.id)][-1] == "line"

    await service.cancel(holder.id, BOB)  # a cancelled holder releases the lock too
    assert (await until(service, holder.id, RunState.CANCELLED)).reason == "cancelled by bob"
    await until(service, staying.id, RunState.RUNNING)
    assert (await service.get_run(leaving.id)).started_at is None  # never ran
    gates.open("c")
    await until(service, staying.id, RunState.SUCCEEDED)


async def test_a_run_that_cannot_start_or_times_out_releases_the_lock(
        store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [
        python_job("broken", "print('never')", lock="db-prod", secrets=["missing-secret"]),
        python_job("slow", "import time; time.sleep(60)", lock="db-prod", time_limit=1,
                   stop_grace_period=1),
        python_job("migrate", GATED, env={"GATE": ""}, lock="db-prod"),
    ])
    gates = Gates(tmp_path / "gates")
    holder = await trigger(service, "migrate", gates.path("a"))
    await until(service, holder.id, RunState.RUNNING)
    broken = (await service.trigger("broken", ADA)).run
    slow = (await service.trigger("slow", ADA)).run
    last = await trigger(service, "migrate", gates.path("b"))
    assert {broken.state, slow.state, last.state} == {RunState.WAITING.value}
    gates.open("a")
    # Its launch fails (the secret is missing): the lock goes on to the next.
    failed = await until(service, broken.id, RunState.FAILED)
    assert "missing-secret" in (failed.reason or "")
    await until(service, slow.id, RunState.TIMED_OUT)
    await until(service, last.id, RunState.RUNNING)
    gates.open("b")
    await until(service, last.id, RunState.SUCCEEDED)


async def test_a_like_request_joins_the_waiting_run(store: Store, tmp_path: Path) -> None:
    jobs = [python_job("migrate", GATED, lock="db-prod", parameters=[
        {"name": "GATE", "type": "string", "required": True},
        {"name": "TOKEN", "type": "string", "secret": True},
    ])]
    service = service_for(tmp_path, store, jobs)
    gates = Gates(tmp_path / "gates")
    holder = (await service.trigger("migrate", ADA, overrides={"GATE": gates.path("a")})).run
    await until(service, holder.id, RunState.RUNNING)
    asked = {"GATE": gates.path("b")}
    waiting = await service.trigger("migrate", ADA, overrides=asked, sha="a" * 40, ref="main")
    assert waiting.created and waiting.run.state == RunState.WAITING.value
    again = await service.trigger("migrate", BOB, overrides=dict(asked), sha="a" * 40,
                                  ref="main")
    assert (again.created, again.joined, again.run.id) == (False, True, waiting.run.id)
    # Any difference (the sha, the ref) is another request; a request with a secret value
    # never joins (joining would tell whether a guess of another run's secret was right).
    secret = {**asked, "TOKEN": "s3cret-token-value"}
    with_secret = [await service.trigger("migrate", actor, overrides=dict(secret),
                                         sha="a" * 40, ref="main") for actor in (ADA, BOB)]
    other_sha = await service.trigger("migrate", BOB, overrides=dict(asked), sha="b" * 40,
                                      ref="main")
    other_ref = await service.trigger("migrate", BOB, overrides=dict(asked), sha="a" * 40,
                                      ref="dev")
    assert all(r.created and not r.joined for r in (*with_secret, other_sha, other_ref))
    for result in with_secret:
        stored = await service.get_run(result.run.id)
        assert "s3cret-token-value" not in repr(stored.model_dump())  # sealed only
    # A rerun of the waiting run asks for the same: it joins it.
    rerun = await service.rerun(waiting.run.id, BOB)
    assert (rerun.joined, rerun.run.id) == (True, waiting.run.id)
    audit = await asyncio.to_thread(store.audit_log)
    assert any(a.result == "joined" and a.actor == BOB.id for a in audit)
    # Once it runs, a like request is a new run again.
    gates.open("a")
    await until(service, waiting.run.id, RunState.RUNNING)
    later = await service.trigger("migrate", ADA, overrides=dict(asked), sha="a" * 40,
                                  ref="main")
    assert later.created and later.run.id != waiting.run.id
    for run in (waiting.run, *(r.run for r in with_secret), other_sha.run, other_ref.run,
                later.run):
        await service.cancel(run.id, ADA)
        await until(service, run.id, RunState.CANCELLED)


async def test_three_services_on_separate_engines_keep_one_holder_and_the_order(
        db_url: str, tmp_path: Path) -> None:
    """Three replicas (own Store, engine and executor each) request runs at once."""
    config = write_app(tmp_path / "app", [python_job("step", "print('step')", lock="db-prod",
                                                     env={"N": ""})])
    stores = [Store(db_url) for _ in range(3)]
    stores[0].migrate()
    services = []
    for index, replica_store in enumerate(stores):
        data = tmp_path / f"data{index}"
        logs = logs_for(replica_store, data / "logs")
        owner = ProcessId(f"replica-{index}", 1000 + index, 1)
        executor = LocalExecutor(logs, LocalSecrets(data / "secrets"), owner=owner,
                                 retry_delay=0.01, cancel_poll=0.1)
        services.append(JobService(Catalog([load_app(config)]), replica_store, executor, logs,
                                   owner=owner, changes=Changes()))
    try:
        for service in services:
            await service.replica.register()
        requested = await asyncio.gather(*(
            services[i % 3].trigger("step", ADA, overrides={"N": str(i)}) for i in range(18)))
        assert all(r.created for r in requested)
        runs = [await until(services[0], r.run.id, RunState.SUCCEEDED) for r in requested]
        assert_one_at_a_time(runs)
        by_ticket = sorted(runs, key=lambda r: r.lock_ticket or 0)
        by_start = sorted(runs, key=lambda r: r.started_at or 0)
        assert [r.id for r in by_start] == [r.id for r in by_ticket]
    finally:
        for service in services:
            await service.shutdown()
        for replica_store in stores:
            replica_store.close()


async def test_the_lock_passes_on_when_the_replica_following_its_holder_dies(
        store: Store, tmp_path: Path) -> None:
    jobs = gated_jobs()
    config = load_app(write_app(tmp_path / "app", jobs))
    gone = dead_process()
    logs = logs_for(store, tmp_path / "dead" / "logs")
    dying_executor = LocalExecutor(logs, LocalSecrets(tmp_path / "dead" / "secrets"),
                                   owner=gone, retry_delay=0.01, cancel_poll=0.1)
    dying = JobService(Catalog([config]), store, dying_executor, logs, owner=gone,
                       changes=Changes())
    gates = Gates(tmp_path / "gates")
    holder = await trigger(dying, "migrate", gates.path("a"))
    await until(dying, holder.id, RunState.RUNNING)
    first = await trigger(dying, "seed", gates.path("b"))
    second = await trigger(dying, "seed", gates.path("c"))
    # The replica dies: its processes stop and it reports nothing more.
    await dying_executor.release(holder.id)

    survivor = service_for(tmp_path / "live", store, jobs)
    await survivor.reconcile()
    ended = await until(survivor, holder.id, RunState.FAILED)
    assert "stopped while the run was running" in (ended.reason or "")
    granted = await until(survivor, first.id, RunState.RUNNING)
    assert granted.owner == str(survivor.owner)
    waiting = await survivor.get_run(second.id)
    # A waiting run of the dead replica stays in line, followed by the survivor now.
    assert (waiting.state, waiting.owner) == (RunState.WAITING.value, str(survivor.owner))
    gates.open("b")
    await until(survivor, second.id, RunState.RUNNING)
    gates.open("c")
    await until(survivor, second.id, RunState.SUCCEEDED)
    assert_one_at_a_time([await survivor.get_run(r.id) for r in (holder, first, second)])


async def test_a_free_lock_with_waiting_runs_is_granted_at_a_heartbeat(
        store: Store, tmp_path: Path) -> None:
    """A replica died between a grant and the launch: a live one grants and launches."""
    jobs = gated_jobs()
    service = service_for(tmp_path, store, jobs)
    gates = Gates(tmp_path / "gates")
    holder = await trigger(service, "migrate", gates.path("a"))
    await until(service, holder.id, RunState.RUNNING)
    waiting = await trigger(service, "seed", gates.path("b"))
    # The holder ends through a path that hands nothing over (as if its replica had died
    # right after its final transition).
    await service.executor.release(holder.id)
    assert await asyncio.to_thread(store.transition, holder.id, RunState.FAILED,
                                   reason="lost") is not None
    assert (await service.get_run(waiting.id)).state == RunState.WAITING.value
    await service.replica.beat()
    await until(service, waiting.id, RunState.RUNNING)
    gates.open("b")
    await until(service, waiting.id, RunState.SUCCEEDED)


async def test_the_cli_says_it_waits_or_joined_and_ends_with_the_run(
        store: Store, tmp_path: Path) -> None:
    jobs = gated_jobs()
    service = service_for(tmp_path, store, jobs)
    config = tmp_path / "app" / "app.yaml"
    gates = Gates(tmp_path / "gates")
    holder = await trigger(service, "migrate", gates.path("a"))
    await until(service, holder.id, RunState.RUNNING)
    env = {"JOBBOT_DATABASE_URL": store.url}
    args = ("--config", str(config), "run", "seed", f"GATE={gates.path('b')}")
    waiting = spawn(tmp_path, *args, env=env)
    [seed] = await _runs_of(service, "seed", 1)
    joining = spawn(tmp_path, *args, env=env)
    await asyncio.wait_for(_audited(store, "joined"), 30)
    gates.open("a")
    gates.open("b")
    _, err = await asyncio.to_thread(waiting.communicate, timeout=60)
    assert waiting.returncode == 0, err
    assert f"started seed #1 (id {seed.id})" in err
    assert "waiting for db-prod: 1st in line, behind migrate #1, started by cli:ada" in err
    _, err = await asyncio.to_thread(joining.communicate, timeout=60)
    assert joining.returncode == 0, err
    assert f"joined seed #1 (id {seed.id}), waiting for db-prod" in err
    assert len(await service.runs("seed")) == 1
    assert (await until(service, seed.id, RunState.SUCCEEDED)).owner == str(service.owner)


async def _runs_of(service: JobService, job: str, count: int) -> list[Run]:
    async def check() -> list[Run]:
        while len(runs := await service.runs(job)) < count:
            await asyncio.sleep(0.05)
        return runs

    return await asyncio.wait_for(check(), 30)


async def _audited(store: Store, result: str) -> None:
    while not any(a.result == result for a in await asyncio.to_thread(store.audit_log)):
        await asyncio.sleep(0.05)


async def test_the_run_page_shows_the_line(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, gated_jobs())
    gates = Gates(tmp_path / "gates")
    links = Links("http://jobbot.test", KEY)
    holder = await trigger(service, "migrate", gates.path("a"))
    await until(service, holder.id, RunState.RUNNING)
    first = await trigger(service, "seed", gates.path("b"), BOB)
    second = await trigger(service, "seed", gates.path("c"))
    async with TestClient(TestServer(make_app(service, links))) as client:
        response = await client.get(f"/runs/{second.id}?t={links.token(second.id)}")
        body = await response.text()
        assert response.status == 200
        assert "Waiting for db-prod: 2nd in line, behind migrate #1, started by cli:ada" in body
        assert body.index("migrate #1") < body.index("seed #1") < body.index(
            '<li class="this-run">seed #2')
        gates.open("a")
        await until(service, first.id, RunState.RUNNING)
        body = await (await client.get(f"/runs/{second.id}?t={links.token(second.id)}")).text()
        assert "1st in line, behind seed #1, started by cli:bob" in body
        for run in (first, second):
            await service.cancel(run.id, ADA)
            await until(service, run.id, RunState.CANCELLED)
    await service.shutdown()


async def test_scheduled_slots_of_locked_jobs_take_their_turn(store: Store, tmp_path: Path) -> None:
    """Cron slots recorded in one batch (beside a job without a lock) line up in order."""
    gate = str(tmp_path / "gates" / "cron")
    jobs = [python_job(name, GATED, env={"GATE": gate}, schedule="0 3 * * *", **extra)
            for name, extra in (("nightly", {"lock": "db-prod"}), ("report", {"lock": "db-prod"}),
                                ("free", {}))]
    service = service_for(tmp_path, store, jobs)
    at = datetime(2026, 12, 7, 3, tzinfo=UTC)
    slots = [Slot(service.catalog.resolve(name), at, f"{name}@{at.isoformat()}")
             for name in ("nightly", "report", "free")]
    nightly, report, free = await service.record_slots(slots)
    assert (await until(service, nightly.id, RunState.RUNNING)).lock_ticket == 1
    await until(service, free.id, RunState.RUNNING)
    waiting = await service.get_run(report.id)
    assert (waiting.state, waiting.lock_ticket) == (RunState.WAITING.value, 2)
    Gates(tmp_path / "gates").open("cron")
    for run in (nightly, report, free):
        await until(service, run.id, RunState.SUCCEEDED)
    assert_one_at_a_time([await service.get_run(r.id) for r in (nightly, report)])


async def test_with_serve_processes_the_lock_passes_on_after_kill_9(
        tmp_path: Path, request: pytest.FixtureRequest, slack: FakeSlack) -> None:
    """Two `jobbot serve` replicas on PostgreSQL: the one following the holder (and the
    waiting run it recorded) is killed; the other ends the holder, and runs the next."""
    url = fresh_database_url("postgresql", tmp_path, request)
    gates = Gates(tmp_path / "gates")
    write_app(tmp_path, gated_jobs(), app="shop")
    env = {"JOBBOT_DATABASE_URL": url, "JOBBOT_SECRET_KEY": "k" * 32,
           "JOBBOT_LEASE_EXPIRY": "2", "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url}
    a, b = (ServeProcess(tmp_path, env, log=tmp_path / f"replica-{i}.log", ready_within=120)
            for i in range(2))
    store = Store(url)
    await a.start()
    await b.start()
    sender = SlackSender(slack, f"{a.url}/slack/events")
    try:
        await sender.command(f"run migrate GATE={gates.path('a')}")
        holder = await wait_until(lambda: next(iter(store.list_runs(job="migrate")), None))
        await wait_until(lambda: store.attempts(holder.id))
        await sender.command(f"run seed GATE={gates.path('b')}")
        waiting = await wait_until(lambda: next(
            (r for r in store.list_runs(job="seed") if r.state == "waiting"), None))
        assert f":{a.pid}:" in (waiting.owner or "")

        a.kill()
        ended = await wait_until(lambda: (r := store.get_run(holder.id)) and
                                 r.run_state.is_final and r, timeout=30)
        assert ended.state == "failed"
        assert f"jobbot process {a.pid} stopped while the run was running" in (ended.reason or "")
        granted = await wait_until(lambda: (r := store.get_run(waiting.id)) and
                                   r.state == "running" and r, timeout=30)
        assert f":{b.pid}:" in (granted.owner or "")
        gates.open("b")
        done = await wait_until(lambda: (r := store.get_run(waiting.id)) and
                                r.run_state.is_final and r, timeout=30)
        assert done.state == "succeeded"
        assert ended.finished_at is not None and done.started_at is not None
        assert ended.finished_at <= done.started_at
    finally:
        await sender.close()
        a.stop()
        b.stop()
        store.close()


async def test_a_job_with_approval_and_a_lock_is_approved_first_then_waits_its_turn(
        store: Store, tmp_path: Path) -> None:
    """Approval comes before the line: a run waiting for approval blocks nobody, and once
    approved it waits behind the holder, ahead of runs requested after it."""
    approval = {"required": 1, "self": False}
    service = service_for(tmp_path, store, gated_jobs(approval=approval))
    gates = Gates(tmp_path / "gates")
    holder = await trigger(service, "seed", gates.path("holder"))
    await until(service, holder.id, RunState.RUNNING)
    asked = await trigger(service, "migrate", gates.path("asked"))
    assert asked.state == RunState.NEEDS_APPROVAL.value
    # Waiting for approval holds no place that blocks the line: a later seed waits behind
    # the holder only.
    later = await trigger(service, "seed", gates.path("later"), BOB)
    assert later.state == RunState.WAITING.value
    approved = await service.approve(asked.id, BOB)
    assert approved.outcome == "released"
    assert approved.run.state == RunState.WAITING.value  # approved, then in line
    gates.open("holder")
    await until(service, holder.id, RunState.SUCCEEDED)
    # First come, first served by request: migrate was asked for before the later seed.
    await until(service, asked.id, RunState.RUNNING)
    assert (await service.get_run(later.id)).state == RunState.WAITING.value
    gates.open("asked")
    await until(service, asked.id, RunState.SUCCEEDED)
    gates.open("later")
    await until(service, later.id, RunState.SUCCEEDED)
    runs = [await service.get_run(r.id) for r in (holder, asked, later)]
    assert_one_at_a_time(runs)
    await service.shutdown()


async def test_a_cli_that_hands_its_lock_on_leaves_the_next_run_to_its_own_process(
        store: Store, tmp_path: Path) -> None:
    """Two `jobbot run` processes and no server: the first, ending its run, hands the lock
    to the second's run but does not launch it (it would stop it when it exits); the second
    process launches its own run at its heartbeat, and both exit 0."""
    service = service_for(tmp_path, store, gated_jobs())
    config = tmp_path / "app" / "app.yaml"
    gates = Gates(tmp_path / "gates")
    env = {"JOBBOT_DATABASE_URL": store.url, "JOBBOT_LEASE_EXPIRY": "2"}
    first = spawn(tmp_path, "--config", str(config), "run", "migrate",
                  f"GATE={gates.path('a')}", env=env)
    [holder] = await _runs_of(service, "migrate", 1)
    await until(service, holder.id, RunState.RUNNING)
    second = spawn(tmp_path, "--config", str(config), "run", "seed",
                   f"GATE={gates.path('b')}", env=env)
    [seed] = await _runs_of(service, "seed", 1)
    await until(service, seed.id, RunState.WAITING)
    gates.open("a")
    _, err = await asyncio.to_thread(first.communicate, timeout=60)
    assert first.returncode == 0, err
    started = await until(service, seed.id, RunState.RUNNING)
    assert started.owner != holder.owner  # launched by its own process, not the first
    gates.open("b")
    _, err = await asyncio.to_thread(second.communicate, timeout=60)
    assert second.returncode == 0, err
    done = await service.get_run(seed.id)
    assert done.state == RunState.SUCCEEDED.value and done.owner == started.owner

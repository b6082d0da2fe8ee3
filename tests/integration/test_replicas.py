"""Several replicas on one database: leases, exactly-once take-over, and runs followed on
after a replica dies (real `jobbot serve` processes, kill -9, the fake Kubernetes API)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.listeners import command_key
from core.leases import Lease
from core.models import Run, RunState, utcnow
from core.policy import Actor
from core.replicas import Liveness
from core.spec import parse_app
from core.store import NewDelivery, NewRun, Store
from tests.conftest import fresh_database_url
from tests.fakes import github_payloads as p
from tests.fakes.github import FakeGitHub
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSender
from tests.support.apps import python_job, write_app
from tests.support.kube import api_for, kube_service
from tests.support.server import ServeProcess, wait_until

# A replica of another host: only its lease can say whether it lives.
ELSEWHERE = "elsewhere-host:4242:1"
ME = "this-replica-host:1:1"
NS = "jobs"
# Replicas of these tests renew every half second and are taken over two seconds after.
EXPIRY = 2.0
REPO = "acme/shop"
PR = 7
HEAD = "1" * 40
WEBHOOK_SECRET = "webhook-secret-for-replica-tests"


# -- leases in the store (SQLite and PostgreSQL) ------------------------------------------


def test_a_lease_lives_while_it_is_renewed_and_is_gone_once_expired(store: Store) -> None:
    store.register_replica(ELSEWHERE, timedelta(seconds=0.6))
    live = Liveness.read(store, ME)
    assert not live.gone(ELSEWHERE)
    assert live.expired() == []
    time.sleep(0.4)
    assert store.renew_replica(ELSEWHERE, timedelta(seconds=0.6))
    time.sleep(0.4)
    assert not Liveness.read(store, ME).gone(ELSEWHERE)  # renewed: alive past the first term
    time.sleep(0.4)
    live = Liveness.read(store, ME)
    assert live.gone(ELSEWHERE)
    assert live.expired() == [ELSEWHERE]
    # Another host without any lease is gone; one with a live lease is not.
    assert live.gone("never-leased-host:1:1")
    store.register_replica("other-host:2:2", timedelta(seconds=30))
    assert not Liveness.read(store, ME).gone("other-host:2:2")


def test_two_replicas_take_over_an_expired_lease_exactly_once(store: Store) -> None:
    for round_ in range(5):
        dead = f"dead-host-{round_}:10:10"
        store.register_replica(dead, timedelta(seconds=-1))  # already expired
        runs = [store.create_run(NewRun(app="shop", job="hello", source="cli", actor="cli:a",
                                        executor="kubernetes", owner=dead)).run
                for _ in range(3)]
        barrier = threading.Barrier(2)

        def take(taker: str, dead: str = dead,
                 barrier: threading.Barrier = barrier) -> list[Run] | None:
            barrier.wait()
            return store.take_over_replica(dead, taker, "kubernetes")

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(take, ["taker-a:1:1", "taker-b:2:2"]))
        won = [(taker, taken) for taker, taken in zip(["taker-a:1:1", "taker-b:2:2"], results,
                                                      strict=True) if taken is not None]
        assert len(won) == 1, results
        winner, taken = won[0]
        assert sorted(r.id for r in taken) == sorted(r.id for r in runs)
        assert {r.owner for r in taken} == {dead}  # as they were: the adoption names the dead
        assert {store.get_run(r.id).owner for r in runs} == {winner}  # type: ignore[union-attr]
        assert dead not in store.replica_expiries()
        assert not store.renew_replica(dead, timedelta(seconds=5))  # it was taken over


def test_a_lease_that_lives_is_not_taken_and_a_claimed_run_moves_once(store: Store) -> None:
    store.register_replica(ELSEWHERE, timedelta(seconds=30))
    run = store.create_run(NewRun(app="shop", job="hello", source="cli", actor="cli:a",
                                  executor="kubernetes", owner=ELSEWHERE)).run
    assert store.take_over_replica(ELSEWHERE, ME, "kubernetes") is None
    assert store.get_run(run.id).owner == ELSEWHERE  # type: ignore[union-attr]
    assert store.claim_run(run.id, ELSEWHERE, ME)
    assert not store.claim_run(run.id, ELSEWHERE, "late-host:3:3")
    assert store.get_run(run.id).owner == ME  # type: ignore[union-attr]


def test_a_role_passes_on_only_once_its_holders_lease_expired(store: Store) -> None:
    store.register_replica(ELSEWHERE, timedelta(seconds=0.8))
    assert store.claim_role("outbox-slack", None, f"{ELSEWHERE}#0001")
    assert not store.claim_role("outbox-slack", None, f"{ME}#0002")  # one holder at a time
    lease = Lease(store, "outbox-slack")
    assert not lease.try_acquire()
    time.sleep(1.0)
    assert lease.try_acquire()
    assert lease.check()
    other = Lease(store, "outbox-slack")
    assert not other.try_acquire()  # the holder is this live process
    lease.release()
    assert other.try_acquire()
    other.release()


# -- real `jobbot serve` processes on PostgreSQL ------------------------------------------


@pytest.fixture
def pg_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return fresh_database_url("postgresql", tmp_path, request)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url)
    store.migrate()
    yield store
    store.close()


def _env(pg_url: str, slack: FakeSlack, **extra: str) -> dict[str, str]:
    return {"JOBBOT_DATABASE_URL": pg_url, "JOBBOT_SECRET_KEY": "k" * 32,
            "JOBBOT_LEASE_EXPIRY": str(EXPIRY), "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url, **extra}


def _kube_env(tmp_path: Path, kube: FakeKubernetes) -> dict[str, str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}]}))
    write_app(tmp_path, [{"name": "hello", "image": "busybox:1.37", "command": ["echo", "hi"]}],
              app="shop", kubernetes={"namespace": NS})
    return {"JOBBOT_EXECUTOR": "kubernetes", "JOBBOT_KUBECONFIG": str(kubeconfig)}


def _replicas(tmp_path: Path, env: dict[str, str], count: int = 2) -> list[ServeProcess]:
    # A loaded machine (CI) may take long to import and start jobbot.
    return [ServeProcess(tmp_path, env, log=tmp_path / f"replica-{i}.log", ready_within=120)
            for i in range(count)]


def _only_run(store: Store) -> Run | None:
    runs = store.list_runs(limit=5)
    assert len(runs) <= 1, runs
    return runs[0] if runs else None


def _final(store: Store, run_id: str) -> Run | None:
    run = store.get_run(run_id)
    return run if run is not None and run.run_state.is_final else None


def _owned_by(store: Store, run_id: str, replica: ServeProcess) -> bool:
    run = store.get_run(run_id)
    return run is not None and f":{replica.pid}:" in (run.owner or "")


def _cli_logs(tmp_path: Path, env: dict[str, str], run_id: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "jobbot", "logs", run_id], cwd=tmp_path,
                            env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


async def test_a_starting_replica_leaves_a_live_ones_job_and_one_follows_it_once_it_dies(
        tmp_path: Path, pg_url: str, pg_store: Store, slack: FakeSlack,
        kube: FakeKubernetes) -> None:
    env = _env(pg_url, slack, **_kube_env(tmp_path, kube))
    a, b, c = _replicas(tmp_path, env, count=3)
    await a.start()
    sender = SlackSender(slack, f"{a.url}/slack/events")
    try:
        status, _, _ = await sender.command("run hello")
        assert status == 200
        run = await wait_until(lambda: _only_run(pg_store))
        [(_, name)] = await wait_until(lambda: list(kube.jobs))
        pod = await kube.add_pod(NS, name, log=["first line", "second line"])
        await wait_until(lambda: pg_store.attempts(run.id))
        assert _owned_by(pg_store, run.id, a)

        # B and C start while A lives: they leave A's run alone (they never read its Job).
        seen = len(kube.requests)
        await b.start()
        await c.start()
        await asyncio.sleep(2 * EXPIRY)
        job_path = f"/apis/batch/v1/namespaces/{NS}/jobs/{name}"
        assert [r for r in kube.requests[seen:] if r[1] == job_path] == []
        assert _owned_by(pg_store, run.id, a)

        a.kill()
        killed = time.monotonic()
        seen = len(kube.requests)
        await kube.append_log(NS, pod, "written while no replica followed")
        # Once A's lease expires, one of B and C takes the run over and follows the Job.
        await wait_until(lambda: _owned_by(pg_store, run.id, b) or _owned_by(pg_store, run.id, c),
                         timeout=30)
        assert time.monotonic() - killed < EXPIRY + 5
        await asyncio.sleep(2 * EXPIRY)  # (time for a second taker, were there one)
        assert len([r for r in kube.requests[seen:] if r[1] == job_path]) == 1  # one adopter
        await kube.append_log(NS, pod, "last line")
        await kube.set_pod(NS, pod, "Succeeded")
        await kube.finish_job(NS, name, "Complete")
        final = await wait_until(lambda: _final(pg_store, run.id), timeout=30)
        assert (final.state, final.exit_code) == ("succeeded", 0)
        attempts = pg_store.attempts(run.id)
        assert [(x.index, x.state, x.exit_code) for x in attempts] == [(1, "succeeded", 0)]
        assert _cli_logs(tmp_path, env, run.id) == [
            "first line", "second line", "written while no replica followed", "last line"]
        finished = [e for e in pg_store.events_for(run.id) if e.kind == "state"
                    and e.state == RunState.SUCCEEDED.value]
        assert len(finished) == 1
    finally:
        await sender.close()
        for replica in (a, b, c):
            replica.stop()


async def test_a_cancel_answered_by_one_replica_stops_the_job_another_follows(
        tmp_path: Path, pg_url: str, pg_store: Store, slack: FakeSlack,
        kube: FakeKubernetes) -> None:
    env = _env(pg_url, slack, **_kube_env(tmp_path, kube))
    a, b = _replicas(tmp_path, env)
    await a.start()
    await b.start()
    to_a = SlackSender(slack, f"{a.url}/slack/events")
    to_b = SlackSender(slack, f"{b.url}/slack/events")
    try:
        await to_a.command("run hello")
        run = await wait_until(lambda: _only_run(pg_store))
        [(_, name)] = await wait_until(lambda: list(kube.jobs))
        await kube.add_pod(NS, name, log=["working"])
        await wait_until(lambda: pg_store.attempts(run.id))
        assert _owned_by(pg_store, run.id, a)

        status, _, trigger = await to_b.command(f"cancel hello#{run.number}")
        assert status == 200
        assert "cancel requested" in (await to_b.answer(trigger))["text"]
        # A reads the request at its next heartbeat, deletes the Job and ends the run.
        final = await wait_until(lambda: _final(pg_store, run.id), timeout=EXPIRY + 5)
        assert final.state == "cancelled"
        assert final.reason is not None and final.reason.startswith("cancelled by ")
        assert kube.jobs == {}
        assert _owned_by(pg_store, run.id, a)
        attempts = pg_store.attempts(run.id)
        assert [x.state for x in attempts] == ["cancelled"]
    finally:
        await to_a.close()
        await to_b.close()
        a.stop()
        b.stop()


async def test_local_runs_of_a_dead_replica_end_failed_saying_why(
        tmp_path: Path, pg_url: str, pg_store: Store, slack: FakeSlack) -> None:
    write_app(tmp_path, [python_job("slow", "import time\nprint('started', flush=True)\n"
                                            "time.sleep(120)")], app="shop")
    env = _env(pg_url, slack)
    a, b = _replicas(tmp_path, env)
    # A replica of another host that died with a run: only its lease expiring tells.
    pg_store.register_replica(ELSEWHERE, timedelta(seconds=10))
    expires = pg_store.replica_expiries()[ELSEWHERE]
    theirs = pg_store.create_run(NewRun(app="shop", job="slow", source="cli", actor="cli:bob",
                                        executor="local", owner=ELSEWHERE)).run
    pg_store.transition(theirs.id, RunState.RUNNING, external_id=ELSEWHERE)
    await a.start()
    await b.start()
    sender = SlackSender(slack, f"{a.url}/slack/events")
    try:
        await sender.command("run slow")
        mine = await wait_until(lambda: next((r for r in pg_store.list_runs(limit=5)
                                              if r.source == "slack"), None))
        [attempt] = await wait_until(lambda: pg_store.attempts(mine.id))
        assert attempt.handle is not None
        child = int(attempt.handle.split(":")[1])
        if utcnow() < expires - timedelta(seconds=1):  # (a slow start may take longer)
            assert pg_store.get_run(theirs.id).state == "running"  # type: ignore[union-attr]

        a.kill()
        final = await wait_until(lambda: _final(pg_store, mine.id), timeout=EXPIRY + 10)
        assert final.state == "failed"
        assert final.reason is not None
        assert final.reason.startswith(f"jobbot process {a.pid} stopped while the run was "
                                       "running; marked failed by jobbot process")
        assert _owned_by(pg_store, mine.id, b)
        assert _gone(child)  # what was left of it was killed by B

        other = await wait_until(lambda: _final(pg_store, theirs.id), timeout=30)
        assert other.finished_at is not None and other.finished_at >= expires
        assert other.state == "failed"
        assert other.reason is not None
        assert other.reason.startswith(f"jobbot replica {ELSEWHERE} stopped while the run was "
                                       "running (its lease expired)")
    finally:
        await sender.close()
        a.stop()
        b.stop()


async def test_requests_of_a_dead_replica_of_another_host_are_done_once_its_lease_expires(
        tmp_path: Path, pg_url: str, pg_store: Store, slack: FakeSlack,
        github: tuple[FakeGitHub, str]) -> None:
    fake_github, private_key = github
    write_app(tmp_path, [python_job("hello", "print('hello')", pull_requests=True)],
              app="shop")
    env = _env(pg_url, slack, GITHUB_APP_ID=str(p.APP_ID), GITHUB_PRIVATE_KEY=private_key,
               GITHUB_WEBHOOK_SECRET=WEBHOOK_SECRET, GITHUB_API_URL=fake_github.url)
    [b] = _replicas(tmp_path, env, count=1)
    # What a replica of another host acknowledged (Slack) and answered (GitHub) before it
    # died: its lease still runs for a few seconds.
    pg_store.register_replica(ELSEWHERE, timedelta(seconds=15))
    expires = pg_store.replica_expiries()[ELSEWHERE]
    sender = SlackSender(slack, f"{b.url}/slack/events")
    form, trigger = sender.command_body("run hello")
    body: dict[str, Any] = dict(urllib.parse.parse_qsl(form))
    assert pg_store.record_slack_work(command_key(body), "command", body, ELSEWHERE)
    delivery = str(uuid.uuid4())
    assert pg_store.record_delivery(NewDelivery(
        delivery, "issue_comment", "created",
        json.dumps(p.issue_comment(REPO, PR, "/run hello")), owner=ELSEWHERE))
    try:
        await b.start()
        ready = utcnow()
        if ready < expires - timedelta(seconds=1):  # (a slow start may take longer)
            assert pg_store.list_runs(limit=5) == []  # its lease lives: the work is left to it
            assert pg_store.delivery(delivery).owner == ELSEWHERE  # type: ignore[union-attr]

        def runs_of(source: str) -> list[Run]:
            return [r for r in pg_store.list_runs(limit=10) if r.source == source]

        await wait_until(lambda: runs_of("slack") and runs_of("github"), timeout=30)
        # Taken over once the lease expired (not an hour later), and not before.
        for run in runs_of("slack") + runs_of("github"):
            assert expires <= run.created_at < max(expires, ready) + timedelta(seconds=15)
        await wait_until(lambda: pg_store.unhandled_delivery_count() == 0)
        assert "hello" in (await sender.answer(trigger, timeout=30))["text"]
        await wait_until(lambda: fake_github.checks_for("jobbot: hello"))
        await asyncio.sleep(2 * EXPIRY)
        assert len(runs_of("slack")) == 1
        assert len(runs_of("github")) == 1
    finally:
        await sender.close()
        b.stop()


def _gone(pid: int) -> bool:
    """The process no longer runs (or is a zombie its parent has not reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


async def test_a_replica_taken_for_dead_lets_go_of_the_runs_another_took_over(
        sqlite_store: Store, tmp_path: Path, kube: FakeKubernetes) -> None:
    app = parse_app(json.dumps({"app": "shop", "kubernetes": {"namespace": NS}, "jobs": [
        {"name": "hello", "image": "busybox:1.37", "command": ["echo", "hi"]}]}))
    service = kube_service(app, sqlite_store, tmp_path / "data", api_for(kube.url))
    me = str(service.owner)
    try:
        await service.replica.register()
        run = (await service.trigger("hello", Actor.cli("alice"))).run
        [(_, name)] = await wait_until(lambda: list(kube.jobs))
        assert service.executor.drives(run.id)
        # Paused past its lease's expiry: another replica took the lease and the run over.
        sqlite_store.end_replica(me)
        assert sqlite_store.take_over_replica(me, ELSEWHERE, "kubernetes") is not None
        await service.replica.beat()
        assert not service.executor.drives(run.id)  # one replica follows a run
        assert me in sqlite_store.replica_expiries()  # it holds a lease again, for new work
        await kube.add_pod(NS, name)
        await kube.finish_job(NS, name, "Complete")
        await asyncio.sleep(1)
        assert sqlite_store.attempts(run.id) == []  # nothing reported by the one let go
        assert sqlite_store.get_run(run.id).owner == ELSEWHERE  # type: ignore[union-attr]
    finally:
        await service.shutdown()

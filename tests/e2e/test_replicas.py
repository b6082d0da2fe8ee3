"""Two `jobbot serve` replicas on PostgreSQL and the real control plane: kill -9 the replica
that follows a running Job, and the other one follows it to the end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.models import Run
from core.store import Store
from tests.conftest import fresh_database_url
from tests.e2e.cluster import KubeCluster
from tests.e2e.test_kubernetes_executor import _rbac_from_manifests
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSender
from tests.support.server import ServeProcess, wait_until

# Seconds a replica's lease lives unrenewed in this test (renewed four times in that span).
EXPIRY = 3.0
# What every container of the cluster prints (kwok serves it as the pods' log).
LOG = [f"line {n} of the half-minute job" for n in range(1, 41)]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.stop()


def _run_of(store: Store) -> Run | None:
    runs = store.list_runs(limit=5)
    assert len(runs) <= 1, runs
    return runs[0] if runs else None


def _cli_logs(workdir: Path, env: dict[str, str], run_id: str) -> list[str]:
    """`jobbot logs RUN`, as a person would read the run's log afterwards."""
    result = subprocess.run([sys.executable, "-m", "jobbot", "logs", run_id], cwd=workdir,
                            env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _owned_by(store: Store, run_id: str, replica: ServeProcess) -> bool:
    run = store.get_run(run_id)
    return run is not None and f":{replica.pid}:" in (run.owner or "")


async def test_a_killed_replicas_job_is_followed_to_the_end_by_another(
        tmp_path: Path, namespace: str, kube_cluster: KubeCluster, slack: FakeSlack,
        request: pytest.FixtureRequest) -> None:
    kube_cluster.apply_rbac(_rbac_from_manifests(namespace))
    kube_cluster.set_default_log(LOG)
    (tmp_path / "app.yaml").write_text(json.dumps({
        "app": "e2e", "kubernetes": {"namespace": namespace},
        "jobs": [{"name": "half-minute", "image": "busybox:1.37",
                  "command": ["sh", "-c", "echo working; sleep 30"]}]}))
    db_url = fresh_database_url("postgresql", tmp_path, request)
    env = {"JOBBOT_DATABASE_URL": db_url, "JOBBOT_SECRET_KEY": "k" * 32,
           "JOBBOT_EXECUTOR": "kubernetes",
           "JOBBOT_KUBECONFIG": str(kube_cluster.jobbot_kubeconfig),
           "JOBBOT_LEASE_EXPIRY": str(EXPIRY), "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url}
    a, b = (ServeProcess(tmp_path, env, log=tmp_path / f"replica-{name}.log", ready_within=120)
            for name in ("a", "b"))
    store = Store(db_url)
    sender = SlackSender(slack, f"{a.url}/slack/events")
    try:
        await a.start()
        await b.start()
        status, _, _ = await sender.command("run half-minute")
        assert status == 200
        run = await wait_until(lambda: _run_of(store), timeout=60)
        # A follows the Job: its pod runs (for half a minute) and its log is being copied.
        await wait_until(lambda: store.attempts(run.id), timeout=60)
        assert _owned_by(store, run.id, a)
        assert (store.get_run(run.id) or run).state == "running"

        a.kill()
        killed = time.monotonic()
        await wait_until(lambda: _owned_by(store, run.id, b), timeout=60)
        taken_after = time.monotonic() - killed
        assert taken_after < EXPIRY + 10, taken_after

        final: Run = await wait_until(
            lambda: (r := store.get_run(run.id)) is not None and r.run_state.is_final and r,
            timeout=120)
        assert (final.state, final.exit_code) == ("succeeded", 0)
        attempts = store.attempts(run.id)
        assert [(x.index, x.state, x.exit_code) for x in attempts] == [(1, "succeeded", 0)]
        # The whole log, once: what A copied is replaced by B's copy from the pod's start.
        lines = await asyncio.to_thread(_cli_logs, tmp_path, env, run.id)
        assert [line for line in lines if not line.startswith("[jobbot]")] == LOG
    finally:
        await sender.close()
        a.stop()
        b.stop()
        store.close()

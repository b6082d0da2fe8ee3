"""A Kubernetes pod that prints its Secret: masked in the Slack thread, the run page, the raw
log and the check run, through the public surface, with the fake Kubernetes API."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.executors.k8s.manifests import job_name
from core.models import Run
from core.service import JobService
from core.spec import AppSpec, load_app
from core.store import Store
from tests.fakes import github_payloads as p
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack
from tests.integration.test_slack_bot import Bot, parent_of, start_bot
from tests.support import github as support
from tests.support.apps import write_app
from tests.support.kube import api_for, eventually, kube_service

PASSWORD = "hunter2-from-the-cluster"
SECRET_JOB: dict[str, Any] = {
    "name": "migrate", "image": "python:3.12-slim", "command": ["python", "migrate.py"],
    "secrets": ["db-credentials"], "env": {"SERVICE_TOKEN": "env-token-abcdef"},
    "pull_requests": True,
}
PRINTED = [f"connecting with DB_PASSWORD={PASSWORD}",
           f"header Basic {base64.b64encode(PASSWORD.encode()).decode()}",
           "token env-token-abcdef", "bad things happened"]


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}]}))
    return path


async def _fail_with_printed_secret(kube: FakeKubernetes, namespace: str, run: Run) -> None:
    """Play the cluster: the run's pod prints the secret and fails, and so does its Job."""
    name = job_name(run.job, run.number, run.id)

    async def created() -> bool:
        return (namespace, name) in kube.jobs
    await eventually(created, f"Job {name}")
    pod = await kube.add_pod(namespace, name, log=PRINTED)
    await kube.set_pod(namespace, pod, "Failed", exit_code=3)
    await kube.finish_job(namespace, name, "Failed", "BackoffLimitExceeded")


def _leaked(text: str) -> list[str]:
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    return [v for v in (PASSWORD, encoded, "env-token-abcdef") if v in text]


async def test_slack_failure_tail_run_page_and_raw_log_are_masked(
        tmp_path: Path, slack: FakeSlack, kube: FakeKubernetes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    kube.add_secret("demo", "db-credentials", {"DB_PASSWORD": PASSWORD})
    extra = {"JOBBOT_EXECUTOR": "kubernetes",
             "JOBBOT_KUBECONFIG": _kubeconfig(tmp_path / "kubeconfig", kube.url)}
    bot, stop = await start_bot(tmp_path, slack, jobs=[SECRET_JOB], extra=extra)
    try:
        await _slack_and_pages(bot, kube)
    finally:
        await stop()


async def _slack_and_pages(bot: Bot, kube: FakeKubernetes) -> None:
    run_id = bot.run_id_from(await bot.ask("run migrate"))
    service = bot.runtime.service
    await _fail_with_printed_secret(kube, "demo", await service.get_run(run_id))
    assert await bot.wait_final(run_id) == "failed"
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/migrate #1"))
    [end] = await bot.fake.wait_for(lambda: bot.fake.replies(parent))
    tail = json.dumps(end.blocks)
    assert "bad things happened" in tail
    assert "DB_PASSWORD=********" in tail
    assert _leaked(bot.fake.everything_sent()) == []

    token = bot.runtime.links.token(run_id)
    base = bot.url.removesuffix("/slack/events")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/runs/{run_id}/logs?t={token}") as response:
            assert response.status == 200
            raw = await response.text()
        async with http.get(f"{base}/runs/{run_id}?t={token}") as response:
            assert response.status == 200
            page = await response.text()
    assert "DB_PASSWORD=********" in raw
    assert "token ********" in raw
    assert _leaked(raw) == []
    assert "bad things happened" in page
    assert _leaked(page) == []


async def test_check_run_output_is_masked(tmp_path: Path, kube: FakeKubernetes) -> None:
    repository, head, number = "acme/shop", "1" * 40, 7
    app = load_app(write_app(tmp_path / "server", [SECRET_JOB], app="shop"))
    kube.add_secret("shop", "db-credentials", {"DB_PASSWORD": PASSWORD})

    def kube_jobbot(spec: AppSpec, store: Store, data: Path) -> JobService:
        return kube_service(spec, store, data, api_for(kube.url))

    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    gh, closers = await support.start(tmp_path, app, store, service=kube_jobbot)
    try:
        gh.fake.permissions[(repository, "alice")] = "write"
        gh.fake.add_pull(repository, number, head)
        response = await gh.deliver("issue_comment",
                                    p.issue_comment(repository, number, "/run migrate"))
        assert response.status == 202

        async def started() -> list[Run]:
            return await asyncio.to_thread(store.list_runs, limit=10)
        [run] = await eventually(started, "the run")
        await _fail_with_printed_secret(kube, "shop", run)
        await gh.settle()
        [check] = gh.fake.checks_for("jobbot: migrate")
        assert check["conclusion"] == "failure"
        assert "DB_PASSWORD=********" in check["output"]["text"]
        assert "token ********" in check["output"]["text"]
        assert _leaked(json.dumps([c.body for c in gh.fake.calls], default=str)) == []
    finally:
        await support.stop(gh, closers)
        store.close()

"""Pushes build private repositories: the App installed before jobbot first started, a
token per build limited to the one repository, in a Secret the build Job owns and that goes
when the build ends; pushes authorized by GitHub unless a job restricts them (fake GitHub,
fake Kubernetes API, fake Slack)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.executors.k8s.api import KubeApi
from core.executors.k8s.builder import KubernetesBuilder
from core.executors.k8s.manifests import (
    LABEL_BUILD,
    build_job_name,
    build_manifest,
    git_secret_name,
)
from core.models import RunState
from core.spec import AppSpec, load_app, parse_app
from core.store import NewRun, Store
from tests.fakes import github_payloads as p
from tests.fakes.github import IssuedToken
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack
from tests.support import github as support
from tests.support.apps import dead_process, python_job, write_app
from tests.support.kube import api_for, eventually, kube_service

REPO = "acme/shop"
FORK = "mallory/shop"
HEAD = "1" * 40
PR = 7
PY = sys.executable
BUILD = build_job_name("site", HEAD)
GIT_SECRET = git_secret_name(BUILD)
MERGE_QUEUE = "github-merge-queue[bot]"
REGISTRY_CONFIG = json.dumps({"auths": {"registry.example.com": {
    "auth": base64.b64encode(b"ci-pusher:registry-pass-9876").decode()}}})


def server_app(tmp_path: Path) -> AppSpec:
    path = tmp_path / "server" / "app.yaml"
    if path.exists():
        return load_app(path)
    return load_app(write_app(tmp_path / "server", [python_job("hello", "print('hi')")],
                              app="shop"))


def repo_yaml(**deploy: Any) -> str:
    """The repository's app.yaml: a build of main, a cd job and a PR job that follow it."""
    return json.dumps({
        "app": "shop",
        "defaults": {"notify": {"slack_channel": "#deploys"}},
        "builds": [{"name": "site", "image": "registry.example.com/acme/shop",
                    "branches": ["main"], "registry_secret": "registry-credentials"}],
        "jobs": [
            {"name": "deploy", "image_from_build": "site", "run_on_image_change": "cd",
             "command": [PY, "-c", "print('deployed')"], **deploy},
            {"name": "smoke", "image_from_build": "site", "run_on_image_change": "cd",
             "command": [PY, "-c", "print('smoke ok')"]},
            {"name": "pr-check", "image_from_build": "site", "pull_requests": True,
             "run_on_image_change": "never", "command": [PY, "-c", "print('pr ok')"]},
        ],
    })


class Kubelet:
    """Plays the kubelet and the Job controller on the fake API: each new Job gets a pod
    that ends (a build's pod prints the git token it was given, as a careless build would)."""

    def __init__(self, k8s: FakeKubernetes, *, build_phase: str = "Succeeded",
                 hold_builds: bool = False) -> None:
        self.k8s = k8s
        self.build_phase = build_phase
        self.hold_builds = hold_builds
        self.seen: set[str] = set()
        self.tokens: list[str] = []

    async def run(self) -> None:
        while True:
            for (namespace, name), job in list(self.k8s.jobs.items()):
                uid = job["metadata"]["uid"]
                if uid in self.seen:
                    continue
                if LABEL_BUILD not in job["metadata"]["labels"]:
                    self.seen.add(uid)
                    pod = await self.k8s.add_pod(namespace, name, log=["deployed"])
                    await self.k8s.set_pod(namespace, pod, "Succeeded")
                    await self.k8s.finish_job(namespace, name, "Complete")
                elif not self.hold_builds and await self._build(namespace, name, job):
                    self.seen.add(uid)
            await asyncio.sleep(0.02)

    async def _build(self, namespace: str, name: str, job: dict[str, Any]) -> bool:
        mounted = [v for v in job["spec"]["template"]["spec"]["volumes"]
                   if v["name"] == "git-credentials"]
        lines = ["#1 resolving git context"]
        if mounted:  # the pod starts once its Secret exists
            secret = self.k8s.secrets.get((namespace, mounted[0]["secret"]["secretName"]))
            if secret is None:
                return False
            token = base64.b64decode(secret["data"]["token"]).decode()
            self.tokens.append(token)
            lines.append(f"#2 git fetch with x-access-token:{token}")
        pod = await self.k8s.add_pod(namespace, name, log=[*lines, "#3 pushing"])
        await self.k8s.set_pod(namespace, pod, self.build_phase)
        await self.k8s.finish_job(namespace, name, "Complete" if self.build_phase ==
                                  "Succeeded" else "Failed", "" if self.build_phase ==
                                  "Succeeded" else "BackoffLimitExceeded")
        return True


@pytest.fixture
async def k8s() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes()
    await server.start()
    server.add_secret("shop", "registry-credentials", {".dockerconfigjson": REGISTRY_CONFIG},
                      kind="kubernetes.io/dockerconfigjson")
    yield server
    await server.stop()


async def start_on_kubernetes(tmp_path: Path, store: Store, k8s: FakeKubernetes,
                              slack: FakeSlack | None = None
                              ) -> tuple[support.Harness, list[Any]]:
    """jobbot on the Kubernetes executor and builder; the App was installed on REPO before
    jobbot first started (GitHub lists it; no `installation` event comes)."""
    api = api_for(k8s.url)
    return await support.start(
        tmp_path, server_app(tmp_path), store,
        service=lambda app, st, data: kube_service(app, st, data, api),
        builder=lambda service: KubernetesBuilder(api, service.log_store, watch_timeout=5),
        slack_api_url=slack.api_url if slack else None, installations={77: [REPO]})


async def with_kubelet(kubelet: Kubelet) -> asyncio.Task[None]:
    return asyncio.create_task(kubelet.run())


async def stop_all(gh: support.Harness, closers: list[Any], task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await support.stop(gh, closers)


def scoped(gh: support.Harness) -> list[IssuedToken]:
    """The tokens jobbot asked to be limited (its own installation tokens are not)."""
    return [t for t in gh.fake.issued if t.repositories is not None]


def runs_by_job(store: Store) -> dict[str, Any]:
    return {r.job: r for r in store.list_runs(limit=100)}


# -- Kubernetes: the token, its Secret, and where it never appears -------------------------


async def test_a_push_by_a_merge_queue_builds_a_private_repository_installed_before_start(
        tmp_path: Path, sqlite_store: Store, k8s: FakeKubernetes, slack: FakeSlack,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gh, closers = await start_on_kubernetes(tmp_path, sqlite_store, k8s, slack)
    kubelet = Kubelet(k8s)
    task = await with_kubelet(kubelet)
    try:
        # Listed at start-up: no installation event was ever received.
        assert [(r.full_name, r.installation_id)
                for r in sqlite_store.served_repositories()] == [(REPO, 77)]
        gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_yaml(), "Dockerfile": "FROM x\n"})
        # The merge queue has no permission by the collaborator API; GitHub let it push.
        response = await gh.deliver("push", p.push(REPO, "main", HEAD, pusher=MERGE_QUEUE))
        assert response.status == 202
        await gh.settle()
        done = runs_by_job(sqlite_store)
        assert {job: r.state for job, r in done.items()} == {
            "site": "succeeded", "deploy": "succeeded", "smoke": "succeeded"}
        # One token, for this build alone: the one repository, reading its contents.
        [issued] = scoped(gh)
        assert (issued.installation_id, issued.repositories, issued.permissions) == (
            77, ("shop",), {"contents": "read"})
        assert kubelet.tokens == [issued.token]
        token = issued.token
        # The Secret was made owned by the build Job ...
        job = k8s.job("shop", BUILD)
        [secret] = [s for s in k8s.created_secrets if s["metadata"]["name"] == GIT_SECRET]
        assert secret["metadata"]["ownerReferences"] == [{
            "apiVersion": "batch/v1", "kind": "Job", "name": BUILD,
            "uid": job["metadata"]["uid"]}]
        assert base64.b64decode(secret["data"]["token"]).decode() == token
        # ... mounted into the build container only, handed to BuildKit as a build secret ...
        pod = job["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName")
                    == GIT_SECRET]
        [container] = pod["containers"]
        assert container["name"] == "buildkit"
        assert [m["mountPath"] for m in container["volumeMounts"]
                if m["name"] == volume["name"]] == ["/run/secrets/jobbot-git"]
        assert "id=GIT_AUTH_TOKEN.github.com,src=/run/secrets/jobbot-git/token" in (
            container["args"])
        # ... and the registry's docker config is BuildKit's for pulls as for pushes.
        assert {"name": "DOCKER_CONFIG", "value": "/home/user/.docker"} in container["env"]
        # ... and deleted by jobbot when the build ended (its Job is still there).
        assert ("shop", GIT_SECRET) not in k8s.secrets
        assert ("shop", BUILD) in k8s.jobs
        # The token is in no Job spec, argument, log, check run or Slack message.
        assert token not in json.dumps(list(k8s.jobs.values()))
        log = list(gh.service.log_store.read_lines(f"build-{BUILD}", 1))
        assert "#2 git fetch with x-access-token:********" in log
        assert token not in json.dumps(log)
        assert token not in json.dumps(gh.fake.check_runs)
        await slack.wait_for(lambda: len(slack.parents("C0DEPLOYS")) >= 2)
        assert token not in slack.everything_sent()
        assert token not in caplog.text
    finally:
        await stop_all(gh, closers, task)


async def test_a_failed_build_deletes_its_secret_and_runs_no_cd_jobs(
        tmp_path: Path, sqlite_store: Store, k8s: FakeKubernetes) -> None:
    gh, closers = await start_on_kubernetes(tmp_path, sqlite_store, k8s)
    kubelet = Kubelet(k8s, build_phase="Failed")
    task = await with_kubelet(kubelet)
    try:
        gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_yaml()})
        await gh.deliver("push", p.push(REPO, "main", HEAD))
        await gh.settle()
        assert {job: r.state for job, r in runs_by_job(sqlite_store).items()} == {
            "site": "failed"}
        assert [s["metadata"]["name"] for s in k8s.created_secrets] == [GIT_SECRET]
        assert ("shop", GIT_SECRET) not in k8s.secrets
        assert ("shop", BUILD) in k8s.jobs
        assert kubelet.tokens[0] not in json.dumps(gh.fake.check_runs)
    finally:
        await stop_all(gh, closers, task)


async def test_a_rerun_of_a_failed_build_builds_again_with_a_fresh_token(
        tmp_path: Path, sqlite_store: Store, k8s: FakeKubernetes) -> None:
    gh, closers = await start_on_kubernetes(tmp_path, sqlite_store, k8s)
    kubelet = Kubelet(k8s, build_phase="Failed")
    task = await with_kubelet(kubelet)
    try:
        gh.fake.permissions[(REPO, "alice")] = "write"
        gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_yaml()})
        await gh.deliver("push", p.push(REPO, "main", HEAD))
        await gh.settle()
        [failed] = sqlite_store.list_runs(limit=10)
        first_uid = k8s.job("shop", BUILD)["metadata"]["uid"]
        kubelet.build_phase = "Succeeded"
        [check] = gh.fake.checks_for("jobbot: site")
        await gh.deliver("check_run", p.check_run(REPO, HEAD, check["id"], failed.id,
                                                  action="requested_action"))
        await gh.settle()
        builds = [r for r in sqlite_store.list_runs(limit=10) if r.job == "site"]
        assert sorted(r.state for r in builds) == ["failed", "succeeded"]
        # A new Job, and a new token for it (each limited to the repository).
        assert k8s.job("shop", BUILD)["metadata"]["uid"] != first_uid
        first, second = scoped(gh)
        assert first.token != second.token
        assert second.repositories == ("shop",)
        assert kubelet.tokens == [first.token, second.token]
        assert ("shop", GIT_SECRET) not in k8s.secrets
    finally:
        await stop_all(gh, closers, task)


async def test_a_build_stopped_by_jobbot_stopping_deletes_its_secret(
        tmp_path: Path, sqlite_store: Store, k8s: FakeKubernetes) -> None:
    gh, closers = await start_on_kubernetes(tmp_path, sqlite_store, k8s)
    task = await with_kubelet(Kubelet(k8s, hold_builds=True))
    try:
        gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_yaml()})
        await gh.deliver("push", p.push(REPO, "main", HEAD))

        async def secret_made() -> bool:
            return ("shop", GIT_SECRET) in k8s.secrets

        await eventually(secret_made, "the build's Secret")
        # The build is cancelled under way (jobbot stops): its credentials go at once,
        # though its Job is left running for the next jobbot process to adopt.
        await support.restart(gh, tmp_path, server_app(tmp_path))
        assert ("shop", GIT_SECRET) not in k8s.secrets
        assert ("shop", BUILD) in k8s.jobs
    finally:
        await stop_all(gh, closers, task)


async def test_a_build_found_finished_after_a_restart_loses_its_secret(
        tmp_path: Path, sqlite_store: Store, k8s: FakeKubernetes) -> None:
    # A jobbot process died during the build: its run is left running, and its Job (which
    # finished since) still has the Secret with the token it was given.
    app = parse_app(repo_yaml())
    api: KubeApi = api_for(k8s.url)
    manifest = build_manifest(app, app.build("site"), sha=HEAD,
                              repository=f"https://github.com/{REPO}.git", git_host="github.com")
    job = (await api.create_job("shop", manifest)).job
    left = "ghs_left_by_the_dead_process_0123456789"
    k8s.add_secret("shop", GIT_SECRET, {"token": left}, metadata={"ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": BUILD, "uid": job["metadata"]["uid"]}]})
    pod = await k8s.add_pod("shop", BUILD, log=[f"#2 git fetch with {left}", "#3 pushed"])
    await k8s.set_pod("shop", pod, "Succeeded")
    await k8s.finish_job("shop", BUILD, "Complete")
    sqlite_store.save_repository_app(REPO, "shop", HEAD, repo_yaml())
    build = sqlite_store.create_run(NewRun(
        app="shop", job="site", source="github", actor="github:alice", sha=HEAD,
        ref="refs/heads/main", origin={"repository": REPO, "installation_id": 77,
                                       "branch": "main"},
        executor="build", owner=str(dead_process()))).run
    sqlite_store.transition(build.id, RunState.RUNNING)
    gh, closers = await start_on_kubernetes(tmp_path, sqlite_store, k8s)
    task = await with_kubelet(Kubelet(k8s))
    try:
        await gh.settle()
        resumed = sqlite_store.get_run(build.id)
        assert resumed is not None
        assert (resumed.state, resumed.image) == (
            "succeeded", f"registry.example.com/acme/shop:{HEAD}")
        assert ("shop", GIT_SECRET) not in k8s.secrets
        assert scoped(gh) == []  # finished: nothing clones any more, no token asked
        log = list(gh.service.log_store.read_lines(f"build-{BUILD}", 1))
        assert log == ["#2 git fetch with ********", "#3 pushed"]
    finally:
        await stop_all(gh, closers, task)


async def test_builds_for_a_forks_pull_request_never_get_a_token(
        tmp_path: Path, sqlite_store: Store, k8s: FakeKubernetes) -> None:
    gh, closers = await start_on_kubernetes(tmp_path, sqlite_store, k8s)
    task = await with_kubelet(Kubelet(k8s))
    try:
        gh.fake.permissions.update({(REPO, "alice"): "write", (REPO, "mallory"): "read"})
        main = "9" * 40
        gh.fake.add_branch(REPO, "main", main)
        gh.fake.add_tree(REPO, main, {"app.yaml": repo_yaml()})
        gh.fake.add_pull(REPO, PR, HEAD, author="mallory", head_repo=FORK)
        await gh.deliver("pull_request", p.pull_request_event(
            "opened", REPO, PR, HEAD, author="mallory", head_repo=FORK))
        await gh.settle()
        await gh.deliver("issue_comment", p.issue_comment(REPO, PR, "/ok-to-test"))
        await gh.settle()
        done = runs_by_job(sqlite_store)
        assert {job: r.state for job, r in done.items()} == {
            "site": "succeeded", "pr-check": "succeeded"}
        assert done["site"].origin["fork"] is True
        pod = k8s.job("shop", BUILD)["spec"]["template"]["spec"]
        assert "git-credentials" not in json.dumps(pod)
        assert scoped(gh) == []
        assert k8s.created_secrets == []
    finally:
        await stop_all(gh, closers, task)


# -- the local builder, and who a push runs jobs for --------------------------------------


async def test_local_builds_work_for_an_app_installed_before_the_first_start(
        tmp_path: Path, sqlite_store: Store) -> None:
    gh, closers = await support.start(tmp_path, server_app(tmp_path), sqlite_store,
                                      installations={77: [REPO]})
    try:
        gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_yaml()})
        await gh.deliver("push", p.push(REPO, "main", HEAD))
        await gh.settle()
        done = runs_by_job(sqlite_store)
        assert {job: r.state for job, r in done.items()} == {
            "site": "succeeded", "deploy": "succeeded", "smoke": "succeeded"}
        assert done["site"].image == str(tmp_path / "workspaces" / "shop" / HEAD)
    finally:
        await support.stop(gh, closers)


async def test_a_repository_jobbot_never_heard_of_is_learnt_from_its_delivery(
        tmp_path: Path, sqlite_store: Store) -> None:
    gh, closers = await support.start(tmp_path, server_app(tmp_path), sqlite_store)
    try:
        assert sqlite_store.served_repositories() == []
        # Added to the installation while jobbot was down: the event never came.
        gh.fake.installations[91] = [REPO, "acme/other"]
        gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_yaml()})
        await gh.deliver("push", p.push(REPO, "main", HEAD, installation_id=91))
        await gh.settle()
        assert runs_by_job(sqlite_store)["deploy"].state == "succeeded"
        assert [(r.full_name, r.installation_id)
                for r in sqlite_store.served_repositories()] == [
            ("acme/other", 91), (REPO, 91)]
    finally:
        await support.stop(gh, closers)


async def test_a_push_by_a_bot_without_permission_runs_its_cd_jobs(
        tmp_path: Path, sqlite_store: Store) -> None:
    gh, closers = await support.start(tmp_path, server_app(tmp_path), sqlite_store,
                                      installations={77: [REPO]})
    try:
        gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_yaml()})
        await gh.deliver("push", p.push(REPO, "main", HEAD, pusher="release-bot[bot]"))
        await gh.settle()
        done = runs_by_job(sqlite_store)
        assert {job: r.state for job, r in done.items()} == {
            "site": "succeeded", "deploy": "succeeded", "smoke": "succeeded"}
        assert done["deploy"].actor == "github:release-bot[bot]"
    finally:
        await support.stop(gh, closers)


async def test_a_job_that_restricts_pushes_refuses_visibly(
        tmp_path: Path, sqlite_store: Store, slack: FakeSlack) -> None:
    gh, closers = await support.start(tmp_path, server_app(tmp_path), sqlite_store,
                                      installations={77: [REPO]},
                                      slack_api_url=slack.api_url)
    try:
        gh.fake.permissions[(REPO, "alice")] = "write"
        gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_yaml(
            allow={"github_permission": "maintain"})})
        await gh.deliver("push", p.push(REPO, "main", HEAD, pusher="alice"))
        await gh.settle()
        done = runs_by_job(sqlite_store)
        assert {job: r.state for job, r in done.items()} == {
            "site": "succeeded", "deploy": "skipped", "smoke": "succeeded"}
        reason = done["deploy"].reason or ""
        assert "needs maintain permission" in reason
        assert "they have write" in reason
        # On the commit's check run ...
        [check] = gh.fake.checks_for("jobbot: deploy")
        assert (check["head_sha"], check["conclusion"]) == (HEAD, "skipped")
        assert "needs maintain permission" in check["output"]["summary"]
        # ... and in the job's Slack channel.
        texts = await slack.wait_for(lambda: [t for t in slack.texts_sent()
                                              if "needs maintain permission" in t])
        assert texts
        assert any(m.channel == "C0DEPLOYS" and "deploy" in m.text
                   for m in slack.parents())
        # A replay of the push refuses nothing new.
        await gh.deliver("push", p.push(REPO, "main", HEAD, pusher="alice"))
        await gh.settle()
        assert len(sqlite_store.list_runs(limit=100)) == 3
    finally:
        await support.stop(gh, closers)

"""Builds as BuildKit Jobs against the fake API server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.builds import BuildRequest
from core.executors.k8s.builder import KubernetesBuilder
from core.executors.k8s.manifests import BUILDKIT_IMAGE, build_job_name
from core.logs import FileLogs
from core.spec import parse_app
from tests.fakes.kubernetes import FakeKubernetes
from tests.support.kube import api_for, eventually

APP = parse_app("""
app: shop
builds:
  - name: api-build
    image: registry.example.com/shop/api
    registry_secret: registry-credentials
jobs: []
""")
SHA = "ab" * 20
REGISTRY_PASSWORD = "registry-pass-9876"
REGISTRY_AUTH = base64.b64encode(f"pusher:{REGISTRY_PASSWORD}".encode()).decode()
DOCKER_CONFIG = json.dumps({"auths": {"registry.example.com": {
    "username": "pusher", "password": REGISTRY_PASSWORD, "auth": REGISTRY_AUTH}}})


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes()
    await server.start()
    server.add_secret("shop", "registry-credentials", {".dockerconfigjson": DOCKER_CONFIG},
                      kind="kubernetes.io/dockerconfigjson")
    yield server
    await server.stop()


def _request() -> BuildRequest:
    return BuildRequest(APP, APP.build("api-build"), SHA, "refs/heads/main",
                        "https://git.example.com/shop.git")


async def _exists(fake: FakeKubernetes, name: str) -> bool:
    return ("shop", name) in fake.jobs


@pytest.mark.parametrize(("condition", "reason", "state"), [
    ("Complete", "", "succeeded"),
    ("Failed", "BackoffLimitExceeded", "failed"),
])
async def test_a_build_is_a_buildkit_job_with_its_log_kept(
        fake: FakeKubernetes, tmp_path: Path, condition: str, reason: str, state: str) -> None:
    logs = FileLogs(tmp_path / "logs")
    builder = KubernetesBuilder(api_for(fake.url), logs, watch_timeout=5)
    task = asyncio.create_task(builder.build(_request()))
    name = build_job_name("api-build", SHA)
    await eventually(lambda: _exists(fake, name), "the build Job")
    job = fake.job("shop", name)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == BUILDKIT_IMAGE
    pod = await fake.add_pod("shop", name, log=["#1 building", "#2 pushing"])
    await fake.set_pod("shop", pod, "Succeeded" if state == "succeeded" else "Failed")
    await fake.finish_job("shop", name, condition, reason)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.state.value == state
    assert outcome.image == f"registry.example.com/shop/api:{SHA}"
    assert outcome.log_key is not None
    assert list(logs.read_lines(outcome.log_key, 1)) == ["#1 building", "#2 pushing"]


async def test_a_second_build_of_the_same_sha_adopts_the_job(fake: FakeKubernetes,
                                                            tmp_path: Path) -> None:
    builder = KubernetesBuilder(api_for(fake.url), FileLogs(tmp_path / "logs"), watch_timeout=5)
    first = asyncio.create_task(builder.build(_request()))
    name = build_job_name("api-build", SHA)
    await eventually(lambda: _exists(fake, name), "the build Job")
    second = asyncio.create_task(builder.build(_request()))
    await eventually(lambda: _posts(fake, 2), "the second create")
    await fake.finish_job("shop", name, "Complete")
    outcomes = await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert [o.state.value for o in outcomes] == ["succeeded", "succeeded"]
    assert len(fake.jobs) == 1


async def _posts(fake: FakeKubernetes, count: int) -> bool:
    return sum(1 for m, _, _ in fake.requests if m == "POST") >= count


async def test_build_logs_mask_the_registry_credentials(fake: FakeKubernetes,
                                                        tmp_path: Path) -> None:
    logs = FileLogs(tmp_path / "logs")
    builder = KubernetesBuilder(api_for(fake.url), logs, watch_timeout=5)
    task = asyncio.create_task(builder.build(_request()))
    name = build_job_name("api-build", SHA)
    await eventually(lambda: _exists(fake, name), "the build Job")
    pod = await fake.add_pod("shop", name, log=[
        f"#3 login pusher:{REGISTRY_PASSWORD}", f"#4 Authorization: Basic {REGISTRY_AUTH}",
        "#5 pushing registry.example.com/shop/api"])
    await fake.set_pod("shop", pod, "Failed")
    await fake.finish_job("shop", name, "Failed", "PodFailurePolicy",
                          f"push refused for {REGISTRY_PASSWORD}")
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.reason == "push refused for ********"
    assert outcome.log_key is not None
    assert list(logs.read_lines(outcome.log_key, 1)) == [
        "#3 login pusher:********", "#4 Authorization: Basic ********",
        "#5 pushing registry.example.com/shop/api"]


async def test_a_missing_registry_secret_fails_the_build_before_its_job(
        fake: FakeKubernetes, tmp_path: Path) -> None:
    del fake.secrets[("shop", "registry-credentials")]
    builder = KubernetesBuilder(api_for(fake.url), FileLogs(tmp_path / "logs"), watch_timeout=5)
    outcome = await asyncio.wait_for(builder.build(_request()), 10)
    assert (outcome.state.value, outcome.reason) == (
        "failed", "could not start the build: Secret shop/registry-credentials does not "
                  "exist, so the pod could not start: create it, or remove it from the build's "
                  "registry_secret")
    assert fake.jobs == {}

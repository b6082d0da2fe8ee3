"""A build of a private repository on the real control plane: its Secret, owned by its Job,
comes and goes with the build, created and deleted as the jobbot ServiceAccount with the Role
from manifests/. The token comes from the fake GitHub; kwok plays the pod (no real clone)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from core.builds import BuildRequest
from core.executors.k8s.api import KubeApi
from core.executors.k8s.builder import KubernetesBuilder
from core.executors.k8s.manifests import build_job_name, git_secret_name
from core.executors.k8s.retry import RetryPolicy
from core.logs import FileLogs
from core.spec import parse_app
from core.store import Store
from github_app.api import GitHubClients
from github_app.installations import BuildTokens, Installations
from tests.e2e.cluster import KubeCluster
from tests.e2e.test_kubernetes_executor import _rbac_from_manifests
from tests.fakes.github import FakeGitHub
from tests.support import github as support

REPO = "acme/private-shop"
SHA = "5" * 40
TIMEOUT = 90.0


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    fake, server = await support.start_fake()
    fake.installations[77] = [REPO]
    yield fake
    await server.close()


@pytest.fixture
def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    yield store  # type: ignore[misc]
    store.close()


def _watch_secrets(admin: client.ApiClient, namespace: str, seen: list[tuple[str, Any]],
                   stop: threading.Event) -> None:
    """Record every Secret event in the namespace (as the admin) until told to stop."""
    core = client.CoreV1Api(admin)
    while not stop.is_set():
        stream = watch.Watch()
        for event in stream.stream(core.list_namespaced_secret, namespace, timeout_seconds=2):
            seen.append((event["type"], event["raw_object"]))
            if stop.is_set():
                stream.stop()


async def test_a_private_build_gets_a_secret_that_goes_when_its_job_ends(
        namespace: str, kube_cluster: KubeCluster, github: FakeGitHub, store: Store,
        tmp_path: Path) -> None:
    kube_cluster.apply_rbac(_rbac_from_manifests(namespace))
    app = parse_app(json.dumps({
        "app": "shop", "kubernetes": {"namespace": namespace},
        "builds": [{"name": "site", "image": "registry.example.com/acme/shop"}],
        "jobs": []}))
    clients = GitHubClients(str(github.app_id), support.private_key(), github.url)
    api = KubeApi(kube_cluster.api_client(kube_cluster.jobbot_kubeconfig),
                  RetryPolicy(first_delay=0.05, max_delay=1.0, budget=20.0))
    builder = KubernetesBuilder(api, FileLogs(tmp_path / "logs"), watch_timeout=30,
                                credentials=BuildTokens(clients, Installations(clients, store)))
    seen: list[tuple[str, Any]] = []
    stop = threading.Event()
    watcher = asyncio.create_task(asyncio.to_thread(
        _watch_secrets, kube_cluster.admin, namespace, seen, stop))
    try:
        await asyncio.sleep(0.5)  # the watch is open before the build starts
        outcome = await asyncio.wait_for(builder.build(BuildRequest(
            app, app.build("site"), SHA, "refs/heads/main", REPO,
            origin={"repository": REPO, "installation_id": 77})), TIMEOUT)
    finally:
        stop.set()
        await watcher
        await clients.aclose()
    assert outcome.state.value == "succeeded", outcome.reason
    name = build_job_name("site", SHA)
    secret_name = git_secret_name(name)
    job = client.BatchV1Api(kube_cluster.admin).read_namespaced_job(name, namespace)
    # The token: for this repository alone, reading its contents.
    [issued] = [t for t in github.issued if t.repositories is not None]
    assert (issued.installation_id, issued.repositories, issued.permissions) == (
        77, ("private-shop",), {"contents": "read"})
    # Created by jobbot's ServiceAccount, owned by the Job, holding the token ...
    # (By uid: each reopened watch lists what exists as ADDED again.)
    added = list({obj["metadata"]["uid"]: obj for kind, obj in seen if kind == "ADDED"
                  and obj["metadata"]["name"] == secret_name}.values())
    assert len(added) == 1
    assert added[0]["metadata"]["ownerReferences"] == [{
        "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job.metadata.uid}]
    assert base64.b64decode(added[0]["data"]["token"]).decode() == issued.token
    # ... and deleted once the Job ended, by jobbot (the Job itself is still there).
    assert [kind for kind, obj in seen if obj["metadata"]["name"] == secret_name][-1] == (
        "DELETED")
    with pytest.raises(ApiException) as gone:
        client.CoreV1Api(kube_cluster.admin).read_namespaced_secret(secret_name, namespace)
    assert gone.value.status == 404
    assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)
    # The Job carries the Secret's name, never the token.
    spec = json.dumps(kube_cluster.admin.sanitize_for_serialization(job))
    assert issued.token not in spec
    assert "id=GIT_AUTH_TOKEN.github.com,src=/run/secrets/jobbot-git/token" in spec

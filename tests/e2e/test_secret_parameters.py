"""A secret parameter on the real control plane: its value reaches the pod through a Secret of
the run's own (owned by its Job, created and deleted as the jobbot ServiceAccount with the Role
from manifests/), never through the Job or pod spec. kwok plays the pod, so the test resolves
the pod's secretKeyRef as the kubelet would: the pod's env names the Secret and key that hold
the value."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from core.catalog import Catalog
from core.events import Changes
from core.executors.base import Launch
from core.executors.k8s.api import KubeApi
from core.executors.k8s.manifests import job_name, params_secret_name
from core.executors.k8s.retry import RetryPolicy
from core.executors.kubernetes import KubernetesExecutor
from core.logs import FileLogs
from core.models import Run
from core.policy import Actor
from core.service import JobService
from core.spec import parse_app
from core.store import Store
from tests.e2e.cluster import KubeCluster, wait_for
from tests.e2e.test_kubernetes_executor import _rbac_from_manifests
from tests.e2e.test_private_build import _watch_secrets
from tests.support.kube import eventually

ACTOR = Actor.cli("e2e")
TIMEOUT = 90.0
DEPLOY_KEY = "deploy-key-in-a-real-cluster-5150"


@pytest.fixture
def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    yield store  # type: ignore[misc]
    store.close()


@pytest.fixture
async def service(namespace: str, kube_cluster: KubeCluster, store: Store,
                  tmp_path: Path) -> AsyncIterator[JobService]:
    kube_cluster.apply_rbac(_rbac_from_manifests(namespace))
    app = parse_app(json.dumps({
        "app": "e2e", "kubernetes": {"namespace": namespace},
        "jobs": [{"name": "deploy", "image": "busybox:1.37", "command": ["env"],
                  "parameters": [{"name": "STAGE", "type": "choice",
                                  "choices": ["blue", "green"]},
                                 {"name": "DEPLOY_KEY", "secret": True}]}]}))
    api = KubeApi(kube_cluster.api_client(kube_cluster.jobbot_kubeconfig),
                  RetryPolicy(first_delay=0.05, max_delay=1.0, budget=20.0))
    logs = FileLogs(tmp_path / "data" / "logs")
    catalog = Catalog([app])

    def annotations(launch: Launch) -> dict[str, str]:
        return {"e2e.jobbot.dev/duration": "5s"}  # running long enough to look at it

    executor = KubernetesExecutor(api, logs, lambda name: catalog.app(name).namespace,
                                  watch_timeout=30, pod_annotations=annotations)
    service = JobService(catalog, store, executor, logs, changes=Changes())
    yield service
    await service.shutdown()


async def _final(service: JobService, run: Run) -> Run:
    async def probe() -> Run | None:
        latest = await service.get_run(run.id)
        return latest if latest.run_state.is_final else None
    final: Run = await eventually(probe, f"{run.label} to finish", timeout=TIMEOUT)
    return final


async def test_the_pod_gets_a_secret_parameter_through_the_runs_secret(
        service: JobService, namespace: str, kube_cluster: KubeCluster) -> None:
    core = client.CoreV1Api(kube_cluster.admin)
    batch = client.BatchV1Api(kube_cluster.admin)
    seen: list[tuple[str, Any]] = []
    stop = threading.Event()
    watcher = asyncio.create_task(asyncio.to_thread(
        _watch_secrets, kube_cluster.admin, namespace, seen, stop))
    kube_cluster.set_default_log([f"DEPLOY_KEY={DEPLOY_KEY}", "STAGE=green"])
    try:
        await asyncio.sleep(0.5)  # the watch is open before the run starts
        run = (await service.trigger("deploy", ACTOR, overrides={
            "STAGE": "green", "DEPLOY_KEY": DEPLOY_KEY})).run
        name = job_name("deploy", run.number, run.id)
        secret_name = params_secret_name(name)

        def running_pod() -> client.V1Pod | None:
            pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
            return pods[0] if pods and pods[0].status.phase == "Running" else None

        pod = await asyncio.to_thread(wait_for, running_pod, timeout=TIMEOUT,
                                      what=f"a running pod of Job {name}")
        # What the kubelet does: the pod's env names a Secret and key; that key holds the value.
        [var] = [e for e in pod.spec.containers[0].env if e.name == "DEPLOY_KEY"]
        assert var.value is None
        ref = var.value_from.secret_key_ref
        assert (ref.name, ref.key) == (secret_name, "DEPLOY_KEY")
        secret = await asyncio.to_thread(core.read_namespaced_secret, ref.name, namespace)
        assert base64.b64decode(secret.data[ref.key]).decode() == DEPLOY_KEY
        job = await asyncio.to_thread(batch.read_namespaced_job, name, namespace)
        assert [(o.kind, o.name, o.uid) for o in secret.metadata.owner_references] == [
            ("Job", name, job.metadata.uid)]
        # Neither the Job nor its pod holds the value (env, args, labels, annotations).
        for obj in (job, pod):
            text = json.dumps(kube_cluster.admin.sanitize_for_serialization(obj))
            assert DEPLOY_KEY not in text
            assert base64.b64encode(DEPLOY_KEY.encode()).decode() not in text
        final = await _final(service, run)
    finally:
        kube_cluster.set_default_log(["hello from jobbot e2e"])
        stop.set()
        await watcher
    assert final.state == "succeeded", final.reason
    # Created once, by jobbot's ServiceAccount after the Job; deleted by it when the run ended,
    # while the Job itself is still there.
    events = [kind for kind, obj in seen if obj["metadata"]["name"] == secret_name]
    assert events[0] == "ADDED" and events[-1] == "DELETED"
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_secret(secret_name, namespace)
    assert gone.value.status == 404
    assert batch.read_namespaced_job(name, namespace).metadata.name == name
    log = "\n".join([line async for _, line in service.logs(run.id)])
    assert "DEPLOY_KEY=********" in log and DEPLOY_KEY not in log

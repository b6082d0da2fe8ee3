"""The Kubernetes executor against the real control plane, as the jobbot ServiceAccount.

RBAC comes from manifests/ (the Role and RoleBinding, moved into each test's namespace), so
the executor works with exactly the rights the deployment grants. kwok plays the pods: pod
annotations (set through the executor's pod_annotations hook) choose each pod's outcome.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, utils

from core.catalog import Catalog
from core.events import Changes
from core.executors.base import Launch
from core.executors.k8s.api import KubeApi
from core.executors.k8s.retry import RetryPolicy
from core.executors.kubernetes import KubernetesExecutor
from core.logs import FileLogs
from core.models import Run
from core.policy import Actor
from core.service import JobService
from core.spec import AppSpec, parse_app
from core.store import Store
from tests.e2e.cluster import KubeCluster
from tests.support.deploy import helm_template
from tests.support.kube import eventually

ROOT = Path(__file__).resolve().parents[2]
ACTOR = Actor.cli("e2e")
TIMEOUT = 90.0
# Pod outcomes per job, as the e2e cluster's kwok stages read them (see cluster/stages).
OUTCOMES: dict[str, dict[str, str]] = {
    "ok": {},
    "broken": {"e2e.jobbot.dev/exit-code": "3"},
    "forever": {"e2e.jobbot.dev/run": "forever"},
    "five-seconds": {"e2e.jobbot.dev/duration": "5s"},
    "batch": {},
    "leaky": {},
    "unsecured": {},
}
# What the Secret db-credentials holds; the pods of job `leaky` print it.
DB_PASSWORD = "hunter2-in-a-real-cluster"


def _app(namespace: str) -> AppSpec:
    jobs = [
        {"name": "ok", "image": "busybox:1.37", "command": ["echo", "hi"]},
        {"name": "broken", "image": "busybox:1.37", "command": ["false"], "backoff_limit": 1},
        {"name": "forever", "image": "busybox:1.37", "command": ["sleep", "inf"],
         "time_limit": 3, "stop_grace_period": 1},
        {"name": "five-seconds", "image": "busybox:1.37", "command": ["sleep", "5"]},
        {"name": "batch", "image": "busybox:1.37", "command": ["echo", "part"],
         "completions": 3, "parallelism": 2},
        {"name": "leaky", "image": "busybox:1.37", "command": ["env"],
         "secrets": ["db-credentials"]},
        {"name": "unsecured", "image": "busybox:1.37", "command": ["env"],
         "secrets": ["no-such-secret"]},
    ]
    return parse_app(json.dumps({"app": "e2e", "kubernetes": {"namespace": namespace},
                                 "jobs": jobs}))


def _rbac_from_manifests(namespace: str) -> list[dict[str, Any]]:
    """The Role and RoleBinding of manifests/base, for the jobs namespace `namespace`."""
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests/base/rbac.yaml").read_text()) if d]
    moved = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = namespace
        moved.append(doc)
    return moved


def _service(app: AppSpec, store: Store, data: Path, cluster: KubeCluster) -> JobService:
    api = KubeApi(cluster.api_client(cluster.jobbot_kubeconfig),
                  RetryPolicy(first_delay=0.05, max_delay=1.0, budget=20.0))
    logs = FileLogs(data / "logs")
    catalog = Catalog([app])

    def annotations(launch: Launch) -> dict[str, str]:
        return OUTCOMES.get(launch.job.name, {})

    executor = KubernetesExecutor(api, logs, lambda name: catalog.app(name).namespace,
                                  watch_timeout=30, pod_annotations=annotations)
    return JobService(catalog, store, executor, logs, changes=Changes())


@pytest.fixture
def app(namespace: str, kube_cluster: KubeCluster) -> AppSpec:
    kube_cluster.apply_rbac(_rbac_from_manifests(namespace))
    return _app(namespace)


@pytest.fixture
def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    yield store  # type: ignore[misc]
    store.close()


@pytest.fixture
async def service(app: AppSpec, store: Store, tmp_path: Path,
                  kube_cluster: KubeCluster) -> AsyncIterator[JobService]:
    service = _service(app, store, tmp_path / "data", kube_cluster)
    yield service
    await service.shutdown()


async def _final(service: JobService, run: Run) -> Run:
    async def probe() -> Run | None:
        latest = await service.get_run(run.id)
        return latest if latest.run_state.is_final else None
    final: Run = await eventually(probe, f"{run.label} to finish", timeout=TIMEOUT)
    return final


async def test_success_with_logs(service: JobService, kube_cluster: KubeCluster) -> None:
    kube_cluster.set_default_log(["hello from kwok", "second line"])
    run = (await service.trigger("ok", ACTOR)).run
    final = await _final(service, run)
    assert (final.state, final.exit_code) == ("succeeded", 0)
    attempts = (await service.detail(run.id)).attempts
    assert [(a.index, a.state, a.exit_code) for a in attempts] == [(1, "succeeded", 0)]
    lines = [line async for _, line in service.logs(run.id)]
    assert "hello from kwok" in " ".join(lines)


async def test_failure_with_retries(service: JobService) -> None:
    run = (await service.trigger("broken", ACTOR)).run
    final = await _final(service, run)
    assert final.state == "failed"
    assert final.exit_code == 3
    assert final.reason is not None and "backoff_limit 1" in final.reason
    attempts = (await service.detail(run.id)).attempts
    assert [(a.state, a.exit_code) for a in attempts] == [("failed", 3), ("failed", 3)]


async def test_time_limit(service: JobService) -> None:
    run = (await service.trigger("forever", ACTOR)).run
    final = await _final(service, run)
    assert (final.state, final.reason) == ("timed_out", "time limit of 3s reached")


async def test_cancel(service: JobService, namespace: str, kube_cluster: KubeCluster) -> None:
    run = (await service.trigger("five-seconds", ACTOR)).run

    async def attempt_started() -> bool:
        return bool((await service.detail(run.id)).attempts)
    await eventually(attempt_started, "the first attempt", timeout=TIMEOUT)
    await service.cancel(run.id, Actor.cli("carol"))
    final = await _final(service, run)
    assert (final.state, final.reason) == ("cancelled", "cancelled by carol")
    batch = client.BatchV1Api(kube_cluster.admin)

    async def job_gone() -> bool:
        jobs = batch.list_namespaced_job(namespace, label_selector=f"jobbot.dev/run-id={run.id}")
        return not jobs.items
    await eventually(job_gone, "the Job to be deleted", timeout=TIMEOUT)


async def test_parallel_completions(service: JobService) -> None:
    run = (await service.trigger("batch", ACTOR)).run
    final = await _final(service, run)
    assert final.state == "succeeded"
    attempts = (await service.detail(run.id)).attempts
    assert [a.state for a in attempts] == ["succeeded"] * 3


async def test_a_secret_printed_by_a_pod_is_masked(service: JobService, namespace: str,
                                                   kube_cluster: KubeCluster) -> None:
    # Read with the Role from manifests/ (get on secrets), as the jobbot ServiceAccount.
    client.CoreV1Api(kube_cluster.admin).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="db-credentials"),
        string_data={"DB_PASSWORD": DB_PASSWORD}))
    kube_cluster.set_default_log([f"DB_PASSWORD={DB_PASSWORD}", "done"])
    try:
        run = (await service.trigger("leaky", ACTOR)).run
        final = await _final(service, run)
    finally:
        kube_cluster.set_default_log(["hello from jobbot e2e"])
    assert final.state == "succeeded"
    log = "\n".join([line async for _, line in service.logs(run.id)])
    assert "DB_PASSWORD=********" in log
    assert DB_PASSWORD not in log


async def test_a_missing_secret_fails_the_run_before_its_job(service: JobService,
                                                            namespace: str) -> None:
    run = (await service.trigger("unsecured", ACTOR)).run
    final = await _final(service, run)
    assert final.state == "failed"
    assert final.reason == (f"could not start: Secret {namespace}/no-such-secret does not "
                            "exist, so the pod could not start: create it, or remove it from "
                            "the job's secrets")
    assert final.external_id is None


async def test_restart_adopts_the_running_job(app: AppSpec, store: Store, tmp_path: Path,
                                              kube_cluster: KubeCluster) -> None:
    first = _service(app, store, tmp_path / "data", kube_cluster)
    run = (await first.trigger("five-seconds", ACTOR)).run

    async def attempt_started() -> bool:
        return bool((await first.detail(run.id)).attempts)
    await eventually(attempt_started, "the first attempt", timeout=TIMEOUT)
    await first.shutdown("restart")
    second = _service(app, store, tmp_path / "data", kube_cluster)
    try:
        assert await second.reconcile() == 1
        final = await _final(second, run)
        assert final.state == "succeeded"
        assert len((await second.detail(run.id)).attempts) == 1
    finally:
        await second.shutdown()


def _dry_run(kube_cluster: KubeCluster, docs: list[dict[str, Any]]) -> list[str]:
    """Server-side apply `docs` as a dry run (creating their namespaces); the kinds applied."""
    core = client.CoreV1Api(kube_cluster.admin)
    existing = {ns.metadata.name for ns in core.list_namespace().items}
    applied = []
    for doc in docs:
        if doc["kind"] == "Namespace" and doc["metadata"]["name"] not in existing:
            # Namespaced objects can only be dry-run into a namespace that exists.
            utils.create_from_dict(kube_cluster.admin, doc)
            existing.add(doc["metadata"]["name"])
            continue
        if doc["kind"] == "Namespace":
            continue
        # Server-side apply, dry run: the apiserver validates and admits, stores nothing.
        utils.create_from_dict(kube_cluster.admin, doc, apply=True, dry_run="All",
                               namespace=doc["metadata"].get("namespace"))
        applied.append(doc["kind"])
    return applied


def test_manifests_apply_with_server_side_dry_run(kube_cluster: KubeCluster) -> None:
    script = ROOT / "scripts" / "ensure-kustomize.sh"
    kustomize = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                               check=True).stdout.strip()
    built = subprocess.run([kustomize, "build", str(ROOT / "manifests/overlays/example")],
                           capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    assert sorted(_dry_run(kube_cluster, docs)) == sorted([
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "Service", "Deployment",
        "PodDisruptionBudget"])


def test_chart_applies_with_server_side_dry_run(kube_cluster: KubeCluster) -> None:
    docs = helm_template("--set", "ingress.enabled=true", "--set", "ingress.tlsSecretName=tls")
    assert sorted(_dry_run(kube_cluster, docs)) == sorted([
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Service", "Deployment",
        "PodDisruptionBudget", "Ingress"])

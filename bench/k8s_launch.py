"""Benchmark: launching runs as Kubernetes Jobs against bare `create_namespaced_job` calls.

Against the real control plane of the e2e suite (etcd, kube-apiserver, controller-manager,
scheduler, kwok; built once and cached, see tests/e2e/README.md), or with `--fake` against
the fake API server of the tests. Triggers N runs one after another through JobService (SQLite
store, Kubernetes executor watching the namespace) and measures trigger -> Job created (when
`trigger()` returns, the create call has been answered); the baseline is N bare
`BatchV1Api.create_namespaced_job` calls in the same cluster, in the same run. Prints runs/s,
p50 and p99 and the ratio of the two. Goal: jobbot <= 1.5x the bare calls.

    .venv/bin/python -m bench.k8s_launch [--runs 500] [--fake]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client

from core.policy import Actor
from core.spec import parse_app
from core.store import Store
from tests.support.kube import api_for, kube_service


def _app(namespace: str):  # type: ignore[no-untyped-def]
    return parse_app(json.dumps({"app": "bench", "kubernetes": {"namespace": namespace},
                                 "jobs": [{"name": "noop", "image": "busybox:1.37",
                                           "command": ["true"], "ttl": 60}]}))


def _summary(label: str, latencies: list[float], total: float) -> tuple[float, float]:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    print(f"{label:<28} {len(ordered) / total:8.1f} runs/s   p50 {p50:7.2f} ms   "
          f"p99 {p99:7.2f} ms")
    return p50, len(ordered) / total


def _bare(api_client: client.ApiClient, namespace: str, runs: int) -> tuple[list[float], float]:
    batch = client.BatchV1Api(api_client)
    latencies = []
    started = time.perf_counter()
    for _ in range(runs):
        body = {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": f"bare-{uuid.uuid4().hex[:10]}", "namespace": namespace},
                "spec": {"ttlSecondsAfterFinished": 60, "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "job", "image": "busybox:1.37",
                                    "command": ["true"]}]}}}}
        t0 = time.perf_counter()
        batch.create_namespaced_job(namespace, body)
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - started


async def _jobbot(url_or_client: str | client.ApiClient, namespace: str,
                  runs: int) -> tuple[list[float], float]:
    from core.executors.k8s.api import KubeApi

    api = api_for(url_or_client) if isinstance(url_or_client, str) else KubeApi(url_or_client)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'jobbot.db'}")
        store.migrate()
        service = kube_service(_app(namespace), store, Path(tmp) / "data", api)
        actor = Actor.cli("bench")
        latencies = []
        started = time.perf_counter()
        for _ in range(runs):
            t0 = time.perf_counter()
            await service.trigger("noop", actor)
            latencies.append(time.perf_counter() - t0)
        total = time.perf_counter() - started
        await service.shutdown()
        store.close()
    return latencies, total


async def _with_fake(runs: int) -> tuple[list[float], float, list[float], float]:
    from tests.fakes.kubernetes import FakeKubernetes

    fake = FakeKubernetes()
    url = await fake.start()
    try:
        configuration = client.Configuration()
        configuration.host = url
        bare_client = client.ApiClient(configuration)
        bare, bare_total = await asyncio.to_thread(_bare, bare_client, "bench", runs)
        ours, ours_total = await _jobbot(url, "bench", runs)
    finally:
        await fake.stop()
    return bare, bare_total, ours, ours_total


def _with_cluster(runs: int) -> tuple[list[float], float, list[float], float]:
    from tests.e2e.cluster import Binaries, KubeCluster

    with tempfile.TemporaryDirectory() as tmp, KubeCluster(Binaries.build(), Path(tmp)) as cluster:
        cluster.create_namespace("bench-bare")
        cluster.create_namespace("bench")
        bare, bare_total = _bare(cluster.admin, "bench-bare", runs)
        ours, ours_total = asyncio.run(_jobbot(cluster.admin, "bench", runs))
    return bare, bare_total, ours, ours_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--fake", action="store_true",
                        help="use the fake API server instead of the real control plane")
    args = parser.parse_args()
    where = "the fake API server" if args.fake else "a real control plane (e2e cluster)"
    print(f"launching {args.runs} runs against {where}")
    if args.fake:
        bare, bare_total, ours, ours_total = asyncio.run(_with_fake(args.runs))
    else:
        bare, bare_total, ours, ours_total = _with_cluster(args.runs)
    bare_p50, bare_rate = _summary("bare create_namespaced_job", bare, bare_total)
    ours_p50, ours_rate = _summary("jobbot trigger -> Job", ours, ours_total)
    print(f"ratio p50 {ours_p50 / bare_p50:.2f}x   throughput {bare_rate / ours_rate:.2f}x "
          "(goal <= 1.5x)")


if __name__ == "__main__":
    main()

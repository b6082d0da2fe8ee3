"""A JobService on the Kubernetes executor, its client pointed at the fake API server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from core.catalog import Catalog
from core.events import Changes
from core.executors.k8s.api import KubeApi
from core.executors.k8s.retry import RetryPolicy
from core.executors.kubernetes import KubernetesExecutor
from core.logs import logs_for
from core.service import JobService
from core.spec import AppSpec
from core.store import Store

FAST_RETRIES = RetryPolicy(first_delay=0.01, max_delay=0.2, budget=3.0)


def api_for(url: str, policy: RetryPolicy = FAST_RETRIES) -> KubeApi:
    configuration = client.Configuration()
    configuration.host = url
    configuration.retries = False
    return KubeApi(client.ApiClient(configuration), policy)


def kube_service(app: AppSpec, store: Store, data_dir: Path, api: KubeApi) -> JobService:
    logs = logs_for(store, data_dir / "logs")
    catalog = Catalog([app])
    executor = KubernetesExecutor(api, logs, lambda name: catalog.app(name).namespace,
                                  job_of=lambda name, job: catalog.app(name).job(job),
                                  watch_timeout=5, log_drain=5.0)
    return JobService(catalog, store, executor, logs, changes=Changes())


async def eventually(probe: Callable[[], Awaitable[Any]], what: str,
                     timeout: float = 30.0) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + timeout
    value = None
    while loop.time() < ends:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")

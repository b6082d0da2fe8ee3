"""jobbot's view of the Kubernetes API: Jobs, pods, logs and Secrets as plain dicts, off the loop.

The official client is synchronous; every call runs in a thread through `retry.call_api`.
Responses are read as JSON (`_preload_content=False`), skipping the client's slow models.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from core.executors.k8s.retry import Call, RetryPolicy, call_api

Obj = dict[str, Any]


def make_api_client(kubeconfig: Path | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a pod (and no kubeconfig given), else a kubeconfig.

    Lookup order: the `kubeconfig` argument, then $KUBECONFIG / ~/.kube/config (the client's
    own rule), after in-cluster when $KUBERNETES_SERVICE_HOST is set and no file was named.
    """
    configuration = client.Configuration()
    if kubeconfig is None and _in_cluster():
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None,
                                context=context,
                                client_configuration=configuration)  # type: ignore[no-untyped-call]
    # Retries happen in retry.call_api only, where they are counted and logged.
    configuration.retries = False
    return client.ApiClient(configuration)


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and Path(
        "/var/run/secrets/kubernetes.io/serviceaccount/token").exists()


@dataclass(frozen=True)
class Created:
    """A Job create: the Job, and whether it already existed (409) and was adopted."""

    job: Obj
    adopted: bool


class KubeApi:
    """The handful of calls jobbot makes, each with its RBAC verb for error messages."""

    def __init__(self, api_client: client.ApiClient, policy: RetryPolicy | None = None) -> None:
        self.client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.policy = policy or RetryPolicy()

    async def create_job(self, namespace: str, body: Obj) -> Created:
        """Create, or adopt the Job of that name if it exists (a retried create after a timeout)."""
        name = body["metadata"]["name"]
        try:
            job = await call_api(
                lambda: _json(self.batch.create_namespaced_job(
                    namespace, cast(Any, body), _preload_content=False)),
                Call("create", "jobs", namespace), self.policy)
            return Created(job, adopted=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = await self.get_job(namespace, name)
        if existing is None:  # deleted between the 409 and the read: create again
            return await self.create_job(namespace, body)
        return Created(existing, adopted=True)

    async def get_job(self, namespace: str, name: str) -> Obj | None:
        try:
            return await call_api(
                lambda: _json(self.batch.read_namespaced_job(name, namespace,
                                                             _preload_content=False)),
                Call("get", "jobs", namespace), self.policy)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (in the background) its pods; False if it was already gone."""
        try:
            await call_api(
                lambda: self.batch.delete_namespaced_job(
                    name, namespace, propagation_policy="Background", _preload_content=False),
                Call("delete", "jobs", namespace), self.policy)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    async def read_secret(self, namespace: str, name: str) -> Obj | None:
        """A Secret (None if there is none); only ever read for masking, never kept or logged."""
        try:
            return await call_api(
                lambda: _json(self.core.read_namespaced_secret(name, namespace,
                                                               _preload_content=False)),
                Call("get", "secrets", namespace), self.policy)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create_secret(self, namespace: str, body: Obj) -> bool:
        """Create a Secret (a build's git token); False if one of that name exists already.
        The answer is not read: it would hold the value."""
        try:
            await call_api(
                lambda: _release(self.core.create_namespaced_secret(
                    namespace, cast(Any, body), _preload_content=False)),
                Call("create", "secrets", namespace), self.policy)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    async def delete_secret(self, namespace: str, name: str) -> bool:
        """Delete a Secret; False if it was already gone."""
        try:
            await call_api(
                lambda: _release(self.core.delete_namespaced_secret(
                    name, namespace, _preload_content=False)),
                Call("delete", "secrets", namespace), self.policy)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    async def list_jobs(self, namespace: str, selector: str) -> tuple[list[Obj], str]:
        body = await call_api(
            lambda: _json(self.batch.list_namespaced_job(namespace, label_selector=selector,
                                                         _preload_content=False)),
            Call("list", "jobs", namespace), self.policy)
        return list(body.get("items") or []), str(body["metadata"].get("resourceVersion", ""))

    async def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        body = await call_api(
            lambda: _json(self.core.list_namespaced_pod(namespace, label_selector=selector,
                                                        _preload_content=False)),
            Call("list", "pods", namespace), self.policy)
        return list(body.get("items") or [])

    async def open_log(self, namespace: str, pod: str, container: str, *, follow: bool,
                       timestamps: bool = False, since_seconds: int | None = None) -> Any:
        """The pod's log as a streaming urllib3 response (close it to stop following); with
        `timestamps`, each line starts with its RFC 3339 timestamp and a space."""
        extra: dict[str, Any] = {"timestamps": True} if timestamps else {}
        if since_seconds is not None:
            extra["since_seconds"] = since_seconds
        return await call_api(
            lambda: self.core.read_namespaced_pod_log(
                pod, namespace, container=container, follow=follow, _preload_content=False,
                **extra),
            Call("get", "pods/log", namespace), self.policy)

    def watch_jobs(self, namespace: str, selector: str, resource_version: str,
                   timeout_seconds: int) -> Any:
        """A blocking watch response (for JobWatch's thread); lines of JSON events."""
        return self.batch.list_namespaced_job(
            namespace, label_selector=selector, watch=True, resource_version=resource_version,
            allow_watch_bookmarks=True, timeout_seconds=timeout_seconds,
            _preload_content=False)


def _json(response: Any) -> Obj:
    try:
        data: Obj = json.loads(response.data)
        return data
    finally:
        response.release_conn()


def _release(response: Any) -> None:
    """Give an unread response's connection back to the pool."""
    response.release_conn()


def interrupt(response: Any) -> None:
    """Unblock a thread reading a streaming response (close() would wait for its lock)."""
    import socket

    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

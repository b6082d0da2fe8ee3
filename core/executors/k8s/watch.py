"""A list-then-watch of jobbot's Jobs in one namespace, in a thread, feeding an asyncio.Queue.

Resumes from the last resourceVersion after a dropped connection; lists again on 410 Gone, so
nothing that happened while the API was unreachable is missed (a re-list shows the end state).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from core.errors import ExecutorError
from core.executors.k8s.api import KubeApi, Obj, interrupt
from core.executors.k8s.retry import Call, wait_before_retry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchEvent:
    """ADDED, MODIFIED or DELETED with one Job; SYNC with every Job after a (re-)list."""

    kind: str
    job: Obj | None = None
    jobs: list[Obj] = field(default_factory=list)


class _Gone(Exception):
    """The resourceVersion is too old (HTTP 410): list again."""


class JobWatch:
    """One thread per namespace; `stop()` closes its connection so it ends promptly."""

    def __init__(self, api: KubeApi, namespace: str, selector: str,
                 queue: asyncio.Queue[WatchEvent], loop: asyncio.AbstractEventLoop, *,
                 timeout_seconds: int = 300) -> None:
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.queue = queue
        self.loop = loop
        self.timeout_seconds = timeout_seconds
        self.resource_version = ""
        self.synced = threading.Event()
        self._stopped = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch-jobs-{namespace}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        response = self._response
        if response is not None:
            interrupt(response)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _emit(self, event: WatchEvent) -> None:
        if not self._stopped.is_set():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                if not self.resource_version:
                    self._list()
                self._watch()
                failures = 0
            except _Gone:
                logger.info("watch of jobs in %s expired (410 Gone): listing again",
                            self.namespace)
                self.resource_version = ""
            except Exception as exc:  # noqa: BLE001  (classified: retried or logged, never lost)
                if self._stopped.is_set():
                    return
                call = Call("watch", "jobs", self.namespace)
                try:
                    delay = wait_before_retry(exc, call, self.api.policy, failures)
                except ExecutorError as refused:
                    logger.error("%s; retrying in %.0fs", refused, self.api.policy.max_delay)
                    delay = self.api.policy.max_delay
                except Exception:
                    logger.exception("watching jobs in %s failed", self.namespace)
                    delay = self.api.policy.max_delay
                failures += 1
                self._stopped.wait(delay)

    def _list(self) -> None:
        response: Any = self.api.batch.list_namespaced_job(
            self.namespace, label_selector=self.selector, _preload_content=False)
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        self.resource_version = str(body["metadata"].get("resourceVersion", ""))
        self._emit(WatchEvent("SYNC", jobs=list(body.get("items") or [])))
        self.synced.set()

    def _watch(self) -> None:
        try:
            response = self.api.watch_jobs(self.namespace, self.selector, self.resource_version,
                                           self.timeout_seconds)
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone() from exc
            raise
        self._response = response
        try:
            for line in response:
                if self._stopped.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ApiException(status=obj.get("code") or 500,
                                       reason=obj.get("message") or "watch error")
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.resource_version = str(version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._emit(WatchEvent(kind, job=obj))
        finally:
            self._response = None
            response.release_conn()

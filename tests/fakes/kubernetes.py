"""A fake Kubernetes API server over HTTP: Jobs, pods, logs, Secrets and watches in the real
REST shapes.

Only what jobbot calls is served. Tests drive pods and Job conditions from Python (the fake plays
the Job controller and kubelet) and inject faults: any status (429 with Retry-After, 5xx, 403)
for the next N matching requests, dropped connections, and 410 Gone for old resourceVersions.
Several jobbot processes may share one fake: each call is recorded with its bearer token and
time, and each pod log stream with when it opened and closed, so a test can tell them apart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

Obj = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}, status=code)


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality (`a=b`) and existence (`a`) terms, comma-separated, as jobbot uses them."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class Fault:
    method: str
    path_part: str
    status: int
    count: int
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = "InternalError"


@dataclass
class _Pod:
    obj: Obj
    log: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Bumped on every change; each log stream waits for a version it has not seen, so one
    # stream clearing `changed` never hides a change from another.
    version: int = 0

    # When each line of `log` was written (as the kubelet keeps it), in nanoseconds.
    written: list[int] = field(default_factory=list)

    def add(self, lines: tuple[str, ...] | list[str], at: int | None = None) -> None:
        now = at if at is not None else time.time_ns()
        self.log.extend(lines)
        self.written.extend([now] * len(lines))
        self.version += 1


@dataclass
class KubeCall:
    """One request as the API server saw it: who sent it (the bearer token) and when."""

    method: str
    path: str
    query: dict[str, str]
    token: str
    at: float = field(default_factory=time.time)


@dataclass
class LogStream:
    """A pod log request: who read it, and while when (`closed` is None while it is open)."""

    namespace: str
    pod: str
    token: str
    follow: bool
    opened: float = field(default_factory=time.time)
    closed: float | None = None


def stamp(nanoseconds: int) -> str:
    """A timestamp as the kubelet writes it: RFC 3339 in UTC, trailing zeros trimmed."""
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    whole = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{whole}.{digits}Z" if digits else f"{whole}Z"


class FakeKubernetes:
    """Holds Jobs and pods per namespace; `requests` records (method, path, query) seen."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], Obj] = {}
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.secrets: dict[tuple[str, str], Obj] = {}
        # Every Secret created through the API, as stored (for tests to look at afterwards).
        self.created_secrets: list[Obj] = []
        self.events: list[tuple[int, str, Obj]] = []  # (resourceVersion, type, job)
        self.oldest_watchable = 0
        self.version = 100
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.calls: list[KubeCall] = []
        # Who created each Job (the bearer token of the POST), by (namespace, name).
        self.creators: dict[tuple[str, str], str] = {}
        self.log_streams: list[LogStream] = []
        self.drop_watches = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.on_create: Callable[[Obj], None] | None = None

    # -- server ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._faults_middleware])
        jobs = "/apis/batch/v1/namespaces/{ns}/jobs"
        app.router.add_post(jobs, self._create_job)
        app.router.add_get(jobs, self._list_jobs)
        app.router.add_get(jobs + "/{name}", self._get_job)
        app.router.add_delete(jobs + "/{name}", self._delete_job)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._list_pods)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", self._pod_log)
        app.router.add_get("/api/v1/namespaces/{ns}/secrets/{name}", self._get_secret)
        app.router.add_post("/api/v1/namespaces/{ns}/secrets", self._create_secret)
        app.router.add_delete("/api/v1/namespaces/{ns}/secrets/{name}", self._delete_secret)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self.drop_watches.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _faults_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        auth = request.headers.get("Authorization", "")
        self.calls.append(KubeCall(request.method, request.path, dict(request.query),
                                   auth.removeprefix("Bearer ")))
        for fault in self.faults:
            wants_watch = fault.path_part.endswith("?watch")
            part = fault.path_part.removesuffix("?watch")
            if fault.count > 0 and request.method == fault.method and part in request.path:
                if wants_watch != (request.query.get("watch") == "true"):
                    continue
                fault.count -= 1
                if fault.status == 0:  # a connection reset
                    assert request.transport is not None
                    request.transport.abort()
                    return web.Response(status=500)
                response = _status(fault.status, fault.reason, f"injected {fault.status}")
                response.headers.update(fault.headers)
                return response
        result: web.StreamResponse = await handler(request)
        return result

    def fail(self, method: str, path_part: str, status: int, *, count: int = 1,
             headers: dict[str, str] | None = None, reason: str = "InternalError") -> Fault:
        """Answer the next `count` matching requests with `status` (0: reset the connection)."""
        fault = Fault(method, path_part, status, count, headers or {}, reason)
        self.faults.append(fault)
        return fault

    # -- state changes (what the Job controller and kubelet would do) ---------------------

    def _bump(self, obj: Obj) -> int:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return self.version

    async def _event(self, kind: str, job: Obj) -> None:
        version = self._bump(job)
        self.events.append((version, kind, json.loads(json.dumps(job))))
        async with self._changed:
            self._changed.notify_all()

    def expire_history(self) -> None:
        """Compact the event history: watches from older resourceVersions get 410 Gone."""
        self.version += 1
        self.oldest_watchable = self.version
        self.drop_watches.set()

    def job(self, namespace: str, name: str) -> Obj:
        return self.jobs[(namespace, name)]

    async def add_pod(self, namespace: str, job_name: str, *, phase: str = "Running",
                      log: list[str] | None = None) -> str:
        job = self.job(namespace, job_name)
        index = sum(1 for (ns, _), p in self.pods.items() if ns == namespace and
                    p.obj["metadata"]["labels"].get("job-name") == job_name)
        name = f"{job_name}-{index}{uuid.uuid4().hex[:4]}"
        labels = dict(job["spec"]["template"]["metadata"].get("labels") or {})
        labels.update({"batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
                       "job-name": job_name})
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "namespace": namespace, "labels": labels, "uid": str(uuid.uuid4()),
            "creationTimestamp": f"{_now()[:-1]}.{index:06d}Z", "resourceVersion": "1"},
            "spec": job["spec"]["template"]["spec"], "status": {"phase": "Pending"}}
        self.pods[(namespace, name)] = _Pod(pod)
        self.pods[(namespace, name)].add(list(log or []))
        await self.set_pod(namespace, name, phase)
        return name

    async def set_pod(self, namespace: str, name: str, phase: str,
                      exit_code: int | None = None, reason: str | None = None) -> None:
        """Move a pod to a phase and update its Job's counts (which emits a MODIFIED event)."""
        entry = self.pods[(namespace, name)]
        status: Obj = {"phase": phase}
        container = entry.obj["spec"]["containers"][0]["name"]
        if phase == "Running":
            status["containerStatuses"] = [{"name": container, "state": {"running": {}}}]
        elif phase in ("Succeeded", "Failed"):
            code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
            status["containerStatuses"] = [{"name": container, "state": {"terminated": {
                "exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error")}}}]
        entry.obj["status"] = status
        entry.version += 1
        entry.changed.set()
        job_name = entry.obj["metadata"]["labels"]["job-name"]
        if (namespace, job_name) in self.jobs:
            job = self.job(namespace, job_name)
            counts = {"Running": 0, "Pending": 0, "Succeeded": 0, "Failed": 0}
            for (ns, _), pod in self.pods.items():
                if ns == namespace and pod.obj["metadata"]["labels"]["job-name"] == job_name:
                    counts[pod.obj["status"]["phase"]] += 1
            job["status"].update({"active": counts["Running"] + counts["Pending"],
                                  "succeeded": counts["Succeeded"], "failed": counts["Failed"]})
            await self._event("MODIFIED", job)

    async def append_log(self, namespace: str, pod: str, *lines: str,
                         at: int | None = None) -> None:
        """Lines the pod writes, all at time `at` (nanoseconds since the epoch; default now)."""
        entry = self.pods[(namespace, pod)]
        entry.add(lines, at)
        entry.changed.set()

    def add_secret(self, namespace: str, name: str, string_data: dict[str, str], *,
                   binary: dict[str, bytes] | None = None, kind: str = "Opaque",
                   metadata: Obj | None = None) -> Obj:
        """Store a Secret as the API server does with a write's `stringData`: merged into
        `data`, base64-encoded; `stringData` itself is never returned by a read."""
        data = {k: base64.b64encode(v.encode()).decode() for k, v in string_data.items()}
        data.update({k: base64.b64encode(v).decode() for k, v in (binary or {}).items()})
        self.version += 1
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": kind, "data": data,
            "metadata": {**(metadata or {}), "name": name, "namespace": namespace,
                         "uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                         "resourceVersion": str(self.version)}}
        self.secrets[(namespace, name)] = secret
        return secret

    def owned_secrets(self, namespace: str, job_name: str) -> list[Obj]:
        """The Secrets whose ownerReferences name the Job (by its uid, as the API does)."""
        uid = self.job(namespace, job_name)["metadata"]["uid"]
        return [s for (ns, _), s in self.secrets.items() if ns == namespace and any(
            ref.get("uid") == uid for ref in s["metadata"].get("ownerReferences") or [])]

    async def finish_job(self, namespace: str, name: str, condition: str,
                         reason: str = "", message: str = "") -> None:
        """Add a terminal condition (Complete, Failed, FailureTarget, SuccessCriteriaMet)."""
        job = self.job(namespace, name)
        conditions = job["status"].setdefault("conditions", [])
        conditions.append({"type": condition, "status": "True", "reason": reason,
                           "message": message, "lastTransitionTime": _now()})
        await self._event("MODIFIED", job)

    async def remove_job(self, namespace: str, name: str) -> None:
        """Delete a Job as its TTL controller or a person with kubectl would."""
        job = self.jobs.pop((namespace, name))
        for key in [k for k, p in self.pods.items()
                    if k[0] == namespace and p.obj["metadata"]["labels"]["job-name"] == name]:
            gone = self.pods.pop(key)
            gone.version += 1
            gone.changed.set()
        # The garbage collector: what the Job owned goes with it.
        uid = job["metadata"]["uid"]
        for key in [k for k, s in self.secrets.items() if k[0] == namespace and any(
                ref.get("uid") == uid for ref in s["metadata"].get("ownerReferences") or [])]:
            del self.secrets[key]
        await self._event("DELETED", job)

    # -- handlers -------------------------------------------------------------------------

    async def _create_job(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        body = await request.json()
        name = body["metadata"]["name"]
        if (namespace, name) in self.jobs:
            return _status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
        job = json.loads(json.dumps(body))
        job["metadata"].update({"namespace": namespace, "uid": str(uuid.uuid4()),
                                "creationTimestamp": _now(), "generation": 1})
        job["status"] = {}
        self.jobs[(namespace, name)] = job
        self.creators[(namespace, name)] = request.headers.get(
            "Authorization", "").removeprefix("Bearer ")
        await self._event("ADDED", job)
        if self.on_create is not None:
            self.on_create(job)
        return web.json_response(job, status=201)

    async def _get_job(self, request: web.Request) -> web.Response:
        job = self.jobs.get((request.match_info["ns"], request.match_info["name"]))
        if job is None:
            name = request.match_info["name"]
            return _status(404, "NotFound", f'jobs.batch "{name}" not found')
        return web.json_response(job)

    async def _delete_job(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["ns"], request.match_info["name"]
        if (namespace, name) not in self.jobs:
            return _status(404, "NotFound", f'jobs.batch "{name}" not found')
        await self.remove_job(namespace, name)
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                  "details": {"name": name, "group": "batch", "kind": "jobs"}})

    async def _list_jobs(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["ns"]
        selector = request.query.get("labelSelector", "")
        if request.query.get("watch") == "true":
            return await self._watch_jobs(request, namespace, selector)
        items = [j for (ns, _), j in self.jobs.items()
                 if ns == namespace and matches(selector, j["metadata"].get("labels") or {})]
        return web.json_response({"kind": "JobList", "apiVersion": "batch/v1",
                                  "metadata": {"resourceVersion": str(self.version)},
                                  "items": items})

    async def _watch_jobs(self, request: web.Request, namespace: str,
                          selector: str) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or self.version)
        timeout = float(request.query.get("timeoutSeconds") or 300)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if since < self.oldest_watchable:
            await response.write(json.dumps({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                "reason": "Expired", "message": "too old resource version"}}).encode() + b"\n")
            return response
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        drop = self.drop_watches
        while loop.time() < ends and not drop.is_set():
            for version, kind, job in [e for e in self.events if e[0] > since]:
                since = version
                if job["metadata"].get("namespace") != namespace or not matches(
                        selector, job["metadata"].get("labels") or {}):
                    continue
                try:
                    await response.write(
                        json.dumps({"type": kind, "object": job}).encode() + b"\n")
                except ConnectionResetError:  # the client went away (jobbot stopped watching)
                    return response
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.2)
        if drop.is_set():
            self.drop_watches = asyncio.Event()
            if request.transport is not None:  # None: the client already went away
                request.transport.abort()
        return response

    async def _get_secret(self, request: web.Request) -> web.Response:
        secret = self.secrets.get((request.match_info["ns"], request.match_info["name"]))
        if secret is None:
            name = request.match_info["name"]
            return _status(404, "NotFound", f'secrets "{name}" not found')
        return web.json_response(secret)

    async def _create_secret(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        body = await request.json()
        name = body["metadata"]["name"]
        if (namespace, name) in self.secrets:
            return _status(409, "AlreadyExists", f'secrets "{name}" already exists')
        binary = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
        secret = self.add_secret(namespace, name, dict(body.get("stringData") or {}),
                                 binary=binary, kind=body.get("type") or "Opaque",
                                 metadata=body["metadata"])
        self.created_secrets.append(json.loads(json.dumps(secret)))
        return web.json_response(secret, status=201)

    async def _delete_secret(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["ns"], request.match_info["name"]
        if self.secrets.pop((namespace, name), None) is None:
            return _status(404, "NotFound", f'secrets "{name}" not found')
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                  "details": {"name": name, "kind": "secrets"}})

    async def _list_pods(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        selector = request.query.get("labelSelector", "")
        items = [p.obj for (ns, _), p in self.pods.items()
                 if ns == namespace and matches(selector, p.obj["metadata"]["labels"])]
        return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(self.version)},
                                  "items": items})

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["ns"], request.match_info["name"]
        entry = self.pods.get((namespace, name))
        if entry is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        follow = request.query.get("follow") == "true"
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        stream = LogStream(namespace, name, token, follow)
        self.log_streams.append(stream)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        try:
            await response.prepare(request)
            # As the kubelet: `timestamps` starts each line with its time, `sinceSeconds` leaves
            # out lines written before that many seconds ago (whole seconds).
            timestamps = request.query.get("timestamps") == "true"
            since = request.query.get("sinceSeconds")
            start = 0
            if since is not None:
                start = (time.time_ns() // 1_000_000_000 - int(since)) * 1_000_000_000
            sent = 0
            while True:
                seen = entry.version
                try:
                    for line, at in zip(entry.log[sent:], entry.written[sent:], strict=True):
                        if at >= start:
                            prefix = f"{stamp(at)} " if timestamps else ""
                            await response.write(f"{prefix}{line}\n".encode())
                except ConnectionResetError:  # the reader went away (or died)
                    return response
                sent = len(entry.log)
                gone = (namespace, name) not in self.pods
                if (not follow or gone
                        or entry.obj["status"]["phase"] in ("Succeeded", "Failed")):
                    return response
                while entry.version == seen:
                    entry.changed.clear()
                    if entry.version != seen:
                        break
                    await entry.changed.wait()
        finally:
            stream.closed = time.time()

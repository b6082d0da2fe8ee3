"""Builds as Kubernetes Jobs: rootless BuildKit pushes `<image>:<sha>`; state from the watch.

A build's Job name is derived from build and sha, so a repeated push of the same sha adopts
the Job that is already building instead of starting a second one. Its pods' logs are masked
with the credentials of its `registry_secret`, read before the Job is created.
"""

from __future__ import annotations

import asyncio
import logging

from core.builds import BuildOutcome, BuildRequest
from core.errors import ExecutorError
from core.executors.k8s.api import KubeApi, Obj
from core.executors.k8s.manifests import (
    CONTROLLER_UID,
    LABEL_BUILD,
    SELECTOR,
    build_manifest,
)
from core.executors.k8s.secrets import secret_values
from core.executors.k8s.status import job_outcome
from core.executors.k8s.watch import JobWatch, WatchEvent
from core.logs import LogStore
from core.masking import Masker, secret_forms
from core.models import RunState

logger = logging.getLogger(__name__)
BUILD_CONTAINER = "buildkit"


class KubernetesBuilder:
    """Creates (or adopts) the build Job, waits for its outcome, keeps its pods' logs."""

    name = "kubernetes"

    def __init__(self, api: KubeApi, logs: LogStore, *, watch_timeout: int = 300,
                 git_base_url: str = "https://github.com") -> None:
        self.api = api
        self._logs = logs
        self._watch_timeout = watch_timeout
        self._git_base_url = git_base_url.rstrip("/")

    def git_url(self, repository: str) -> str:
        """BuildKit's git context: "owner/name" from GitHub becomes a clone URL."""
        if "://" in repository or repository.startswith("git@"):
            return repository
        return f"{self._git_base_url}/{repository}.git"

    async def build(self, request: BuildRequest) -> BuildOutcome:
        manifest = build_manifest(request.app, request.build, sha=request.sha,
                                  repository=self.git_url(request.repository), ref=request.ref,
                                  actor=request.actor)
        namespace, name = request.app.namespace, manifest["metadata"]["name"]
        log_key = f"build-{name}"
        registry = [request.build.registry_secret] if request.build.registry_secret else []
        try:
            values = await secret_values(self.api, namespace, registry,
                                         named_by="the build's registry_secret")
        except ExecutorError as exc:
            return BuildOutcome(RunState.FAILED, None, f"could not start the build: {exc}")
        masker = Masker(secret_forms(values))
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        watch = JobWatch(self.api, namespace, f"{SELECTOR},{LABEL_BUILD}={request.build.name}",
                         queue, asyncio.get_running_loop(), timeout_seconds=self._watch_timeout)
        watch.start()
        try:
            created = await self.api.create_job(namespace, manifest)
            if created.adopted:
                logger.info("build Job %s/%s already existed: following it", namespace, name)
            job = created.job
            while (outcome := job_outcome(job)) is None:
                event = await queue.get()
                mine = [j for j in ([event.job] if event.job else event.jobs)
                        if j["metadata"]["name"] == name]
                if event.kind == "DELETED" and mine:
                    await self._keep_logs(namespace, job, log_key, masker)
                    return BuildOutcome(RunState.FAILED, request.image,
                                        f"build Job {namespace}/{name} was deleted", log_key)
                if event.kind == "SYNC" and not mine:
                    # A list may predate our create; ask for the Job itself before giving up.
                    current = await self.api.get_job(namespace, name)
                    if current is None:
                        return BuildOutcome(RunState.FAILED, request.image,
                                            f"build Job {namespace}/{name} vanished", log_key)
                    mine = [current]
                if mine:
                    job = mine[0]
            await self._keep_logs(namespace, job, log_key, masker)
            reason = masker.mask(outcome.reason) if outcome.reason else None
            return BuildOutcome(outcome.state, request.image, reason, log_key)
        finally:
            watch.stop()

    async def _keep_logs(self, namespace: str, job: Obj, log_key: str, masker: Masker) -> None:
        """Copy each build pod's log into the LogStore, so it outlives the Job's TTL."""
        uid = job["metadata"].get("uid")
        if not uid:
            return
        pods = await self.api.list_pods(namespace, f"{CONTROLLER_UID}={uid}")
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        for index, pod in enumerate(pods, 1):
            writer = await self._logs.writer(log_key, index, masker)
            try:
                response = await self.api.open_log(namespace, pod["metadata"]["name"],
                                                   BUILD_CONTAINER, follow=False)
                data = await asyncio.to_thread(_read_all, response)
                writer.write(data)
            finally:
                await writer.close()


def _read_all(response: object) -> bytes:
    try:
        return bytes(getattr(response, "data", b""))
    finally:
        getattr(response, "release_conn")()  # noqa: B009

"""Builds as Kubernetes Jobs: rootless BuildKit pushes `<image>:<sha>`; state from the watch.

A build's Job name is derived from build and sha, so a repeated push of the same sha adopts
the Job that is already building instead of starting a second one; a new request for a build
whose Job failed replaces that Job. Its pods' logs are masked with the credentials of its
`registry_secret`, read before the Job is created, and with its git token.

A build that clones with credentials gets a fresh token, limited to its repository and to
reading it, in a Secret owned by its Job: the Job is created first, then the Secret with the
Job's uid as owner, so no Secret is ever left without an owner to take it away. The pod waits
for the Secret to mount it. The Secret is deleted as soon as the build ends, however it ends.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from kubernetes.client.exceptions import ApiException

from core.builds import BuildCredentials, BuildOutcome, BuildRequest
from core.errors import ExecutorError, JobbotError
from core.executors.k8s.api import KubeApi, Obj
from core.executors.k8s.manifests import (
    CONTROLLER_UID,
    LABEL_BUILD,
    SELECTOR,
    build_manifest,
    git_secret_manifest,
    git_secret_name,
)
from core.executors.k8s.secrets import decoded_values, secret_values
from core.executors.k8s.status import job_outcome
from core.executors.k8s.watch import JobWatch, WatchEvent
from core.logs import LogStore
from core.masking import Masker, secret_forms
from core.models import RunState

logger = logging.getLogger(__name__)
BUILD_CONTAINER = "buildkit"
# How long a failed build's Job may take to go before its replacement is created.
REPLACE_TIMEOUT = 30.0


class KubernetesBuilder:
    """Creates (or adopts) the build Job, waits for its outcome, keeps its pods' logs."""

    name = "kubernetes"

    def __init__(self, api: KubeApi, logs: LogStore, *, watch_timeout: int = 300,
                 git_base_url: str = "https://github.com",
                 credentials: BuildCredentials | None = None) -> None:
        self.api = api
        self._logs = logs
        self._watch_timeout = watch_timeout
        self._git_base_url = git_base_url.rstrip("/")
        # Set by the composition root once the front end that issues tokens exists.
        self.credentials = credentials

    def git_url(self, repository: str) -> str:
        """BuildKit's git context: "owner/name" from GitHub becomes a clone URL."""
        if "://" in repository or repository.startswith("git@"):
            return repository
        return f"{self._git_base_url}/{repository}.git"

    @property
    def git_host(self) -> str:
        """The host BuildKit's git source matches its `GIT_AUTH_TOKEN.<host>` secret against."""
        return urlsplit(self._git_base_url).netloc.rpartition("@")[2] or "github.com"

    def _credentials_for(self, request: BuildRequest) -> BuildCredentials | None:
        credentials = self.credentials
        return credentials if credentials is not None and credentials.covers(request) else None

    async def build(self, request: BuildRequest) -> BuildOutcome:
        credentials = self._credentials_for(request)
        manifest = build_manifest(request.app, request.build, sha=request.sha,
                                  repository=self.git_url(request.repository), ref=request.ref,
                                  actor=request.actor,
                                  git_host=self.git_host if credentials else None)
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
            job = await self._job(namespace, manifest, request)
            if credentials is not None:
                try:
                    tokens = await self._git_secret(credentials, request, job)
                except (JobbotError, ApiException) as exc:
                    await self._drop_job(namespace, name)
                    why = exc if isinstance(exc, JobbotError) else f"HTTP {exc.status}"
                    return BuildOutcome(RunState.FAILED, None,
                                        masker.mask(f"could not give the build its git "
                                                    f"credentials: {why}"))
                masker = Masker(secret_forms((*values, *tokens)))
            uid = job["metadata"].get("uid")
            while (outcome := job_outcome(job)) is None:
                event = await queue.get()
                # By uid too: a failed Job this build replaced sends its own events.
                mine = [j for j in ([event.job] if event.job else event.jobs)
                        if j["metadata"]["name"] == name and j["metadata"].get("uid") == uid]
                if event.kind == "DELETED" and mine:
                    await self._keep_logs(namespace, job, log_key, masker)
                    return BuildOutcome(RunState.FAILED, request.image,
                                        f"build Job {namespace}/{name} was deleted", log_key)
                if event.kind == "SYNC" and not mine:
                    # A list may predate our create; ask for the Job itself before giving up.
                    current = await self.api.get_job(namespace, name)
                    if current is None or current["metadata"].get("uid") != uid:
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
            if credentials is not None:
                await self._drop_secret(namespace, git_secret_name(name))

    async def _job(self, namespace: str, manifest: Obj, request: BuildRequest) -> Obj:
        """The build's Job: created, or adopted; a failed one is replaced unless the build is
        taken up again after a restart (then its outcome is the build's)."""
        name = manifest["metadata"]["name"]
        created = await self.api.create_job(namespace, manifest)
        if not created.adopted:
            return created.job
        outcome = job_outcome(created.job)
        if outcome is None or outcome.state is RunState.SUCCEEDED or request.resumed:
            logger.info("build Job %s/%s already existed: following it", namespace, name)
            return created.job
        logger.info("build Job %s/%s failed before: replacing it", namespace, name)
        await self.api.delete_job(namespace, name)
        loop = asyncio.get_running_loop()
        ends = loop.time() + REPLACE_TIMEOUT
        while await self.api.get_job(namespace, name) is not None:
            if loop.time() > ends:
                raise ExecutorError(f"build Job {namespace}/{name} failed before and is not "
                                    f"gone {REPLACE_TIMEOUT:.0f}s after its deletion")
            await asyncio.sleep(0.5)
        return (await self.api.create_job(namespace, manifest)).job

    async def _git_secret(self, credentials: BuildCredentials, request: BuildRequest,
                          job: Obj) -> list[str]:
        """Make sure the Job's pods get a git token, through a Secret the Job owns; the
        token values to mask in its logs. A Job found finished gets none (nothing clones any
        more); one found running keeps the Secret its pods mount, if it is there."""
        meta = job["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        existing = await self.api.read_secret(namespace, git_secret_name(name))
        if existing is not None and _owned_by(existing, uid):
            return decoded_values(existing)
        if existing is not None:  # left by an earlier Job of that name: not this one's
            await self.api.delete_secret(namespace, git_secret_name(name))
        if job_outcome(job) is not None:
            return []
        token = await credentials.token(request)
        if not await self.api.create_secret(namespace, git_secret_manifest(job, token)):
            raise ExecutorError(f"Secret {namespace}/{git_secret_name(name)} appeared while "
                                "jobbot was creating it")
        return [token]

    async def _drop_job(self, namespace: str, name: str) -> None:
        """Delete a build Job that cannot clone (its pod would wait for its Secret)."""
        try:
            await self.api.delete_job(namespace, name)
        except (ExecutorError, ApiException) as exc:
            logger.warning("could not delete build Job %s/%s: %s", namespace, name, exc)

    async def _drop_secret(self, namespace: str, name: str) -> None:
        """Delete a build's git Secret when the build ends; its owner Job would take it too,
        but only once the Job itself goes (its TTL)."""
        try:
            if await self.api.delete_secret(namespace, name):
                logger.info("deleted the git credentials of build Job %s/%s", namespace,
                            name.removesuffix("-git"))
        except (ExecutorError, ApiException) as exc:
            logger.warning("could not delete Secret %s/%s (its Job deletes it when it goes): "
                           "%s", namespace, name, exc)

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


def _owned_by(obj: Obj, uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)

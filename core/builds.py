"""Builds: make the code of one sha runnable; the Builder protocol and its types.

The GitHub App calls a Builder on pushes to a build's branches. On Kubernetes the builder is
`core.executors.k8s.builder.KubernetesBuilder` (a rootless BuildKit Job pushing
`<image>:<sha>`); with the local executor it is `core.builds_local.LocalBuilder` (a checkout
of the repository's tarball at that sha, where `image_from_build` jobs then run).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from core.errors import NotFound
from core.models import Run, RunState
from core.service import JobService
from core.spec import AppSpec, BuildSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildRequest:
    """Build `build` of `app` from `repository` at `sha` (pushed to `ref`).

    `repository` is "owner/name" from GitHub; the Kubernetes builder hands it to BuildKit as
    its git context, so there it must be a URL BuildKit can fetch. `origin` is the build run's
    origin, as its front end recorded it (which installation, pull request, fork).
    `resumed` is set for a build taken up again after a restart: a finished build Job found
    then is its outcome, while any other request for a failed one builds again.
    """

    app: AppSpec
    build: BuildSpec
    sha: str
    ref: str | None
    repository: str
    actor: str = "jobbot"
    origin: Mapping[str, Any] = field(default_factory=dict)
    resumed: bool = False

    @property
    def image(self) -> str:
        return f"{self.build.image}:{self.sha}"


@dataclass(frozen=True)
class BuildOutcome:
    """How a build ended: succeeded (image pushed), failed or timed_out, and why."""

    state: RunState
    # The image reference, or for the local builder the checkout's path; None if it failed.
    image: str | None = None
    reason: str | None = None
    # Where its log is kept: LogStore key and attempts.
    log_key: str | None = None


class BuildCredentials(Protocol):
    """Short-lived read access to a build's repository, from the front end that knows it (the
    GitHub App: an installation token limited to the one repository and `contents: read`)."""

    def covers(self, request: BuildRequest) -> bool:
        """Whether the build gets a token at all (never a fork's pull request); no I/O."""
        ...

    async def token(self, request: BuildRequest) -> str:
        """A new token for this build; JobbotError saying why there is none."""
        ...


@runtime_checkable
class TakesCredentials(Protocol):
    """A builder that clones with credentials once it is given where to get them."""

    credentials: BuildCredentials | None


class Builder(Protocol):
    """Builds and waits for the build; the outcome is final."""

    name: str

    async def build(self, request: BuildRequest) -> BuildOutcome: ...


async def resume_builds(service: JobService, builder: Builder | None) -> list[asyncio.Task[None]]:
    """Builds left queued or running by a jobbot process that stopped: build them again and
    record the outcome, as executors reconcile their runs at start-up. Builders are idempotent
    per sha (the Kubernetes builder adopts the build's Job, the local one reuses a finished
    checkout), so a push handled again after the restart finds the build's outcome."""
    tasks = []
    me = str(service.owner)
    live = await service.replica.liveness()
    for run in await asyncio.to_thread(service.store.unfinished_runs, "build"):
        if run.owner == me or not live.gone(run.owner):
            continue  # this process, or a live one that still drives it
        if not await asyncio.to_thread(service.store.claim_run, run.id, run.owner, me):
            continue  # another replica resumes it
        tasks.append(asyncio.create_task(_resume(service, builder, run),
                                         name=f"resume-build-{run.id}"))
    return tasks


async def _resume(service: JobService, builder: Builder | None, run: Run) -> None:
    extra = {"run_id": run.id}
    repository = run.origin.get("repository")
    try:
        spec = service.catalog.app(run.app)
        build = spec.build(run.job)
    except NotFound as exc:
        await service.finish_build(run.id, RunState.FAILED, image=None,
                                   reason=f"jobbot restarted during the build, which is no "
                                          f"longer defined: {exc}")
        return
    if builder is None or not isinstance(repository, str) or not run.sha:
        why = "no builder is configured" if builder is None else "its repository is unknown"
        await service.finish_build(run.id, RunState.FAILED, image=None,
                                   reason=f"jobbot restarted during the build and {why}")
        return
    logger.info("build %s of %s was left %s by a stopped jobbot: building again", run.job,
                run.sha[:7], run.state, extra=extra)
    if run.state == RunState.QUEUED.value:
        await service.run_started(run.id, external_id=builder.name)
    try:
        outcome = await builder.build(BuildRequest(spec, build, run.sha, run.ref, repository,
                                                   actor=run.actor, origin=dict(run.origin),
                                                   resumed=True))
    except Exception as exc:
        logger.exception("resuming build %s failed", run.id, extra=extra)
        outcome = BuildOutcome(RunState.FAILED, None, f"resuming after a restart failed: {exc}")
    await service.finish_build(run.id, outcome.state, image=outcome.image,
                               reason=outcome.reason)

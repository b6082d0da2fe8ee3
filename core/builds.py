"""Builds: make the code of one sha runnable; the Builder protocol and its types.

The GitHub App calls a Builder on pushes to a build's branches. On Kubernetes the builder is
`core.executors.k8s.builder.KubernetesBuilder` (a rootless BuildKit Job pushing
`<image>:<sha>`); with the local executor it is `core.builds_local.LocalBuilder` (a checkout
of the repository's tarball at that sha, where `image_from_build` jobs then run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.models import RunState
from core.spec import AppSpec, BuildSpec


@dataclass(frozen=True)
class BuildRequest:
    """Build `build` of `app` from `repository` at `sha` (pushed to `ref`).

    `repository` is "owner/name" from GitHub; the Kubernetes builder hands it to BuildKit as
    its git context, so there it must be a URL BuildKit can fetch.
    """

    app: AppSpec
    build: BuildSpec
    sha: str
    ref: str | None
    repository: str
    actor: str = "jobbot"

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


class Builder(Protocol):
    """Builds and waits for the build; the outcome is final."""

    name: str

    async def build(self, request: BuildRequest) -> BuildOutcome: ...

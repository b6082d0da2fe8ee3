"""Builds: make the code of one sha runnable as `<image>:<sha>`; the Builder protocol and its types.

The GitHub App calls a Builder on pushes to a build's branches; on Kubernetes the builder is
`core.executors.k8s.builder.KubernetesBuilder` (a rootless BuildKit Job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.models import RunState
from core.spec import AppSpec, BuildSpec


@dataclass(frozen=True)
class BuildRequest:
    """Build `build` of `app` from `repository` (a git URL) at `sha` (pushed to `ref`)."""

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
    image: str
    reason: str | None = None
    # Where its log is kept: LogStore key and attempts.
    log_key: str | None = None


class Builder(Protocol):
    """Builds an image and waits for it; the outcome is final."""

    async def build(self, request: BuildRequest) -> BuildOutcome: ...

"""Builds: make the code of one sha runnable (an image, or a local checkout) behind one protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.models import RunState
from core.spec import BuildSpec


@dataclass(frozen=True)
class BuildRequest:
    """Build `spec` of app `app` from `repository` ("owner/name") at `sha` (pushed to `ref`)."""

    app: str
    spec: BuildSpec
    sha: str
    ref: str
    repository: str


@dataclass(frozen=True)
class BuildOutcome:
    """How a build ended; `image` is the image reference (or, locally, the workspace path)."""

    state: RunState
    image: str | None = None
    reason: str | None = None


class Builder(Protocol):
    """Turns a BuildRequest into something jobs with `image_from_build` can run."""

    name: str

    async def build(self, request: BuildRequest) -> BuildOutcome: ...

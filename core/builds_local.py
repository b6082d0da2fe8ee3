"""The local builder: a build is the repository's tarball at a sha, unpacked into a workspace."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from core.builds import BuildOutcome, BuildRequest
from core.errors import JobbotError
from core.models import RunState

logger = logging.getLogger(__name__)

# Fetches the gzipped tarball of request.repository at request.sha (the GitHub App passes one
# that uses the installation token, so core never imports a GitHub client).
FetchTarball = Callable[[BuildRequest], Awaitable[bytes]]


class LocalBuilder:
    """Unpacks `<root>/<app>/<sha>/`; jobs with image_from_build run there (their cwd)."""

    name = "local"

    def __init__(self, root: Path, fetch_tarball: FetchTarball) -> None:
        self.root = root
        self._fetch = fetch_tarball

    def workspace(self, request: BuildRequest) -> Path:
        return self.root / request.app.app / request.sha

    async def build(self, request: BuildRequest) -> BuildOutcome:
        target = self.workspace(request)
        if (target / ".jobbot-complete").exists():
            # The same sha was built before: a checkout never changes.
            return BuildOutcome(RunState.SUCCEEDED, str(target), "already checked out")
        try:
            data = await self._fetch(request)
        except JobbotError as exc:
            return BuildOutcome(RunState.FAILED, None, f"could not download the tarball: {exc}")
        try:
            await asyncio.to_thread(_unpack, data, target, request.build.context)
        except (tarfile.TarError, OSError, ValueError) as exc:
            logger.warning("unpacking %s at %s failed: %s", request.repository, request.sha, exc)
            return BuildOutcome(RunState.FAILED, None, f"could not unpack the tarball: {exc}")
        return BuildOutcome(RunState.SUCCEEDED, str(target))


def _unpack(data: bytes, target: Path, context: str) -> None:
    """Unpack into a temporary sibling, then rename, so a half-written checkout is never used."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = archive.getmembers()
        # GitHub's tarballs hold one top directory, `<owner>-<repo>-<short sha>/`: strip it.
        for member in members:
            _, _, rest = member.name.partition("/")
            member.name = rest
        # The "data" filter refuses absolute paths, `..`, device files and links leaving the tree.
        archive.extractall(partial, members=[m for m in members if m.name], filter="data")
    source = (partial / context).resolve()
    if not source.is_relative_to(partial.resolve()) or not source.is_dir():
        raise ValueError(f"build context {context!r} is not a directory of the repository")
    shutil.rmtree(target, ignore_errors=True)
    if source == partial.resolve():
        partial.rename(target)
    else:
        source.rename(target)
        shutil.rmtree(partial, ignore_errors=True)
    (target / ".jobbot-complete").write_text("")

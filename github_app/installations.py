"""Which installation serves which repository, as GitHub lists it, and the build tokens it
issues: a token per build, limited to the one repository and to reading its contents."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from core.builds import BuildRequest
from core.errors import JobbotError
from core.store import Store
from github_app.api import GitHubApiError, GitHubClients
from github_app.routing import Delivery

logger = logging.getLogger(__name__)
# Events whose own handlers keep the served list (from the payload's repository lists).
_INSTALLATION_EVENTS = frozenset({"installation", "installation_repositories"})


def is_github_repository(repository: str) -> bool:
    """"owner/name" as GitHub names it (not a clone URL given by hand)."""
    owner, slash, name = repository.partition("/")
    return bool(owner and slash and name) and "/" not in name and ":" not in repository


class Installations:
    """The served repositories: learnt from GitHub's lists at start-up and whenever a delivery
    names an installation or repository jobbot does not know, not only from the
    `installation` events it happened to receive."""

    def __init__(self, clients: GitHubClients, store: Store) -> None:
        self._clients = clients
        self._store = store
        self._syncing: asyncio.Task[None] | None = None

    async def sync(self) -> int:
        """List every installation's repositories and store them; how many are served."""
        listed: dict[int, list[str]] = {}
        for installation_id in await self._clients.installation_ids():
            api = self._clients.installation(installation_id)
            listed[installation_id] = await api.repositories()
        await asyncio.to_thread(self._store.replace_served_repositories, listed)
        count = sum(len(names) for names in listed.values())
        logger.info("GitHub lists %d installations serving %d repositories", len(listed), count)
        return count

    def sync_soon(self) -> asyncio.Task[None]:
        """Start a sync unless one is under way (the deliveries that asked for it share it)."""
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.create_task(self._sync_logged(), name="github-installations")
        return self._syncing

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except JobbotError as exc:
            logger.warning("listing the App's installations failed: %s (the served list "
                           "stays as it was; a delivery's own installation still serves it)",
                           exc)
        except Exception:
            logger.exception("listing the App's installations failed")

    async def learn(self, delivery: Delivery) -> None:
        """A delivery's own installation serves its repository: remember that at once, and
        list the installations again if it was news."""
        if delivery.event in _INSTALLATION_EVENTS:
            return
        installation_id = delivery.get("installation", "id")
        repository = delivery.get("repository", "full_name")
        if not isinstance(installation_id, int) or not isinstance(repository, str):
            return
        row = await asyncio.to_thread(self._store.served_repository, repository)
        if row is not None and row.installation_id == installation_id:
            return
        await asyncio.to_thread(self._store.add_repositories, installation_id, [repository])
        logger.info("delivery %s names %s of installation %s, which jobbot did not know: "
                    "listing the App's installations", delivery.id, repository,
                    installation_id, extra={"delivery_id": delivery.id})
        self.sync_soon()

    async def installation_for(self, repository: str,
                               origin: Mapping[str, Any] | None = None) -> int:
        """The installation to act on `repository` with: the one its delivery named (kept
        in the run's origin), else the stored one, else GitHub's lists, asked now."""
        named = (origin or {}).get("installation_id")
        if isinstance(named, int) and not isinstance(named, bool):
            return named
        for attempt in range(2):
            row = await asyncio.to_thread(self._store.served_repository, repository)
            if row is not None:
                return row.installation_id
            if attempt == 0:
                # Shielded: the sync is shared, and this caller may be cancelled.
                await asyncio.shield(self.sync_soon())
        raise GitHubApiError(f"jobbot is not installed on {repository}: GitHub lists no "
                             "installation of the App that reaches it")

    async def settled(self) -> None:
        """Return once the sync under way, if any, is done."""
        if self._syncing is not None:
            await asyncio.gather(self._syncing, return_exceptions=True)

    async def aclose(self) -> None:
        if self._syncing is not None and not self._syncing.done():
            self._syncing.cancel()
            await asyncio.gather(self._syncing, return_exceptions=True)


class BuildTokens:
    """core.builds.BuildCredentials for the Kubernetes builder: per build, a new installation
    token for the build's repository with `contents: read` only. Builds for a fork's pull
    request get none (their code is not the repository owners')."""

    def __init__(self, clients: GitHubClients, installations: Installations) -> None:
        self._clients = clients
        self._installations = installations

    def covers(self, request: BuildRequest) -> bool:
        return is_github_repository(request.repository) and request.origin.get("fork") is not True

    async def token(self, request: BuildRequest) -> str:
        installation_id = await self._installations.installation_for(request.repository,
                                                                     request.origin)
        return await self._clients.repository_token(installation_id, request.repository)

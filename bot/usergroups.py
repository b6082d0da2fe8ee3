"""Who is in which Slack user group (usergroups.users.list), cached for a short while."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from slack_sdk.web.async_client import AsyncWebClient

from bot.slackapi import PermanentSlackError, call
from core.errors import TemporaryFailure

logger = logging.getLogger(__name__)
GROUP_TTL = 60.0


class UserGroups:
    """Members of user groups, asked of Slack at most once a minute per group."""

    def __init__(self, client: AsyncWebClient, *, ttl: float = GROUP_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    async def groups_of(self, user: str, groups: tuple[str, ...]) -> frozenset[str]:
        """Which of `groups` have `user` as a member; a group Slack will not list counts as no."""
        found = set()
        for group in groups:
            if user in await self.members(group):
                found.add(group)
        return frozenset(found)

    async def members(self, group: str) -> frozenset[str]:
        now = self._clock()
        cached = self._members.get(group)
        if cached and cached[0] > now:
            return cached[1]
        try:
            response = await call("usergroups.users.list",
                                  self._client.usergroups_users_list(usergroup=group),
                                  usergroup=group)
        except (PermanentSlackError, TemporaryFailure) as exc:
            # Deny rather than guess: the person is told who may, and can try again.
            logger.warning("could not list user group %s: %s", group, exc)
            return frozenset()
        members = frozenset(str(u) for u in response.get("users") or ())
        self._members[group] = (now + self._ttl, members)
        return members

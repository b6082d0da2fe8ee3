"""The bot's Slack workspace as the pages see it: its team id and who is in which user group."""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot.slackapi import PermanentSlackError, call
from bot.usergroups import UserGroups
from core.errors import TemporaryFailure

logger = logging.getLogger(__name__)


class Workspace:
    """Answers web's SlackDirectory protocol with the bot's own token (auth.test, user groups)."""

    def __init__(self, client: AsyncWebClient, groups: UserGroups) -> None:
        self._client = client
        self._groups = groups
        self._team: str | None = None

    async def team_id(self) -> str | None:
        """The bot's workspace (asked of Slack once); None while Slack cannot say."""
        if self._team is None:
            try:
                response = await call("auth.test", self._client.auth_test())
            except (PermanentSlackError, TemporaryFailure) as exc:
                logger.warning("could not ask Slack for the bot's workspace: %s", exc)
                return None
            team = response.get("team_id")
            self._team = str(team) if team else None
        return self._team

    async def groups_of(self, user: str, groups: tuple[str, ...]) -> frozenset[str]:
        return await self._groups.groups_of(user, groups)

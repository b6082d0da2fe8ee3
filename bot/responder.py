"""Answers through a command's response_url, over one shared HTTP session."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.render import Reply
from core.metrics import SLACK_ERRORS, SLACK_REQUESTS

logger = logging.getLogger(__name__)


class Responder:
    """Posts replies to response_url values; `session` is set while the server runs."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, response_url: str | None, answer: Reply, *, replace: bool = False,
                       ephemeral: bool = True, **log_context: Any) -> bool:
        """Send `answer`; False (logged) when there is no URL or Slack would not take it."""
        if not response_url:
            return False
        session = self.session if self.session is not None and not self.session.closed else None
        client = AsyncWebhookClient(response_url, session=session)
        SLACK_REQUESTS.labels("response_url").inc()
        try:
            response = await client.send(
                text=answer.text, blocks=answer.blocks or None, replace_original=replace,
                response_type="ephemeral" if ephemeral else "in_channel")
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The response_url may have expired or Slack may be down: the command itself is done.
            SLACK_ERRORS.labels("response_url", type(exc).__name__).inc()
            logger.warning("could not answer through response_url: %s", exc, extra=log_context)
            return False
        if response.status_code != 200:
            SLACK_ERRORS.labels("response_url", str(response.status_code)).inc()
            logger.warning("response_url answered HTTP %s: %s", response.status_code,
                           response.body[:200], extra=log_context)
            return False
        return True

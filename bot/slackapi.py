"""Slack Web API errors sorted at the edge: retry later (rate limit, outage) or log and move on."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from core.errors import TemporaryFailure
from core.metrics import SLACK_ERRORS, SLACK_REQUESTS

logger = logging.getLogger(__name__)
# Slack's own hiccups: worth another try later.
RETRYABLE_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})


class PermanentSlackError(Exception):
    """Slack refused the call for a reason a retry will not fix (channel_not_found, ...)."""

    def __init__(self, method: str, error: str) -> None:
        self.method = method
        self.error = error
        super().__init__(f"{method}: {error}")


async def call(method: str, pending: Awaitable[AsyncSlackResponse],
               **log_context: Any) -> AsyncSlackResponse:
    """Await a Web API call; TemporaryFailure to retry later, PermanentSlackError to give up."""
    SLACK_REQUESTS.labels(method).inc()
    try:
        return await pending
    except SlackApiError as exc:
        status = exc.response.status_code
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        error = str(data.get("error") or f"HTTP {status}")
        SLACK_ERRORS.labels(method, error).inc()
        if status == 429 or status >= 500 or error in RETRYABLE_ERRORS:
            delay = retry_after(exc.response.headers)
            raise TemporaryFailure(f"Slack {method}: {error}", delay) from exc
        logger.warning("Slack %s failed: %s", method, error, extra={**log_context, "error": error})
        raise PermanentSlackError(method, error) from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        SLACK_ERRORS.labels(method, type(exc).__name__).inc()
        raise TemporaryFailure(f"Slack {method}: {type(exc).__name__}: {exc}") from exc


def retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (Slack sends whole seconds), if any."""
    for name, value in dict(headers or {}).items():
        if str(name).lower() == "retry-after":
            text = value[0] if isinstance(value, list | tuple) else value
            try:
                return max(0.0, float(text))
            except (TypeError, ValueError):
                return None
    return None

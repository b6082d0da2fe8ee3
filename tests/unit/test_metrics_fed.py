"""The API-call metrics are counted where the calls are made."""

from __future__ import annotations

import httpx
import pytest
from kubernetes.client.exceptions import ApiException
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.slackapi import PermanentSlackError, call
from core.errors import TemporaryFailure
from core.executors.k8s.retry import Call, Transient, classify
from core.metrics import REGISTRY
from github_app.api import _errors


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_kubernetes_errors_are_counted_by_operation_and_status() -> None:
    before = value("jobbot_kubernetes_api_errors_total", operation="create jobs", status="503")
    problem = classify(ApiException(status=503), Call("create", "jobs", "shop"))
    assert isinstance(problem, Transient)
    after = value("jobbot_kubernetes_api_errors_total", operation="create jobs", status="503")
    assert after == before + 1


async def test_slack_calls_and_errors_are_counted() -> None:
    response = AsyncSlackResponse(client=AsyncWebClient(), http_verb="POST", api_url="x",
                                  req_args={}, data={"ok": False, "error": "channel_not_found"},
                                  headers={}, status_code=200)

    async def failing() -> AsyncSlackResponse:
        raise SlackApiError("channel_not_found", response)

    calls = value("jobbot_slack_requests_total", method="chat.postMessage")
    errors = value("jobbot_slack_errors_total", method="chat.postMessage",
                   error="channel_not_found")
    with pytest.raises(PermanentSlackError):
        await call("chat.postMessage", failing())
    assert value("jobbot_slack_requests_total", method="chat.postMessage") == calls + 1
    assert value("jobbot_slack_errors_total", method="chat.postMessage",
                 error="channel_not_found") == errors + 1


async def test_github_calls_and_errors_are_counted() -> None:
    calls = value("jobbot_github_requests_total", kind="pull")
    errors = value("jobbot_github_errors_total", kind="pull", status="unreachable")
    with pytest.raises(TemporaryFailure):
        async with _errors("pull request #4", "pull"):
            raise httpx.ConnectError("connection refused")
    assert value("jobbot_github_requests_total", kind="pull") == calls + 1
    assert value("jobbot_github_errors_total", kind="pull", status="unreachable") == errors + 1

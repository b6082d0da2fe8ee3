"""Which Kubernetes API failures are retried, after how long, and what refusals say."""

from __future__ import annotations

import email.utils
import time

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from core.errors import ExecutorError
from core.executors.k8s.retry import Call, RetryPolicy, Transient, call_api, classify

CALL = Call("create", "jobs", "shop")


def _api_error(status: int, headers: dict[str, str] | None = None) -> ApiException:
    error = ApiException(status=status, reason="x")
    error.headers = headers or {}
    return error


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_transient(status: int) -> None:
    problem = classify(_api_error(status, {"Retry-After": "3"}), CALL)
    assert isinstance(problem, Transient)
    assert problem.retry_after == 3.0


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    problem = classify(_api_error(429, {"Retry-After": when}), CALL)
    assert isinstance(problem, Transient)
    assert problem.retry_after is not None and 100 < problem.retry_after <= 120


def test_dropped_connections_are_transient() -> None:
    reset = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104))
    assert isinstance(classify(reset, CALL), Transient)


@pytest.mark.parametrize("status", [401, 403])
def test_refusals_name_the_rbac_rule(status: int) -> None:
    problem = classify(_api_error(status), CALL)
    assert isinstance(problem, ExecutorError)
    assert "verb 'create' on resource 'jobs' in namespace 'shop'" in str(problem)


def test_other_errors_pass_through() -> None:
    error = _api_error(422)
    assert classify(error, CALL) is error


def test_the_delay_honours_retry_after_up_to_the_maximum() -> None:
    policy = RetryPolicy(first_delay=0.1, max_delay=5.0)
    assert policy.delay(0, retry_after=2.0) == 2.0
    assert policy.delay(0, retry_after=60.0) == 5.0
    assert 0.05 <= policy.delay(0) <= 0.1
    assert policy.delay(20) <= 5.0


async def test_call_api_gives_up_after_its_budget() -> None:
    calls = []

    def failing() -> None:
        calls.append(1)
        raise _api_error(503)

    with pytest.raises(ExecutorError, match="Kubernetes API unavailable") as raised:
        await call_api(failing, CALL, RetryPolicy(first_delay=0.01, max_delay=0.02, budget=0.1))
    assert raised.value.retryable
    assert len(calls) > 1

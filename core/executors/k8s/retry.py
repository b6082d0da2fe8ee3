"""The one place Kubernetes API calls are retried: 429, 5xx and dropped connections only.

Everything else is permanent; 401/403 become an ExecutorError that names the RBAC rule missing.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from core.errors import ExecutorError
from core.metrics import KUBERNETES_ERRORS

logger = logging.getLogger(__name__)
T = TypeVar("T")
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; `budget` seconds of retrying before giving up."""

    first_delay: float = 0.2
    max_delay: float = 30.0
    budget: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        base = min(self.first_delay * 2 ** attempt, self.max_delay)
        return float(base / 2 + random.uniform(0, base / 2))


@dataclass(frozen=True)
class Call:
    """What is being asked, for messages: `create jobs in shop`."""

    verb: str
    resource: str
    namespace: str | None = None

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.verb} {self.resource}{where}"


class Transient(Exception):
    """A failure worth retrying, after `retry_after` seconds if the server said so."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def classify(exc: BaseException, call: Call) -> BaseException:
    """Transient for what may pass, ExecutorError for refusals, the exception itself otherwise.

    Every failed API call passes through here, so here it is counted.
    """
    operation = f"{call.verb} {call.resource}"
    if isinstance(exc, ApiException):
        status = exc.status or 0
        KUBERNETES_ERRORS.labels(operation, str(status)).inc()
        if status in RETRYABLE_STATUS:
            return Transient(f"HTTP {status} on {call}", retry_after(exc))
        if status in (401, 403):
            who = "jobbot's credentials were rejected" if status == 401 else "forbidden"
            return ExecutorError(
                f"Kubernetes refused to {call} (HTTP {status}, {who}): give jobbot's "
                f"ServiceAccount a Role with verb {call.verb!r} on resource {call.resource!r}"
                + (f" in namespace {call.namespace!r}" if call.namespace else "")
            )
        return exc
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        KUBERNETES_ERRORS.labels(operation, "unreachable").inc()
        return Transient(f"{type(exc).__name__} on {call}: {exc}", None)
    return exc


def retry_after(exc: ApiException) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), if any."""
    headers = exc.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(parsed.timestamp() - time.time(), 0.0) if parsed else None


async def call_api(fn: Callable[[], T], call: Call, policy: RetryPolicy) -> T:
    """Run blocking `fn` in a thread, retrying transient failures within the policy's budget."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + policy.budget
    attempt = 0
    while True:
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:
            problem = classify(exc, call)
            if not isinstance(problem, Transient):
                if problem is exc:
                    raise
                raise problem from exc
            delay = policy.delay(attempt, problem.retry_after)
            if loop.time() + delay > give_up:
                raise ExecutorError(f"Kubernetes API unavailable: {problem} (gave up after "
                                    f"{attempt + 1} tries)", retryable=True) from exc
            logger.info("retrying %s in %.1fs: %s", call, delay, problem)
            attempt += 1
            await asyncio.sleep(delay)


def wait_before_retry(exc: BaseException, call: Call, policy: RetryPolicy,
                      attempt: int) -> float:
    """For loops that retry forever (watches): how long to wait, or raise if not transient."""
    problem = classify(exc, call)
    if not isinstance(problem, Transient):
        if problem is exc:
            raise exc
        raise problem from exc
    return policy.delay(attempt, problem.retry_after)

"""Errors the core raises; front ends turn them into a message, a status code or an exit code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class JobbotError(Exception):
    """Base of every error the core raises on purpose."""


class BadInput(JobbotError):
    """The caller asked for something malformed or impossible (exit code 2, HTTP 400)."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in an app.yaml: where it is and what is wrong."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(BadInput):
    """app.yaml is missing or invalid; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NotFound(BadInput):
    """A job, build or run that does not exist; `suggestion` is the closest known name."""

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        self.suggestion = suggestion
        super().__init__(f"{message} (did you mean {suggestion}?)" if suggestion else message)


class PermissionDenied(JobbotError):
    """The actor may not do this; the message says who may."""


class Conflict(JobbotError):
    """The request is valid but the run or job is in a state that does not allow it."""


class TemporaryFailure(JobbotError):
    """A subscriber could not deliver now (an outage, a rate limit); retry, never drop."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        self.delay = delay
        super().__init__(message)


class ExecutorError(JobbotError):
    """The executor could not do what was asked (permanent unless `retryable`)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)

"""Answers first: background work waits for a quiet spell between the answers to requests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator


class AnswersFirst:
    """Answers before background work: work waits while answers are being made.

    Slack (3 s) and GitHub (10 s) wait for an answer; the work behind it (API calls, runs)
    costs far more CPU than the answer, and on one event loop it delays answers during a burst
    (measured with bench/slack_ack.py and bench/github_webhook.py). Work goes on once no
    answer has been under way for `quiet` seconds; each wait is bounded by `max_wait`, so
    work still moves under sustained load.
    """

    def __init__(self, *, quiet: float = 0.02, max_wait: float = 1.0) -> None:
        self._quiet = quiet
        self._max_wait = max_wait
        self._answering = 0
        self._last_answer = 0.0

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        self._answering += 1
        try:
            yield
        finally:
            self._answering -= 1
            self._last_answer = time.monotonic()

    def _busy(self) -> bool:
        return bool(self._answering) or time.monotonic() - self._last_answer < self._quiet

    async def wait_turn(self) -> None:
        deadline = time.monotonic() + self._max_wait
        # Polled: what is awaited is a quiet spell (no answer for a while), not an event.
        while self._busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(self._quiet)

"""Answers first: background work waits for a quiet spell between the answers to requests."""

from __future__ import annotations

import asyncio
import time


class _Answers:
    """How many answers are under way and when the last one ended, for one gate or all."""

    def __init__(self) -> None:
        self.under_way = 0
        self.last_ended = 0.0

    def busy(self, quiet: float) -> bool:
        return bool(self.under_way) or time.monotonic() - self.last_ended < quiet

    async def quiet_spell(self, quiet: float, max_wait: float) -> None:
        """Until no answer has been under way for `quiet` seconds, or `max_wait` at most."""
        deadline = time.monotonic() + max_wait
        # Polled: what is awaited is a quiet spell (no answer for a while), not an event.
        while self.busy(quiet) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(quiet)


# Every gate's answers together: what the process as a whole is doing (core/quiet_gc.py).
_PROCESS = _Answers()


class _Answering:
    """An answer under way, counted by its gate and by the process. A class rather than a
    generator context manager: it is entered on every request."""

    __slots__ = ("_gate",)

    def __init__(self, gate: _Answers) -> None:
        self._gate = gate

    def __enter__(self) -> None:
        self._gate.under_way += 1
        _PROCESS.under_way += 1

    def __exit__(self, *exc_info: object) -> None:
        now = time.monotonic()
        for answers in (self._gate, _PROCESS):
            answers.under_way -= 1
            answers.last_ended = now


async def process_quiet_spell(quiet: float, max_wait: float) -> None:
    """Until no answer of any gate has been under way for `quiet` seconds (`max_wait` at most)."""
    await _PROCESS.quiet_spell(quiet, max_wait)


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
        self._answers = _Answers()

    def answering(self) -> _Answering:
        """Around the making of an answer (`with gate.answering(): ...`)."""
        return _Answering(self._answers)

    async def wait_turn(self) -> None:
        await self._answers.quiet_spell(self._quiet, self._max_wait)

"""A virtual clock for the scheduler: time moves only when a test (or benchmark) moves it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta


class VirtualClock:
    """`now()` is whatever was set; `sleep_until` returns once the time has been moved there."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        if when < self._now:
            raise ValueError("virtual time only moves forward")
        self._now = when
        self._moved.set()
        self._moved = asyncio.Event()

    def advance(self, delta: timedelta) -> datetime:
        self.set(self._now + delta)
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        while self._now < when:
            await self._moved.wait()

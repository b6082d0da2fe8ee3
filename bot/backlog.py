"""Slow work after the ack, done by a few workers: a burst of commands cannot starve the acks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)
Work = Callable[[], Awaitable[None]]
DEFAULT_WORKERS = 2


class Backlog:
    """A queue of jobs (closures) run in order by `workers` tasks, started on first use."""

    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        self._size = workers
        self._queue: asyncio.Queue[tuple[str, Work]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    def submit(self, name: str, work: Work) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name=f"slack-backlog-{i}")
                             for i in range(self._size)]
        self._queue.put_nowait((name, work))

    async def join(self) -> None:
        """Until everything submitted so far is done."""
        await self._queue.join()

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def _work(self) -> None:
        while True:
            name, work = await self._queue.get()
            try:
                await work()
            except Exception:
                # One failed command must not stop the workers that answer everyone else.
                logger.exception("slow part of %s failed", name)
            finally:
                self._queue.task_done()

"""Work done after a webhook is answered: a bounded set of workers, retries for rate limits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from core.answers_first import AnswersFirst
from core.errors import JobbotError
from core.events import TemporaryFailure

logger = logging.getLogger(__name__)

# A delivery's work says what it did, or None when there is nothing to record (a redelivery).
Work = Callable[[], Awaitable[str | None]]
Done = Callable[[str, str], Awaitable[None]]


class WorkQueue:
    """Runs each delivery's work once, retrying TemporaryFailure (rate limits) a few times."""

    def __init__(self, on_done: Done, *, workers: int = 8, tries: int = 5,
                 max_delay: float = 300.0, priority: AnswersFirst | None = None) -> None:
        self.priority = priority or AnswersFirst()
        self._queue: asyncio.Queue[tuple[str, Work]] = asyncio.Queue()
        self._on_done = on_done
        self._workers = workers
        self._tries = tries
        self._max_delay = max_delay
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work(), name=f"github-worker-{i}")
                           for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def put(self, delivery_id: str, work: Work) -> None:
        self._busy += 1
        self._idle.clear()
        self._queue.put_nowait((delivery_id, work))

    @property
    def idle(self) -> bool:
        return self._busy == 0

    async def join(self) -> None:
        """Until every queued delivery is done (tests and shutdown)."""
        await self._idle.wait()

    async def _work(self) -> None:
        while True:
            delivery_id, work = await self._queue.get()
            await self.priority.wait_turn()
            try:
                outcome = await self._attempt(delivery_id, work)
                try:
                    if outcome is not None:
                        await self._on_done(delivery_id, outcome)
                except Exception:
                    logger.exception("delivery %s: recording the outcome failed", delivery_id,
                                     extra={"delivery_id": delivery_id})
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

    async def _attempt(self, delivery_id: str, work: Work) -> str | None:
        extra = {"delivery_id": delivery_id}
        for attempt in range(1, self._tries + 1):
            try:
                return await work()
            except TemporaryFailure as exc:
                if attempt == self._tries:
                    logger.error("delivery %s: giving up after %d tries: %s", delivery_id,
                                 attempt, exc, extra=extra)
                    return f"failed: {exc}"
                delay = min(exc.delay if exc.delay is not None else 2.0 ** attempt,
                            self._max_delay)
                logger.warning("delivery %s: %s; retrying in %.1fs", delivery_id, exc, delay,
                               extra=extra)
                await asyncio.sleep(delay)
            except JobbotError as exc:
                logger.warning("delivery %s: %s", delivery_id, exc, extra=extra)
                return f"failed: {exc}"
            except Exception as exc:
                logger.exception("delivery %s: handling failed", delivery_id, extra=extra)
                return f"error: {type(exc).__name__}"
        raise AssertionError("unreachable")

"""Requests answered after they are recorded: a few workers handle them, and a restart replays them.

The Slack bot and the GitHub App share this: their HTTP edge checks the signature, commits
the request through the Store, answers, and puts it here. Each piece of work says what it
did; a TemporaryFailure (a rate limit, an outage) is tried again after its delay, anything
else ends it. Its outcome is then recorded, so a restart replays only what was never done.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from core.errors import JobbotError, TemporaryFailure
from core.procs import ProcessId
from core.replicas import Liveness

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Threads that commit requests before their answer (see Intake.record).
RECORDERS = 2

# A piece of work says what it did.
Work = Callable[[], Awaitable[str]]
# Records a request's outcome (a blocking Store call, run in a thread).
Finish = Callable[[str, str], None]


def abandoned(owner_text: str | None, live: Liveness) -> bool:
    """Whether a request recorded by `owner_text` and still unhandled was left by a process
    that is gone: a dead process of this host at once, any other once its lease expired."""
    return live.gone(owner_text)


class Intake:
    """Recorded requests, handled by `workers` tasks; each one's outcome goes to `finish`."""

    def __init__(self, name: str, finish: Finish, *, log_field: str, workers: int = 4,
                 tries: int = 5, max_delay: float = 300.0) -> None:
        self.name = name
        # The structured-log field that carries a request's key (jobbot/logsetup.py).
        self._log_field = log_field
        self.owner = ProcessId.current()
        self._finish = finish
        self._size = workers
        self._tries = tries
        self._max_delay = max_delay
        self._queue: asyncio.Queue[tuple[str, Work]] = asyncio.Queue()
        # Requests are committed by threads of their own: in the shared default pool they
        # would queue behind the background work's database calls while Slack or GitHub waits.
        self._recorders = ThreadPoolExecutor(RECORDERS, thread_name_prefix=f"{name}-record")
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def record(self, write: Callable[..., T], *args: object) -> T:
        """Run `write(*args)` (a blocking Store call that commits a request) in a recorder
        thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._recorders, functools.partial(write, *args))

    async def take_over(self, take: Callable[[str, Callable[[str | None, datetime], bool]],
                                             list[T]], live: Liveness) -> list[T]:
        """The unhandled requests of processes gone by `live`, made this process's: `take` is
        the Store's take-over for one kind of request (Store.take_over_slack_work, ...)."""
        return await asyncio.to_thread(
            take, str(self.owner), lambda owner, received_at: abandoned(owner, live))

    def put(self, key: str, work: Work) -> None:
        """Queue a recorded request's work; the workers start with the first one."""
        self._busy += 1
        self._idle.clear()
        self._queue.put_nowait((key, work))
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work(), name=f"{self.name}-{i}")
                           for i in range(self._size)]

    async def join(self) -> None:
        """Until every request queued so far is handled and its outcome recorded."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Stop the workers; what they had not finished stays unhandled in the database."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await asyncio.to_thread(self._recorders.shutdown)

    async def _work(self) -> None:
        while True:
            key, work = await self._queue.get()
            try:
                outcome = await self._attempt(key, work)
                try:
                    await asyncio.to_thread(self._finish, key, outcome)
                except Exception:
                    # The request stays unhandled in the database: the next start replays it,
                    # and its idempotency keys keep that from doing anything twice.
                    logger.exception("%s %s: recording its outcome failed", self.name, key,
                                     extra={self._log_field: key})
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

    async def _attempt(self, key: str, work: Work) -> str:
        extra = {self._log_field: key}
        for attempt in range(1, self._tries + 1):
            try:
                return await work()
            except TemporaryFailure as exc:
                if attempt == self._tries:
                    logger.error("%s %s: giving up after %d tries: %s", self.name, key, attempt,
                                 exc, extra=extra)
                    return f"failed: {exc}"
                delay = min(exc.delay if exc.delay is not None else 2.0 ** attempt,
                            self._max_delay)
                logger.warning("%s %s: %s; trying again in %.1f s", self.name, key, exc, delay,
                               extra=extra)
                await asyncio.sleep(delay)
            except JobbotError as exc:
                logger.warning("%s %s: %s", self.name, key, exc, extra=extra)
                return f"failed: {exc}"
            except Exception as exc:
                logger.exception("%s %s: handling failed", self.name, key, extra=extra)
                return f"error: {type(exc).__name__}"
        raise AssertionError("unreachable")

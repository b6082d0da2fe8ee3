"""Slack work after the ack: written to the database before the ack, done by a few workers after.

`accept` records a command or click (one transaction for every request waiting at that
moment), so what Slack was told "received" survives a restart and a Slack retry of the same
request is recognised. Workers run the work in order but give way to requests waiting for
their ack (each item waits at most `max_defer` seconds for a quiet moment): under a burst the
acks go first and the runs are started right after. `replay` hands work left unfinished by
a stopped process to the workers again; every piece of work is idempotent (run keys derived
from the request, confirmations answered once per key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from core.answers_first import AnswersFirst
from core.group_commit import GroupCommit
from core.models import utcnow
from core.store import Store

logger = logging.getLogger(__name__)
Handler = Callable[[str, dict[str, Any]], Awaitable[None]]
DEFAULT_WORKERS = 2
MAX_DEFER = 0.25
# How long without a request to ack counts as a quiet moment.
QUIET = 0.01
# Work younger than this may still be in the hands of another replica when this one starts.
REPLAY_AFTER = timedelta(seconds=60)
KEEP_DONE = timedelta(days=1)
# Seconds before each new try of work that failed (then it waits for the next start).
RETRY_DELAYS = (2.0, 10.0, 60.0)


class Backlog:
    """Durable queue of (key, kind, body); `handlers[kind](key, body)` does the work."""

    def __init__(self, store: Store, handlers: dict[str, Handler] | None = None, *,
                 workers: int = DEFAULT_WORKERS, max_defer: float = MAX_DEFER,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self._store = store
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self._size = workers
        self._queue: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._writes: GroupCommit[tuple[str, str, dict[str, Any]], bool] = GroupCommit(
            store.add_slack_work, on_loop=store.writes_now, name="slack-ack-writer")
        self._acks = AnswersFirst(quiet=QUIET, max_wait=max_defer)
        self._retry_delays = retry_delays
        self._failures: dict[str, int] = {}
        self._retries: list[asyncio.TimerHandle] = []

    # -- the ack path ---------------------------------------------------------------------

    def ack_due(self) -> contextlib.AbstractContextManager[None]:
        """Around the handling of one request that Slack waits on: workers give way meanwhile."""
        return self._acks.answering()

    async def accept(self, key: str, kind: str, body: dict[str, Any]) -> bool:
        """Record the work durably and queue it; False (and nothing queued) for a known key."""
        if kind not in self.handlers:
            raise ValueError(f"no handler for Slack work of kind {kind!r}")
        # Requests waiting at the same moment share one transaction (group commit).
        fresh = await self._writes.submit((key, kind, body))
        if fresh:
            self._start()
            self._queue.put_nowait((key, kind, body))
        return fresh

    # -- after the ack --------------------------------------------------------------------

    async def replay(self, older_than: timedelta = REPLAY_AFTER) -> int:
        """Queue the work a stopped process acknowledged and did not finish."""
        # Work older than a day is given up (a request that fails every time must not be tried
        # at every start for ever); the audit log and the process log say what it was.
        pruned = await asyncio.to_thread(self._store.prune_slack_work, utcnow() - KEEP_DONE)
        if pruned:
            logger.info("forgot %d Slack requests received more than a day ago", pruned)
        rows = await asyncio.to_thread(self._store.unfinished_slack_work, utcnow() - older_than)
        for row in rows:
            logger.info("replaying Slack %s %s acknowledged before a restart", row.kind, row.key)
            self._start()
            self._queue.put_nowait((row.key, row.kind, row.body))
        return len(rows)

    def _start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name=f"slack-backlog-{i}")
                             for i in range(self._size)]

    async def join(self) -> None:
        """Until everything queued so far is done."""
        await self._queue.join()

    async def close(self) -> None:
        for handle in self._retries:
            handle.cancel()
        self._retries = []
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        await self._writes.close()

    async def give_way(self) -> None:
        """Wait for a moment without acks to send, at most `max_defer` seconds.

        Under a burst of commands the acks (due within 3 s) go first and each worker still
        does a piece of work every `max_defer` seconds; the answers through response_url
        (good for 30 minutes) and the runs follow as soon as the burst is over.
        """
        await self._acks.wait_turn()

    async def _work(self) -> None:
        while True:
            key, kind, body = await self._queue.get()
            try:
                await self.give_way()
                await self.handlers[kind](key, body)
                await asyncio.to_thread(self._store.finish_slack_work, key)
                self._failures.pop(key, None)
            except Exception:
                # One failed request must not stop the workers that answer everyone else.
                delay = self._retry_later(key, kind, body)
                if delay is None:
                    logger.exception("Slack %s %s failed after its ack, again; left for the "
                                     "next start", kind, key)
                else:
                    logger.exception("Slack %s %s failed after its ack; trying again in %.0f s",
                                     kind, key, delay)
            finally:
                self._queue.task_done()

    def _retry_later(self, key: str, kind: str, body: dict[str, Any]) -> float | None:
        """Queue failed work again in a while (the database or Slack may be back); after a few
        tries None: it stays unfinished in the database and the next start tries it again."""
        failures = self._failures.get(key, 0) + 1
        if failures > len(self._retry_delays):
            self._failures.pop(key, None)
            return None
        self._failures[key] = failures
        delay = self._retry_delays[failures - 1]

        def again() -> None:
            self._queue.put_nowait((key, kind, body))

        self._retries.append(asyncio.get_running_loop().call_later(delay, again))
        return delay

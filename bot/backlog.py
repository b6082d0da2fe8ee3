"""Slack commands and clicks: recorded before their ack, done after it, replayed after a crash.

A request's key comes from the request itself (its trigger_id), so a Slack retry finds the
row and does nothing, and every run the work starts carries that key: work replayed after a
restart never starts a second run. The workers are core/intake.py's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from core.intake import Intake
from core.models import utcnow
from core.replicas import Liveness
from core.store import Store

logger = logging.getLogger(__name__)
Handler = Callable[[str, dict[str, Any]], Awaitable[None]]
# Work is remembered this long, done or not, so that late Slack retries still find it.
KEEP = timedelta(days=1)


class Backlog:
    """Durable Slack work: `handlers[kind](key, body)` does a request's work after its ack."""

    def __init__(self, store: Store, handlers: dict[str, Handler] | None = None, *,
                 workers: int = 4) -> None:
        self._store = store
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self._intake = Intake("slack", self._finish, log_field="slack_request", workers=workers)

    async def accept(self, key: str, kind: str, body: dict[str, Any]) -> bool:
        """Commit the request, then queue its work; False (nothing queued) for a known key."""
        if kind not in self.handlers:
            raise ValueError(f"no handler for Slack work of kind {kind!r}")
        fresh = await self._intake.record(self._store.record_slack_work, key, kind, body,
                                          str(self._intake.owner))
        if fresh:
            self._put(key, kind, body)
        return fresh

    async def replay(self) -> int:
        """Queue the work that a process which died had acknowledged and not done."""
        pruned = await asyncio.to_thread(self._store.prune_slack_work, utcnow() - KEEP)
        if pruned:
            logger.info("forgot %d Slack requests received more than %s ago", pruned, KEEP)
        return await self.take_over(await asyncio.to_thread(
            Liveness.read, self._store, str(self._intake.owner)))

    async def take_over(self, live: Liveness) -> int:
        """Queue the unfinished work of processes gone by `live` (at start, and at each
        heartbeat: a replica whose lease expired leaves its acknowledged work to a live one)."""
        rows = await self._intake.take_over(self._store.take_over_slack_work, live)
        for row in rows:
            if row.kind not in self.handlers:
                await asyncio.to_thread(self._store.finish_slack_work, row.key)
                continue
            logger.info("replaying Slack %s %s acknowledged by a process that stopped", row.kind,
                        row.key,
                        extra={"slack_request": row.key})
            self._put(row.key, row.kind, row.body)
        return len(rows)

    async def join(self) -> None:
        """Until everything queued so far is done."""
        await self._intake.join()

    async def close(self) -> None:
        await self._intake.stop()

    def _put(self, key: str, kind: str, body: dict[str, Any]) -> None:
        self._intake.put(key, functools.partial(self._do, key, kind, body))

    async def _do(self, key: str, kind: str, body: dict[str, Any]) -> str:
        await self.handlers[kind](key, body)
        return "done"

    def _finish(self, key: str, outcome: str) -> None:
        self._store.finish_slack_work(key)

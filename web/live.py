"""One reader per running run that renders its new log lines once and fans them out to viewers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from core.service import JobService
from web.ansi import to_html

logger = logging.getLogger(__name__)

# (attempt, line number, the line's text as safe HTML).
Row = tuple[int, int, str]


@dataclass(frozen=True)
class Lines:
    """A batch of rows and its server-sent event, encoded once for every viewer."""

    rows: list[Row]
    event: bytes


def lines_event(rows: list[Row]) -> bytes:
    last = rows[-1]
    return f"id: {last[0]}:{last[1]}\nevent: lines\ndata: {json.dumps(rows)}\n\n".encode()


# None in a queue means the run's log has ended.
Batch = Lines | None


@dataclass
class _Feed:
    run_id: str
    queues: set[asyncio.Queue[Batch]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class LiveTail:
    """Follows each watched run once, however many pages watch it (each gets every batch)."""

    def __init__(self, service: JobService) -> None:
        self._service = service
        self._feeds: dict[str, _Feed] = {}

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[asyncio.Queue[Batch]]:
        """A queue of every line batch read from now on (earlier lines are in the files)."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = _Feed(run_id)
            feed.task = asyncio.create_task(self._follow(feed), name=f"live-tail-{run_id}")
        queue: asyncio.Queue[Batch] = asyncio.Queue()
        feed.queues.add(queue)
        try:
            yield queue
        finally:
            feed.queues.discard(queue)
            if not feed.queues and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]
                if feed.task is not None:
                    feed.task.cancel()

    async def _follow(self, feed: _Feed) -> None:
        pending: list[Row] = []
        wake = asyncio.Event()
        done = False

        async def publish() -> None:
            # Runs whenever the reader waits: whatever it read meanwhile goes out as one batch.
            while not done or pending:
                await wake.wait()
                wake.clear()
                if pending:
                    batch = Lines(pending[:], lines_event(pending))
                    pending.clear()
                    for queue in feed.queues:
                        queue.put_nowait(batch)
            for queue in feed.queues:
                queue.put_nowait(None)

        publisher = asyncio.create_task(publish(), name=f"live-publish-{feed.run_id}")
        counts: dict[int, int] = {}
        try:
            async for attempt, line in self._service.logs(feed.run_id, follow=True):
                number = counts[attempt] = counts.get(attempt, 0) + 1
                pending.append((attempt, number, to_html(line)))
                wake.set()
                if len(pending) >= 1000:
                    await asyncio.sleep(0)  # one big read: let the publisher send a part
            done = True
            wake.set()
            await publisher
        except Exception:
            logger.exception("following the log failed", extra={"run_id": feed.run_id})
            done = True
            wake.set()
            raise
        finally:
            if not publisher.done():
                publisher.cancel()
            if self._feeds.get(feed.run_id) is feed:
                del self._feeds[feed.run_id]  # a later viewer starts a new feed

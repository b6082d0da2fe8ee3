"""One reader per running run that renders its new log lines once and fans them out to viewers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from core.models import Run
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


@dataclass(frozen=True)
class State:
    """The run moved to another state (read once for all viewers)."""

    run: Run


# None in a queue means the run's log has ended.
Batch = Lines | State | None


@dataclass
class _Feed:
    run_id: str
    queues: set[asyncio.Queue[Batch]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None


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
            feed.watcher = asyncio.create_task(self._watch(feed), name=f"live-state-{run_id}")
        queue: asyncio.Queue[Batch] = asyncio.Queue()
        feed.queues.add(queue)
        try:
            yield queue
        finally:
            feed.queues.discard(queue)
            if not feed.queues and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]
                for task in (feed.task, feed.watcher):
                    if task is not None:
                        task.cancel()

    async def _watch(self, feed: _Feed) -> None:
        """One store read a second per watched run (not per viewer) to see its state change."""
        run = await self._service.get_run(feed.run_id)
        # Sent once at the start too: it may have changed since a viewer loaded the page.
        for queue in feed.queues:
            queue.put_nowait(State(run))
        while not run.run_state.is_final:
            await self._service.changes.wait(1.0)
            current = await self._service.get_run(feed.run_id)
            if current.state != run.state:
                for queue in feed.queues:
                    queue.put_nowait(State(current))
            run = current

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
            if feed.watcher is not None:
                feed.watcher.cancel()

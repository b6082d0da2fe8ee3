"""One reader per running run that renders its new log lines once and fans them out to viewers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from core.models import Run
from core.service import JobService
from web.ansi import lines_html

logger = logging.getLogger(__name__)

# (attempt, line number, the line's text as safe HTML).
Row = tuple[int, int, str]
# Rows per event: a big read is cut so that a page inserts it in pieces.
EVENT_ROWS = 2000
# What one viewer may have waiting before it counts as fallen behind and is dropped: it
# reconnects (EventSource does by itself, with Last-Event-ID) and catches up from the stored log.
VIEWER_LIMIT = 4 * 1024 * 1024


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


# None means the run's log has ended.
Batch = Lines | State | None


class Subscription:
    """One viewer's batches not yet sent, bounded in bytes: a viewer that falls further behind
    than `limit` is dropped (its queue emptied, `on_drop` called) instead of growing memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = False
        self.on_drop: Callable[[], None] | None = None
        self._items: deque[Batch] = deque()
        self._size = 0
        self._ready = asyncio.Event()

    def put(self, batch: Batch) -> None:
        if self.dropped:
            return
        size = len(batch.event) if isinstance(batch, Lines) else 0
        if self._size + size > self.limit:
            self.dropped = True
            self._items.clear()
            self._size = 0
            self._ready.set()
            if self.on_drop is not None:
                self.on_drop()
            return
        self._items.append(batch)
        self._size += size
        self._ready.set()

    async def take(self, wait: float) -> list[Batch]:
        """Everything waiting; if nothing is, what arrives within `wait` seconds (maybe nothing)."""
        if not self._items and not self.dropped:
            self._ready.clear()
            # asyncio.timeout, not wait_for, which can swallow a cancellation in Python 3.11.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()
        items = list(self._items)
        self._items.clear()
        self._size = 0
        return items


@dataclass
class _Feed:
    run_id: str
    # Lines per attempt stored when the feed started: read again, but not sent.
    known: dict[int, int]
    viewers: set[Subscription] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None

    def publish(self, batch: Batch) -> None:
        for viewer in list(self.viewers):
            viewer.put(batch)


class LiveTail:
    """Follows each watched run once, however many pages watch it (each gets every batch)."""

    def __init__(self, service: JobService, *, viewer_limit: int = VIEWER_LIMIT) -> None:
        self._service = service
        self._feeds: dict[str, _Feed] = {}
        self.viewer_limit = viewer_limit

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[Subscription]:
        """Every line batch read from now on (earlier lines are in the stored log)."""
        feed = self._feeds.get(run_id)
        if feed is None:
            # Lines already stored are the viewers' catch-up, not the feed's to send.
            store = self._service.log_store
            feed = self._feeds[run_id] = _Feed(
                run_id, {a: store.line_count(run_id, a) for a in store.attempts(run_id)})
            feed.task = asyncio.create_task(self._follow(feed), name=f"live-tail-{run_id}")
            feed.watcher = asyncio.create_task(self._watch(feed), name=f"live-state-{run_id}")
        viewer = Subscription(self.viewer_limit)
        feed.viewers.add(viewer)
        try:
            yield viewer
        finally:
            feed.viewers.discard(viewer)
            if not feed.viewers and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]
                for task in (feed.task, feed.watcher):
                    if task is not None:
                        task.cancel()

    async def _watch(self, feed: _Feed) -> None:
        """One store read a second per watched run (not per viewer) to see its state change."""
        changed = self._service.changes.snapshot()
        run = await self._service.get_run(feed.run_id)
        # Sent once at the start too: it may have changed since a viewer loaded the page.
        feed.publish(State(run))
        while not run.run_state.is_final:
            await self._service.changes.wait(1.0, since=changed)
            changed = self._service.changes.snapshot()  # before the read: no change slips past
            current = await self._service.get_run(feed.run_id)
            if current.state != run.state:
                feed.publish(State(current))
            run = current

    async def _follow(self, feed: _Feed) -> None:
        """Each read of the log (whatever was written since the last) goes out at once."""
        counts: dict[int, int] = {}
        try:
            async for attempt, lines in self._service.log_batches(feed.run_id, follow=True):
                first = counts.get(attempt, 0) + 1
                counts[attempt] = first - 1 + len(lines)
                known = feed.known.get(attempt, 0)
                if counts[attempt] <= known:
                    continue
                if first <= known:
                    lines, first = lines[known - first + 1:], known + 1
                texts = lines_html(lines)
                for start in range(0, len(texts), EVENT_ROWS):
                    rows = [(attempt, first + start + i, text)
                            for i, text in enumerate(texts[start:start + EVENT_ROWS])]
                    feed.publish(Lines(rows, lines_event(rows)))
            feed.publish(None)
        except Exception:
            logger.exception("following the log failed", extra={"run_id": feed.run_id})
            feed.publish(None)
            raise
        finally:
            if self._feeds.get(feed.run_id) is feed:
                del self._feeds[feed.run_id]  # a later viewer starts a new feed
            if feed.watcher is not None:
                feed.watcher.cancel()

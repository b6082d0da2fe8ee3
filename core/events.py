"""Run events to subscribers: in-process wake-ups, and the outbox that notifiers read in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.errors import TemporaryFailure
from core.leases import Lease
from core.models import RunEvent
from core.store import Store

logger = logging.getLogger(__name__)

Handler = Callable[[RunEvent], Awaitable[None]]
# At shutdown, how long the event being delivered may take to finish.
FINISH_GRACE = 5.0


class Changes:
    """Wakes in-process waiters when the store changed (other processes are seen by polling)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def snapshot(self) -> asyncio.Event:
        """The event the next change sets. Taken before reading the store and passed to
        `wait(since=)`, a change made while the read ran is not missed."""
        return self._event

    async def wait(self, seconds: float, *, since: asyncio.Event | None = None) -> None:
        """Until the next change (after `since`, if given), or `seconds` at most (changes in
        other processes are unseen)."""
        event = since or self._event
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
        # that arrives as the event is set, and a cancelled outbox would then never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()


@dataclass
class _Subscriber:
    name: str
    handler: Handler
    from_start: bool


class Outbox:
    """Delivers run events to each subscriber in order, remembering how far each got.

    Delivery is at least once: if the process dies between a handler finishing and its
    cursor being saved, that one event is delivered again after the restart, so handlers
    key what they post by event id (or make it idempotent in another way).
    """

    def __init__(self, store: Store, changes: Changes, *, poll: float = 1.0,
                 max_delay: float = 60.0, give_up_after: int = 5, standby: float = 5.0) -> None:
        self._store = store
        self._standby = standby
        self._changes = changes
        self._poll = poll
        self._max_delay = max_delay
        self._give_up_after = give_up_after
        self._subscribers: list[_Subscriber] = []

    def subscribe(self, name: str, handler: Handler, *, from_start: bool = False) -> None:
        """A new subscriber starts at the newest event unless `from_start`."""
        self._subscribers.append(_Subscriber(name, handler, from_start))

    async def prepare(self) -> None:
        """Start each new subscriber's cursor at the newest event, before the server takes
        requests: the events of what it is asked from then on all reach the subscriber (a
        cursor set only once deliveries begin would pass over the first requests' events)."""
        for sub in self._subscribers:
            if not sub.from_start:
                await asyncio.to_thread(self._store.start_cursor, sub.name)

    async def run(self) -> None:
        """Deliver until cancelled; the events under way finish first (FINISH_GRACE)."""
        await asyncio.gather(*(self._serve(s) for s in self._subscribers))

    async def _serve(self, sub: _Subscriber) -> None:
        # With several replicas, one delivers for each subscriber; the others stand by.
        lease = Lease(self._store, f"outbox-{sub.name}")
        try:
            while True:
                # Polled: the holder is another process, which no in-process event reports.
                while not await asyncio.to_thread(lease.try_acquire):
                    logger.debug("%s: another replica delivers; standing by", sub.name)
                    await asyncio.sleep(self._standby)
                logger.info("delivering run events to %s", sub.name,
                            extra={"subscriber": sub.name})
                await self._deliver_all(sub, lease)  # returns if the lease is lost
        finally:
            # Synchronously, so a cancelled task has let go before its cancel returns.
            lease.release()

    async def _deliver_all(self, sub: _Subscriber, lease: Lease) -> None:
        cursor = await asyncio.to_thread(self._store.cursor, sub.name)
        if cursor is None:
            cursor = 0 if sub.from_start else await asyncio.to_thread(self._store.last_event_id)
            await asyncio.to_thread(self._store.save_cursor, sub.name, cursor)
        while True:
            events = await asyncio.to_thread(self._store.events_after, cursor, 200)
            for event in events:
                delivery = asyncio.ensure_future(self._deliver(sub, event))
                try:
                    await asyncio.shield(delivery)
                except asyncio.CancelledError:
                    # A shutdown: the event under way finishes first (within FINISH_GRACE) and
                    # is recorded. Stopped between its call to Slack or GitHub and recording
                    # what that call made (a thread's parent message, a check run), a handler
                    # made it again after the restart: a second thread for the same run.
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await asyncio.wait_for(delivery, FINISH_GRACE)
                        await asyncio.to_thread(self._store.save_cursor, sub.name,
                                                event.id or cursor)
                    raise
                cursor = event.id or cursor
                # Shielded: a shutdown right after a delivery still records it, so a restart
                # does not deliver it again.
                await asyncio.shield(asyncio.to_thread(self._store.save_cursor, sub.name, cursor))
            if not events:
                await self._changes.wait(self._poll)
                if not await asyncio.to_thread(lease.check):
                    return  # the caller waits to acquire it again

    async def _deliver(self, sub: _Subscriber, event: RunEvent) -> None:
        failures = 0
        while True:
            try:
                await sub.handler(event)
                return
            except TemporaryFailure as exc:
                failures += 1
                delay = exc.delay if exc.delay is not None else self._backoff(failures)
                logger.warning("%s: event %s delayed %.1fs: %s", sub.name, event.id, delay, exc,
                               extra={"run_id": event.run_id, "subscriber": sub.name})
                await asyncio.sleep(delay)
            except Exception:
                failures += 1
                logger.exception("%s failed on event %s (try %d)", sub.name, event.id, failures,
                                 extra={"run_id": event.run_id, "subscriber": sub.name})
                if failures >= self._give_up_after:
                    logger.error("%s skips event %s after %d failures", sub.name, event.id,
                                 failures, extra={"run_id": event.run_id})
                    return
                await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        return float(min(2 ** (failures - 1), self._max_delay))

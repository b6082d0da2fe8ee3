"""Deliveries are written down before they are answered, many per transaction (group commit)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from core.models import Delivery, utcnow
from core.procs import ProcessId
from core.store import NewDelivery, Store

logger = logging.getLogger(__name__)
Item = TypeVar("Item")
Result = TypeVar("Result")
# A delivery another host answered and never handled is taken over after this long (that
# replica is gone: a live one handles its deliveries in seconds, rate-limit retries included).
ORPHANED_AFTER = timedelta(hours=1)
# Handled deliveries are kept this long: GitHub lets people redeliver the last 3 days' ones,
# and a redelivery must still find its record so it starts nothing.
KEEP_HANDLED = timedelta(days=7)
PRUNE_EVERY = timedelta(hours=6)


class GroupCommit(Generic[Item, Result]):
    """Each caller awaits its own item's result; items submitted while a write is under way go
    together in the next one, so concurrent requests share one transaction (one commit)."""

    def __init__(self, write: Callable[[list[Item]], Sequence[Result]]) -> None:
        # `write` runs in a thread of its own (not the shared default pool, where the work
        # queue's database calls would make answers wait) and gives one result per item.
        self._write = write
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._thread, self._write, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001  (each waiter gets it, and answers 503)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


@dataclass(frozen=True)
class Finished:
    """What a delivery did, once handled."""

    delivery_id: str
    outcome: str


class DeliveryJournal:
    """Records deliveries (True: new, False: a redelivery) and their outcomes. Both go through
    one group commit, so they share transactions and never wait on each other's write lock
    (SQLite's busy handler sleeps up to 100 ms at a time)."""

    def __init__(self, store: Store, owner: ProcessId | None = None) -> None:
        self._store = store
        self.owner = owner or ProcessId.current()
        self._writes: GroupCommit[NewDelivery | Finished, bool] = GroupCommit(self._write)

    async def record(self, delivery: NewDelivery) -> bool:
        """Once it returns, the delivery is committed: a restart will not lose it."""
        return await self._writes.submit(delivery)

    async def finish(self, delivery_id: str, outcome: str) -> None:
        await self._writes.submit(Finished(delivery_id, outcome))

    def _write(self, items: list[NewDelivery | Finished]) -> list[bool]:
        records = [i for i in items if isinstance(i, NewDelivery)]
        finished = [(i.delivery_id, i.outcome) for i in items if isinstance(i, Finished)]
        new = self._store.record_deliveries(records, finished)
        results = []
        for item in items:
            # The same id twice in one batch (a redelivery racing the first): the first is new.
            fresh = isinstance(item, NewDelivery) and item.id in new
            if fresh:
                assert isinstance(item, NewDelivery)
                new.discard(item.id)
            results.append(fresh)
        return results

    async def prune(self, keep: timedelta = KEEP_HANDLED) -> int:
        """Forget handled deliveries older than `keep`; unhandled ones stay to be replayed."""
        removed = await asyncio.to_thread(self._store.prune_deliveries, utcnow() - keep)
        if removed:
            logger.info("forgot %d handled deliveries older than %s", removed, keep)
        return removed

    async def prune_forever(self, every: timedelta = PRUNE_EVERY) -> None:
        """Prune now and then every `every`, until cancelled; a failure waits for the next turn."""
        while True:
            try:
                await self.prune()
            except Exception:
                logger.exception("pruning old deliveries failed; trying again in %s", every)
            await asyncio.sleep(every.total_seconds())

    async def orphans(self) -> list[Delivery]:
        """Deliveries answered by a process that died before handling them."""
        rows = await asyncio.to_thread(self._store.unhandled_deliveries)
        return [row for row in rows if self._orphaned(row)]

    def _orphaned(self, row: Delivery) -> bool:
        owner = ProcessId.parse(row.owner or "")
        if owner is None:
            return True
        if owner == self.owner:
            return False
        if owner.is_local:
            return not owner.is_alive()
        return utcnow() - row.received_at > ORPHANED_AFTER

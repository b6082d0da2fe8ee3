"""Deliveries are written down before they are answered, many per transaction (group commit)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from core.group_commit import GroupCommit
from core.models import Delivery, utcnow
from core.procs import ProcessId
from core.store import NewDelivery, Store

logger = logging.getLogger(__name__)
# A delivery another host answered and never handled is taken over after this long (that
# replica is gone: a live one handles its deliveries in seconds, rate-limit retries included).
ORPHANED_AFTER = timedelta(hours=1)
# Handled deliveries are kept this long: GitHub lets people redeliver the last 3 days' ones,
# and a redelivery must still find its record so it starts nothing.
KEEP_HANDLED = timedelta(days=7)
PRUNE_EVERY = timedelta(hours=6)


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
        self._writes: GroupCommit[NewDelivery | Finished, bool] = GroupCommit(
            self._write, on_loop=store.writes_now, name="github-deliveries")

    async def record(self, delivery: NewDelivery) -> bool:
        """Once it returns, the delivery is committed: a restart will not lose it."""
        return await self._writes.submit(delivery)

    async def finish(self, delivery_id: str, outcome: str) -> None:
        await self._writes.submit(Finished(delivery_id, outcome))

    async def close(self) -> None:
        await self._writes.close()

    def _write(self, items: list[NewDelivery | Finished], *, wait: bool = True) -> list[bool]:
        records = [i for i in items if isinstance(i, NewDelivery)]
        finished = [(i.delivery_id, i.outcome) for i in items if isinstance(i, Finished)]
        new = self._store.record_deliveries(records, finished, wait=wait)
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

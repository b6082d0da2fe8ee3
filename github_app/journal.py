"""Deliveries are written down before they are answered, many at a time (group commit)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from core.answers_first import AnswersFirst
from core.group_commit import GroupCommit
from core.models import utcnow
from core.procs import ProcessId
from core.store import NewDelivery, Store
from github_app import spool as spool_files
from github_app.spool import DeliverySpool

logger = logging.getLogger(__name__)
# A delivery another host answered and never handled is taken over after this long (that
# replica is gone: a live one handles its deliveries in seconds, rate-limit retries included).
ORPHANED_AFTER = timedelta(hours=1)
# Handled deliveries are kept this long: GitHub lets people redeliver the last 3 days' ones,
# and a redelivery must still find its record so it starts nothing.
KEEP_HANDLED = timedelta(days=7)
PRUNE_EVERY = timedelta(hours=6)
# After a failed write of spooled deliveries' rows, the next try waits this long.
RETRY_ROWS_AFTER = 1.0


@dataclass(frozen=True)
class Finished:
    """What a delivery did, once handled."""

    delivery_id: str
    outcome: str


class DeliveryJournal:
    """Records deliveries (True: new, False: a redelivery) and their outcomes.

    Rows and outcomes go through one group commit, so they share transactions and never wait
    on each other's write lock (SQLite's busy handler sleeps up to 100 ms at a time). Without
    a spool (PostgreSQL: replicas on other hosts take over each other's deliveries), a
    delivery's row, payload included, is committed before it is answered. With a spool
    (SQLite), it is appended to the spool before the answer, and its row without the payload
    is written in the next quiet spell between answers; its work waits for it (`recorded`).
    """

    def __init__(self, store: Store, owner: ProcessId | None = None, *,
                 spool: DeliverySpool | None = None,
                 priority: AnswersFirst | None = None) -> None:
        self._store = store
        self.owner = owner or ProcessId.current()
        self._spool = spool
        self._priority = priority or AnswersFirst()
        self._writes: GroupCommit[NewDelivery | Finished, bool] = GroupCommit(
            self._write, on_loop=store.writes_now, name="github-deliveries")
        # Spooled deliveries whose rows are not written yet, and what each row turns out to be.
        self._unrecorded: list[NewDelivery] = []
        # Kept until the delivery's work asks (`recorded`), so a late ask still gets the answer.
        self._rows: dict[str, asyncio.Future[bool]] = {}
        self._rows_due = asyncio.Event()
        self._recorder: asyncio.Task[None] | None = None

    def start(self) -> None:
        """With a spool: write the spooled deliveries' rows from now on (in the server's loop)."""
        if self._spool is not None and self._recorder is None:
            self._recorder = asyncio.create_task(self._write_rows(), name="github-rows")

    async def record(self, delivery: NewDelivery) -> bool:
        """Once it returns, the delivery is written down: a restart will not lose it."""
        if self._spool is None:
            return await self._writes.submit(delivery)
        return self._spool_one(delivery)

    async def recorded(self, delivery_id: str) -> bool:
        """Whether the delivery is this process's to handle: False if its row turned out to be
        written already (by another process that answered it at the same moment)."""
        row = self._rows.get(delivery_id)
        if row is None:
            return True
        mine = await asyncio.shield(row)
        self._rows.pop(delivery_id, None)
        return mine

    async def finish(self, delivery_id: str, outcome: str) -> None:
        await self._writes.submit(Finished(delivery_id, outcome))
        if self._spool is not None:
            self._spool.done([delivery_id])

    async def close(self) -> None:
        if self._recorder is not None:
            self._recorder.cancel()
            await asyncio.gather(self._recorder, return_exceptions=True)
            self._recorder = None
        await self._writes.close()
        if self._spool is not None:
            self._spool.close()

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

    def _spool_one(self, delivery: NewDelivery) -> bool:
        """On the event loop: whether the delivery is new (a read), then its append to the
        spool. Not grouped: both take microseconds, and the answer then goes out in the same
        turn of the loop, where a group waited for the turn's other requests to be read."""
        assert self._spool is not None
        if delivery.id in self._rows or self._store.known_deliveries([delivery.id]):
            return False
        self._spool.append([delivery])
        self._await_rows([delivery])
        return True

    def _await_rows(self, deliveries: Iterable[NewDelivery]) -> None:
        loop = asyncio.get_running_loop()
        for delivery in deliveries:
            self._rows[delivery.id] = loop.create_future()
            self._unrecorded.append(delivery)
        self._rows_due.set()

    async def _write_rows(self) -> None:
        """The spooled deliveries' rows, all those waiting in one transaction, when quiet."""
        while True:
            await self._rows_due.wait()
            await self._priority.wait_turn()
            self._rows_due.clear()
            try:
                failed = await self._write_batch()
            except Exception:  # a bug or a failing disk must not stop every later row
                logger.exception("writing spooled deliveries' rows failed")
                failed = True
            if failed:
                await asyncio.sleep(RETRY_ROWS_AFTER)
                self._rows_due.set()

    async def _write_batch(self) -> bool:
        """Write the rows waiting now; False once all are written, True if some must wait."""
        assert self._spool is not None
        batch, self._unrecorded = self._unrecorded, []
        outcomes = await asyncio.gather(
            *(self._writes.submit(dataclasses.replace(delivery, payload=None))
              for delivery in batch), return_exceptions=True)
        failed: list[NewDelivery] = []
        error: BaseException | None = None
        for delivery, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed.append(delivery)
                error = outcome
                continue
            if not outcome:  # another process wrote it first: its work, not ours
                self._spool.done([delivery.id])
            row = self._rows.get(delivery.id)
            if row is not None and not row.done():
                row.set_result(outcome)
        if failed:
            logger.error("writing the rows of %d spooled deliveries failed (%s); trying "
                         "again in %.0fs", len(failed), error, RETRY_ROWS_AFTER)
            self._unrecorded = failed + self._unrecorded
        return bool(failed)

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

    async def orphans(self) -> list[NewDelivery]:
        """Deliveries answered by a process that died before handling them, with their payloads
        (None if that jobbot kept none), now this process's. With a spool, they are in this
        one's spool now, and the dead processes' spool files are deleted."""
        rows = await asyncio.to_thread(self._store.unhandled_deliveries)
        spooled: dict[str, NewDelivery] = {}
        dead_files: list[Path] = []
        if self._spool is not None:
            spooled, dead_files = await asyncio.to_thread(self._dead_spool_files)
        # A row is orphaned by its owner's death, or when its delivery is in a dead spool file
        # (whatever host name that process had: a new container on the same disk has another).
        orphaned = [NewDelivery(row.id, row.event, row.action, row.payload, owner=row.owner)
                    for row in rows
                    if row.id in spooled or self._orphaned(row.owner, row.received_at)]
        taken = [delivery if delivery.payload is not None or delivery.id not in spooled
                 else dataclasses.replace(delivery, payload=spooled[delivery.id].payload)
                 for delivery in orphaned]
        # This process's from now on: a third process starting while they wait leaves them.
        await asyncio.to_thread(self._store.claim_deliveries, [d.id for d in taken],
                                str(self.owner))
        if self._spool is None:
            return taken
        known = await asyncio.to_thread(self._store.known_deliveries, list(spooled))
        # Answered, but the process died before writing their rows.
        unwritten = [dataclasses.replace(delivery, owner=str(self.owner))
                     for delivery in spooled.values() if delivery.id not in known]
        self._spool.append([dataclasses.replace(d, owner=str(self.owner))
                            for d in taken if d.payload is not None] + unwritten)
        # The dead files may hold these deliveries' only copy on the disk: they are deleted
        # only once the new copy is on the disk too.
        await asyncio.to_thread(self._spool.sync)
        self._await_rows(unwritten)
        self._spool.release(dead_files)
        return taken + unwritten

    def _dead_spool_files(self) -> tuple[dict[str, NewDelivery], list[Path]]:
        """The deliveries in spool files whose writers have died, and those files (claimed)."""
        assert self._spool is not None
        spooled: dict[str, NewDelivery] = {}
        dead = self._spool.claim_dead()
        for path in dead:
            spooled.update((d.id, d) for d in spool_files.read(path))
        return spooled, dead

    def _orphaned(self, owner_text: str | None, received_at: datetime | None) -> bool:
        owner = ProcessId.parse(owner_text or "")
        if owner is None:
            return True
        if owner == self.owner:
            return False
        if owner.is_local:
            return not owner.is_alive()
        return received_at is not None and utcnow() - received_at > ORPHANED_AFTER

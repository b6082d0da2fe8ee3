"""Group commit: one write per turn of the loop, and the writer thread when the lock is taken."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.group_commit import GroupCommit, WriteLocked
from core.sqlite_writes import RawWrite, known_keys
from core.store import SLACK_WORK, NewDelivery, Store
from github_app.journal import DeliveryJournal


class Writes:
    """Records each batch and the thread that wrote it; `locked` makes a write that may not
    wait refuse."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.locked = False

    def write(self, items: list[int], *, wait: bool = True) -> list[int]:
        if self.locked and not wait:
            raise WriteLocked("database is locked")
        self.batches.append((threading.current_thread().name, list(items)))
        return [i * 10 for i in items]


async def test_items_of_one_turn_share_one_write_on_the_loop() -> None:
    writes = Writes()
    commit: GroupCommit[int, int] = GroupCommit(writes.write, on_loop=True, name="writer")
    assert await asyncio.gather(*(commit.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert await commit.submit(7) == 70
    loop_thread = threading.current_thread().name
    assert writes.batches == [(loop_thread, [0, 1, 2, 3, 4]), (loop_thread, [7])]
    await commit.close()


async def test_a_locked_database_sends_the_batch_to_the_writer_thread() -> None:
    writes = Writes()
    commit: GroupCommit[int, int] = GroupCommit(writes.write, on_loop=True, name="writer")
    writes.locked = True
    first = [asyncio.ensure_future(commit.submit(i)) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the batch has gone to the thread; these wait for its next one
    later = [asyncio.ensure_future(commit.submit(i)) for i in (3, 4)]
    assert await asyncio.gather(*first, *later) == [0, 10, 20, 30, 40]
    assert [items for _, items in writes.batches] == [[0, 1, 2], [3, 4]]
    assert all(name.startswith("writer") for name, _ in writes.batches)
    writes.locked = False
    assert await commit.submit(5) == 50  # the lock is free again: back on the loop
    assert writes.batches[-1] == (threading.current_thread().name, [5])
    await commit.close()


async def test_a_failed_write_fails_each_waiter_and_the_next_batch_goes_on() -> None:
    calls: list[list[int]] = []

    def failing(items: list[int], *, wait: bool = True) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return items

    commit: GroupCommit[int, int] = GroupCommit(failing, on_loop=True)
    results = await asyncio.gather(commit.submit(1), commit.submit(2), return_exceptions=True)
    assert [type(r) for r in results] == [sqlite3.OperationalError] * 2
    assert await commit.submit(3) == 3
    await commit.close()


async def test_without_on_loop_every_batch_goes_to_the_thread() -> None:
    writes = Writes()
    commit: GroupCommit[int, int] = GroupCommit(writes.write, name="writer")
    assert await asyncio.gather(*(commit.submit(i) for i in range(3))) == [0, 10, 20]
    assert all(name.startswith("writer") for name, _ in writes.batches)
    await commit.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    return store


def hold_write_lock(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_write_that_may_not_wait_raises_write_locked_and_writes_nothing(
        sqlite_store: Store, tmp_path: Path) -> None:
    other = hold_write_lock(tmp_path / "jobbot.db")
    raw = RawWrite(sqlite_store.engine)
    with pytest.raises(WriteLocked), raw.transaction(wait=False):
        raise AssertionError("the transaction must not start")
    with pytest.raises(WriteLocked):
        sqlite_store.add_slack_work([("k1", "command", {})], wait=False)
    other.execute("COMMIT")
    with raw.transaction(wait=False) as cursor:
        assert known_keys(cursor, SLACK_WORK, "key", ["k1"]) == set()
    assert sqlite_store.add_slack_work([("k1", "command", {})], wait=False) == [True]
    other.close()
    raw.close()
    sqlite_store.close()


async def test_a_delivery_recorded_while_another_writer_holds_the_lock_waits_for_it(
        sqlite_store: Store, tmp_path: Path) -> None:
    journal = DeliveryJournal(sqlite_store)
    other = hold_write_lock(tmp_path / "jobbot.db")
    recording = asyncio.ensure_future(journal.record(
        NewDelivery("d-1", "ping", None, "{}", owner=str(journal.owner))))
    await asyncio.sleep(0.2)
    assert not recording.done()  # waiting in the writer thread, the loop free meanwhile
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(recording, 30) is True
    row = sqlite_store.delivery("d-1")
    assert row is not None and row.received_at <= datetime.now(UTC)
    await journal.close()
    sqlite_store.close()

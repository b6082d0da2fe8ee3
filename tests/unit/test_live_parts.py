"""The live tail's parts: a viewer's bounded queue, reads per wake-up, no lost wake-ups."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.events import Changes
from core.logs import FileLogs
from core.masking import Masker
from web.live import Lines, State, Subscription, lines_event


def batch(first: int, count: int) -> Lines:
    rows = [(1, n, f"line {n}") for n in range(first, first + count)]
    return Lines(rows, lines_event(rows))


async def test_a_viewer_keeps_what_fits_and_is_dropped_past_its_limit() -> None:
    first, second = batch(1, 10), batch(11, 10)
    viewer = Subscription(limit=len(first.event) + len(second.event))
    dropped: list[bool] = []
    viewer.on_drop = lambda: dropped.append(True)
    viewer.put(first)
    viewer.put(None)  # the end and state changes take no room
    viewer.put(second)
    assert await viewer.take(0) == [first, None, second]
    assert not viewer.dropped  # taken: the room is free again
    for start in range(21, 60, 10):
        viewer.put(batch(start, 10))
    assert viewer.dropped
    assert dropped == [True]
    assert await viewer.take(3600) == []  # emptied, and no waiting once dropped
    viewer.put(batch(99, 1))
    assert await viewer.take(0) == []
    assert dropped == [True]


async def test_take_waits_for_the_next_batch() -> None:
    viewer = Subscription(limit=1 << 20)
    waiting = asyncio.create_task(viewer.take(3600))
    await asyncio.sleep(0)
    assert not waiting.done()
    one = batch(1, 1)
    viewer.put(one)
    assert await asyncio.wait_for(waiting, 30) == [one]
    assert await viewer.take(0) == []


async def test_following_ends_when_the_writer_closes_without_asking_the_store(
        tmp_path: Path) -> None:
    store = FileLogs(tmp_path)
    writer = await store.writer("r1", 1, Masker(["hunter22"]))
    asked: list[bool] = []

    async def finished() -> bool:
        asked.append(True)
        return False

    reads: list[list[str]] = []

    async def follow() -> None:
        async for lines in store.follow_batches("r1", 1, finished, idle=3600, poll=3600):
            reads.append(lines)

    follower = asyncio.create_task(follow())
    async with asyncio.timeout(30):
        while "r1" not in store._followers:  # following before the writer closes
            await asyncio.sleep(0)
    writer.write(b"one\ntwo hunter22\nthr")
    writer.write(b"ee\n" + b"x\n" * 5000)
    writer.write(b"no newline at the end")
    await writer.close()
    await asyncio.wait_for(follower, 30)
    lines = [line for read in reads for line in read]
    assert lines[:3] == ["one", "two ********", "three"]
    assert lines[-1] == "no newline at the end"
    assert len(lines) == 5004
    assert len(reads) < 10  # a read per wake-up, not a step per line
    assert asked == []
    assert store.line_count("r1", 1) == 5004


async def test_a_change_between_reading_and_waiting_is_not_missed() -> None:
    changes = Changes()
    seen = changes.snapshot()
    changes.notify()  # e.g. an attempt started while the store was being read
    await asyncio.wait_for(changes.wait(3600, since=seen), 30)


def test_state_batches_take_no_room() -> None:
    viewer = Subscription(limit=0)
    viewer.put(State.__new__(State))
    assert not viewer.dropped

"""The quiet collector: full garbage collections wait for a spell without answers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator

from core.answers_first import AnswersFirst
from core.quiet_gc import NEVER, QuietCollector


class Node:
    def __init__(self) -> None:
        self.me = self


def garbage_in_the_oldest_generation() -> weakref.ref[Node]:
    """A reference cycle that only a full collection frees."""
    node = Node()
    gc.collect()  # the cycle, still referenced here, moves to the oldest generation
    return weakref.ref(node)


@contextlib.asynccontextmanager
async def collecting(*, overdue: float) -> AsyncIterator[None]:
    collector = asyncio.create_task(QuietCollector(every=0.01, quiet=0.01,
                                                   overdue=overdue).run())
    try:
        yield
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)


async def freed(ref: weakref.ref[Node]) -> bool:
    """Whether the object is collected within a few seconds."""
    for _ in range(500):
        if ref() is None:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_full_collections_wait_for_a_quiet_spell() -> None:
    before = gc.get_threshold()
    async with collecting(overdue=60):
        with AnswersFirst().answering():
            dead = garbage_in_the_oldest_generation()
            await asyncio.sleep(0.1)  # ten turns of the collector, all while answering
            assert gc.get_threshold()[2] == NEVER  # CPython's own full passes are off
            assert dead() is not None
        assert await freed(dead)
    assert gc.get_threshold() == before


async def test_a_full_collection_is_made_under_sustained_load_once_overdue() -> None:
    async with collecting(overdue=0.05):
        with AnswersFirst().answering():  # never quiet
            assert await freed(garbage_in_the_oldest_generation())


async def test_collectors_running_at_once_give_back_the_threshold_they_found() -> None:
    before = gc.get_threshold()
    first = asyncio.create_task(QuietCollector(every=0.01).run())
    await asyncio.sleep(0.02)
    second = asyncio.create_task(QuietCollector(every=0.01).run())
    await asyncio.sleep(0.02)
    first.cancel()  # the first to start stops first
    await asyncio.gather(first, return_exceptions=True)
    assert gc.get_threshold()[2] == NEVER  # the second still runs
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert gc.get_threshold() == before

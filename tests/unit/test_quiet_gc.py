"""The quiet collector: full garbage collections wait for a spell without answers."""

from __future__ import annotations

import asyncio
import gc
import weakref

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


async def test_full_collections_wait_for_a_quiet_spell() -> None:
    before = gc.get_threshold()
    gate = AnswersFirst()
    collector = asyncio.create_task(QuietCollector(every=0.01, quiet=0.01, overdue=60).run())
    try:
        with gate.answering():
            dead = garbage_in_the_oldest_generation()
            await asyncio.sleep(0.1)  # ten turns of the collector, all while answering
            assert gc.get_threshold()[2] == NEVER  # CPython's own full passes are off
            assert dead() is not None
        for _ in range(500):
            if dead() is None:
                break
            await asyncio.sleep(0.01)
        assert dead() is None
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
    assert gc.get_threshold() == before


async def test_a_full_collection_is_made_under_sustained_load_once_overdue() -> None:
    collector = asyncio.create_task(QuietCollector(every=0.01, quiet=0.01, overdue=0.05).run())
    try:
        with AnswersFirst().answering():  # never quiet
            dead = garbage_in_the_oldest_generation()
            for _ in range(500):
                if dead() is None:
                    break
                await asyncio.sleep(0.01)
            assert dead() is None
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)

"""The webhook's group commit and the answers-first rule for background work."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from core.answers_first import AnswersFirst
from core.group_commit import GroupCommit
from core.store import NewDelivery, Store
from github_app.journal import DeliveryJournal


async def test_concurrent_submissions_share_one_write() -> None:
    writes: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        writes.append(items)
        return [item * 10 for item in items]

    commit: GroupCommit[int, int] = GroupCommit(write)
    results = await asyncio.gather(*(commit.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert writes == [[0, 1, 2, 3, 4]]
    assert await commit.submit(7) == 70  # a later one gets a write of its own
    assert writes[-1] == [7]


async def test_a_failed_write_fails_every_waiter_and_the_next_write_goes_on() -> None:
    fail = [True]

    def write(items: list[str]) -> list[str]:
        if fail.pop():
            raise OSError("disk full")
        return items

    commit: GroupCommit[str, str] = GroupCommit(write)
    outcomes = await asyncio.gather(commit.submit("a"), commit.submit("b"),
                                    return_exceptions=True)
    assert [str(o) for o in outcomes] == ["disk full", "disk full"]
    fail.append(False)
    assert await commit.submit("c") == "c"


async def test_work_waits_while_an_answer_is_being_made() -> None:
    priority = AnswersFirst(quiet=0.0, max_wait=60.0)
    with priority.answering():
        turn = asyncio.create_task(priority.wait_turn())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not turn.done()
    await turn  # the answer is made: work goes on


async def test_work_is_never_held_longer_than_max_wait() -> None:
    priority = AnswersFirst(quiet=0.0, max_wait=0.0)
    with priority.answering():
        turn = asyncio.create_task(priority.wait_turn())
        await asyncio.sleep(0)
        assert turn.done()  # under sustained load work still moves


def test_a_repeated_id_in_one_batch_is_new_once(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    journal = DeliveryJournal(store)
    first = NewDelivery("d1", "ping", None, "{}")
    try:
        assert journal._write([first, NewDelivery("d2", "ping", None, "{}"), first]) == [
            True, True, False]
    finally:
        store.close()


async def test_the_journal_prunes_handled_deliveries_older_than_it_keeps(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    journal = DeliveryJournal(store)
    assert await journal.record(NewDelivery("old", "ping", None, "{}"))
    assert await journal.record(NewDelivery("open", "push", None, "{}"))
    await journal.finish("old", "pong")
    assert await journal.prune() == 0  # kept for a week: a redelivery must still find it
    assert not await journal.record(NewDelivery("old", "ping", None, "{}"))
    assert await journal.prune(keep=timedelta(seconds=-60)) == 1
    assert store.delivery("old") is None
    assert [d.id for d in store.unhandled_deliveries()] == ["open"]

"""The delivery spool: appended before the answer, rows written when quiet, files taken over."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.answers_first import AnswersFirst
from core.procs import ProcessId
from core.store import NewDelivery, Store
from github_app import spool
from github_app.journal import DeliveryJournal
from github_app.spool import DeliverySpool
from tests.support.github import dead_process


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    yield store
    store.close()


ANSWERED = datetime(2026, 12, 6, 18, 0, 0, 123456, tzinfo=UTC)


def delivery(delivery_id: str, owner: ProcessId | None = None) -> NewDelivery:
    return NewDelivery(delivery_id, "push", None, '{"ref": "refs/heads/main"}',
                       owner=str(owner or ProcessId.current()),
                       head=("acme/shop", "main", "a" * 40), received_at=ANSWERED)


def test_a_file_is_deleted_once_every_delivery_in_it_is_done(tmp_path: Path) -> None:
    files = DeliverySpool(tmp_path, segment_bytes=1)  # a new file for every append
    files.append([delivery("d1"), delivery("d2")])
    files.append([delivery("d3")])
    first, second = sorted(tmp_path.iterdir())
    assert [d.id for d in spool.read(first)] == ["d1", "d2"]
    assert list(spool.read(second)) == [delivery("d3")]  # every field as written
    files.done(["d1"])
    assert first.exists()
    files.done(["d2", "unknown"])
    assert not first.exists()
    files.done(["d3"])
    assert second.exists()  # the file being written to stays until the spool closes
    files.close()
    assert list(tmp_path.iterdir()) == []


def test_a_record_cut_short_ends_the_file(tmp_path: Path) -> None:
    files = DeliverySpool(tmp_path)
    files.append([delivery("d1"), delivery("d2")])
    [path] = tmp_path.iterdir()
    path.write_bytes(path.read_bytes()[:-3])  # the writer died in the middle of a record
    assert [d.id for d in spool.read(path)] == ["d1"]


def test_a_failed_append_leaves_no_part_of_its_record(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    files = DeliverySpool(tmp_path)
    files.append([delivery("d1")])
    real_write = os.write

    def short_then_full(fd: int, data: bytes) -> int:
        if len(data) > 100:
            return real_write(fd, data[:100])  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(spool.os, "write", short_then_full)
        with pytest.raises(OSError, match="No space left"):
            files.append([delivery("d2")])
    files.append([delivery("d3")])
    [path] = tmp_path.iterdir()
    assert [d.id for d in spool.read(path)] == ["d1", "d3"]
    assert files.waiting == 2


async def test_a_spooled_delivery_gets_its_row_once_no_answer_is_under_way(
        store: Store, tmp_path: Path) -> None:
    priority = AnswersFirst(quiet=0.0, max_wait=60.0)
    journal = DeliveryJournal(store, spool=DeliverySpool(tmp_path / "spool"), priority=priority)
    journal.start()
    try:
        with priority.answering():
            assert await journal.record(delivery("d1"))
            assert not await journal.record(delivery("d1"))  # a redelivery, before its row
            recorded = asyncio.ensure_future(journal.recorded("d1"))
            await asyncio.sleep(0.1)
            assert store.delivery("d1") is None and not recorded.done()
        assert await asyncio.wait_for(recorded, 30) is True
        row = store.delivery("d1")
        assert row is not None and row.payload is None  # the payload is in the spool
        assert store.branch_head("acme/shop", "main") == "a" * 40
        assert not await journal.record(delivery("d1"))  # a redelivery, found by its row
        await journal.finish("d1", "pushed")
        assert len(list((tmp_path / "spool").iterdir())) == 1  # the file being written to
    finally:
        await journal.close()
    assert list((tmp_path / "spool").iterdir()) == []  # nothing waits: no file is left


@pytest.mark.parametrize("asked", ["before its row is written", "after"])
async def test_a_delivery_another_process_recorded_first_is_not_handled_here(
        store: Store, tmp_path: Path, asked: str) -> None:
    priority = AnswersFirst(quiet=0.0, max_wait=60.0)
    files = DeliverySpool(tmp_path / "spool")
    journal = DeliveryJournal(store, spool=files, priority=priority)
    journal.start()
    try:
        with priority.answering():
            assert await journal.record(delivery("d1"))
            store.record_deliveries([delivery("d1", dead_process())])  # the other process
        if asked == "after":  # the rows are written before the work asks (a busy queue)
            while files.waiting:
                await asyncio.sleep(0.01)
        assert await asyncio.wait_for(journal.recorded("d1"), 30) is False
        assert files.waiting == 0
        row = store.delivery("d1")
        assert row is not None and row.owner == str(dead_process())
    finally:
        await journal.close()


async def test_the_deliveries_a_dead_process_spooled_are_taken_over(
        store: Store, tmp_path: Path) -> None:
    priority = AnswersFirst(quiet=0.0, max_wait=60.0)
    dead = DeliveryJournal(store, dead_process(), spool=DeliverySpool(tmp_path / "spool"),
                           priority=priority)
    dead.start()
    with priority.answering():
        assert await dead.record(delivery("unwritten", dead_process()))
        await dead.close()  # died before writing the row
    store.record_deliveries([delivery("written", dead_process())])  # row, not handled
    [dead_file] = (tmp_path / "spool").iterdir()

    heir = DeliveryJournal(store, spool=DeliverySpool(tmp_path / "spool"))
    heir.start()
    try:
        orphans = {d.id: d for d in await heir.orphans()}
        assert set(orphans) == {"unwritten", "written"}
        assert orphans["written"].payload == delivery("written").payload  # from the spool
        assert not dead_file.exists()  # handed on to the heir's own spool file
        assert await asyncio.wait_for(heir.recorded("unwritten"), 30) is True
        row = store.delivery("unwritten")
        assert row is not None and row.owner == str(heir.owner)
        assert row.received_at.replace(tzinfo=UTC) == ANSWERED  # answered then, not now
    finally:
        await heir.close()
    [heir_file] = (tmp_path / "spool").iterdir()  # both still wait to be handled
    assert {d.id for d in spool.read(heir_file)} == {"unwritten", "written"}
    assert {d.owner for d in spool.read(heir_file)} == {str(heir.owner)}


async def test_a_live_process_spool_file_is_left_alone(store: Store, tmp_path: Path) -> None:
    priority = AnswersFirst(quiet=0.0, max_wait=60.0)
    live = DeliveryJournal(store, spool=DeliverySpool(tmp_path / "spool"), priority=priority)
    other = DeliveryJournal(store, ProcessId("elsewhere", 1, 1),
                            spool=DeliverySpool(tmp_path / "spool"))
    try:
        with priority.answering():
            assert await live.record(delivery("d1"))  # spooled by this (running) process
            assert await other.orphans() == []
        assert len(list((tmp_path / "spool").iterdir())) == 1
    finally:
        await live.close()
        await other.close()


async def test_a_dead_process_spool_is_taken_over_whatever_its_host_name(
        store: Store, tmp_path: Path) -> None:
    # The same disk, a new container: the old process's host name is not this one's.
    gone = ProcessId("old-container", 4242, 1234)
    priority = AnswersFirst(quiet=0.0, max_wait=60.0)
    dead = DeliveryJournal(store, gone, spool=DeliverySpool(tmp_path / "spool"),
                           priority=priority)
    dead.start()
    with priority.answering():
        assert await dead.record(delivery("unwritten", gone))
    assert await dead.record(delivery("written", gone))
    assert await asyncio.wait_for(dead.recorded("written"), 30)  # its row, without payload
    await dead.close()

    heir = DeliveryJournal(store, spool=DeliverySpool(tmp_path / "spool"))
    heir.start()
    try:
        orphans = {d.id: d for d in await heir.orphans()}
        assert set(orphans) == {"unwritten", "written"}
        assert orphans["written"].payload == delivery("written").payload
        # Now the heir's: a third process starting meanwhile leaves it alone.
        row = store.delivery("written")
        assert row is not None and row.owner == str(heir.owner)
        third = DeliveryJournal(store, spool=DeliverySpool(tmp_path / "spool"))
        assert await third.orphans() == []
        await third.close()
    finally:
        await heir.close()


def test_a_file_that_cannot_be_cut_back_takes_no_more_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = DeliverySpool(tmp_path)
    files.append([delivery("d1")])
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    def failing_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", half_then_full)
    monkeypatch.setattr(os, "ftruncate", failing_truncate)
    with pytest.raises(OSError, match="No space left"):
        files.append([delivery("d2")])
    monkeypatch.undo()
    files.append([delivery("d3")])
    first, second = sorted(tmp_path.glob("*.spool"))
    assert [d.id for d in spool.read(first)] == ["d1"]  # the half record ends it
    assert [d.id for d in spool.read(second)] == ["d3"]
    files.close()

"""Slack state in the database: confirmations and acknowledged work survive a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import BOT
from bot.backlog import Backlog
from bot.commands import Command
from bot.router import Confirmations
from core.errors import Conflict, PermissionDenied, TemporaryFailure
from core.models import Source
from core.policy import Actor
from core.store import Store
from tests.fakes.slack import FakeSlack
from tests.integration.test_slack_bot import start_bot
from tests.support.apps import dead_process


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack()
    await slack.start()
    yield slack
    await slack.stop()


async def test_only_the_requester_confirms_and_only_in_time(store: Store) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    confirmations = Confirmations(store, ttl=300, clock=lambda: now[0])
    actor = Actor(id="slack:U1", source=Source.SLACK, slack_user="U1",
                  slack_usergroups=frozenset({"S1"}))
    pending = await confirmations.add(Command("run", job="risky", overrides={"A": "1"}), actor, {})
    with pytest.raises(PermissionDenied):
        await confirmations.take(pending.id, "U2", key="click-1")
    taken = await confirmations.take(pending.id, "U1", key="click-2")
    assert taken.command == Command("run", job="risky", overrides={"A": "1"})
    assert taken.actor == actor
    # The same click replayed after a restart gets it again; another click does not.
    assert (await confirmations.take(pending.id, "U1", key="click-2")).id == pending.id
    with pytest.raises(Conflict):
        await confirmations.take(pending.id, "U1", key="click-3")
    with pytest.raises(Conflict):
        await confirmations.take(pending.id, "U1", answer="declined", key="click-2")
    late = await confirmations.add(Command("run", job="risky"), actor, {})
    now[0] += timedelta(seconds=301)
    with pytest.raises(Conflict):
        await confirmations.take(late.id, "U1", key="click-4")
    with pytest.raises(Conflict):
        await confirmations.take("no-such-confirmation", "U1", key="click-5")


async def test_backlog_records_once_and_replays_what_was_not_done(store: Store) -> None:
    done: list[str] = []
    blocked = asyncio.Event()

    async def stuck(key: str, body: dict[str, Any]) -> None:
        await blocked.wait()  # the process dies before this work is done

    first = Backlog(store, {"command": stuck})
    first._intake.owner = dead_process()
    assert await first.accept("k1", "command", {"text": "run hello"})
    assert not await first.accept("k1", "command", {"text": "run hello"})  # a Slack retry
    await first.close()

    async def record(key: str, body: dict[str, Any]) -> None:
        done.append(f"{key} {body['text']}")

    second = Backlog(store, {"command": record})
    assert await second.replay() == 1
    await second.join()
    assert done == ["k1 run hello"]
    assert await second.replay() == 0  # finished work is not replayed
    await second.close()


async def test_work_of_a_live_process_is_left_to_it(store: Store) -> None:
    never = asyncio.Event()

    async def stuck(key: str, body: dict[str, Any]) -> None:
        await never.wait()

    alive = Backlog(store, {"command": stuck})
    await alive.accept("k1", "command", {})
    other = Backlog(store, {"command": stuck})  # another process starting now
    other._intake.owner = dead_process()  # (any other identity will do)
    assert await other.replay() == 0
    await alive.close()


async def test_a_confirmation_survives_a_restart(tmp_path: Path, fake: FakeSlack,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before, stop = await start_bot(tmp_path, fake)
    _, _, trigger = await before.command("run risky")
    pending = (await before.slack.answer(trigger))["blocks"][-1]["elements"][0]["value"]
    await stop()
    # A new process (or another replica) on the same database honours the click.
    after, stop = await start_bot(tmp_path, fake)
    try:
        _, key = await after.slack.click("jobbot_confirm", pending, user="U0MALLORY")
        assert "only <@U0ALICE>, who asked" in (await after.slack.answer(key))["text"]
        _, key = await after.slack.click("jobbot_confirm", pending, user="U0ALICE")
        answer = await after.slack.answer(key)
        assert "started" in answer["text"]
        runs = await after.runtime.service.runs("risky")
        assert len(runs) == 1 and runs[0].actor == "slack:U0ALICE"
    finally:
        await stop()


async def test_an_acknowledged_command_is_done_after_a_restart(
        tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before, stop = await start_bot(tmp_path, fake)
    never = asyncio.Event()

    async def crash_before_the_work(key: str, body: dict[str, Any]) -> None:
        await never.wait()

    before.app[BOT].backlog.handlers["command"] = crash_before_the_work
    before.app[BOT].backlog._intake.owner = dead_process()  # killed once it has acked
    body, trigger = before.slack.command_body("run hello")
    status, _ = await before.slack.post(body, before.slack.headers(body))
    assert status == 200  # acknowledged; the work was in hand when the process stopped
    await stop()
    assert fake.responses.get(trigger) is None
    after, stop = await start_bot(tmp_path, fake)
    try:
        # The unfinished work of the dead process is done at start-up.
        answer = await after.slack.answer(trigger)
        assert "started" in answer["text"]
        # Slack's retry of the same request, arriving now, starts nothing more.
        status, _ = await after.slack.post(body, after.slack.headers(body, retry_num=1))
        assert status == 200
        await after.app[BOT].backlog.join()
        assert len(await after.runtime.service.runs("hello")) == 1
        assert len(fake.responses[trigger]) == 1
    finally:
        await stop()


async def test_work_that_fails_for_now_is_tried_again_and_a_bug_ends_it(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    tries: list[str] = []

    async def flaky(key: str, body: dict[str, Any]) -> None:
        tries.append(key)
        if key == "broken":
            raise RuntimeError("a bug")
        if len(tries) == 1:
            raise TemporaryFailure("Slack is down", delay=0.0)

    backlog = Backlog(store, {"command": flaky})
    await backlog.accept("recovers", "command", {})
    await backlog.join()
    await backlog.accept("broken", "command", {})
    await backlog.join()
    assert tries == ["recovers", "recovers", "broken"]
    assert "a bug" in caplog.text  # logged with its traceback
    await backlog.close()
    # Both are done: neither is replayed at the next start.
    assert store.take_over_slack_work("next:1:1", lambda owner, at: True) == []

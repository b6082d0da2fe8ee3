"""Locks in Slack: a waiting run's thread says where it is in line and behind what, and is
edited as the line moves; a like request answers that it joined; /job status shows the line;
a waiting run is cancelled from Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.models import RunState
from tests.fakes.slack import FakeSlack
from tests.integration.test_locks import GATED, Gates
from tests.integration.test_slack_bot import Bot, parent_of, start_bot
from tests.support.apps import python_job

JOBS = [
    python_job("migrate", GATED, env={"GATE": ""}, lock="db-prod"),
    python_job("seed", GATED, env={"GATE": ""}, lock="db-prod"),
]


@pytest.fixture
async def bot(tmp_path: Path, slack: FakeSlack, db_url: str, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Bot]:
    monkeypatch.chdir(tmp_path)
    started, stop = await start_bot(tmp_path, slack, db_url, jobs=JOBS)
    yield started
    await stop()


async def test_a_waiting_runs_thread_shows_its_place_and_follows_the_line(
        bot: Bot, tmp_path: Path) -> None:
    gates = Gates(tmp_path / "gates")
    slack, service = bot.fake, bot.runtime.service
    first = bot.run_id_from(await bot.ask(f"run migrate GATE={gates.path('a')}"))
    await slack.wait_for(lambda: (p := parent_of(slack, "demo/migrate #1")) and "running" in p.text)

    answer = await bot.ask(f"run seed GATE={gates.path('b')}", user="U0BOB")
    assert "queued" in answer and "seed #1" in answer
    assert "waiting for db-prod: 1st in line, behind migrate #1, started by <@U0ALICE>" in answer
    answer = await bot.ask(f"run seed GATE={gates.path('c')}", user="U0BOB")
    assert "waiting for db-prod: 2nd in line, behind migrate #1" in answer
    # The same request again joins the waiting run: no third run.
    joined = await bot.ask(f"run seed GATE={gates.path('c')}", user="U0CAROL")
    assert "joined" in joined and "seed #2" in joined and "waiting for db-prod" in joined
    assert len(await service.runs("seed")) == 2

    second = await slack.wait_for(lambda: (p := parent_of(slack, "demo/seed #2"))
                                 and "2nd in line" in p.text and p)
    assert "behind migrate #1, started by <@U0ALICE>" in second.text
    assert "cancel" in str(second.blocks[-1]).lower()  # a waiting run can be cancelled
    status = await bot.ask("status seed#2")
    assert "waiting for db-prod: 2nd in line, behind migrate #1" in status

    gates.open("a")  # the line moves: seed #1 runs, seed #2 is next, behind seed #1
    await slack.wait_for(lambda: "1st in line, behind seed #1, started by <@U0BOB>"
                        in second.text)
    assert any("2nd in line" in text for text in second.history)
    await slack.wait_for(lambda: (p := parent_of(slack, "demo/seed #1")) and "running" in p.text)

    cancelled = await bot.ask("cancel seed#2")
    assert "seed #2" in cancelled
    run = await service.get_run((await service.runs("seed"))[0].id)
    assert (run.state, run.started_at) == (RunState.CANCELLED.value, None)
    await slack.wait_for(lambda: "cancelled" in second.text and "in line" not in second.text)
    gates.open("b")
    assert await bot.wait_final(first) == "succeeded"
    assert await bot.wait_final((await service.runs("seed"))[1].id) == "succeeded"

"""Job parameters in Slack: the form (views.open) a run opens, its submission checked in the
ack (response_action: errors), Rerun with changes, and secret values kept out of sight."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from bot.app import BOT
from core.models import RunState
from tests.fakes.slack import FakeSlack
from tests.integration.test_slack_bot import Bot, start_bot
from tests.support.apps import python_job

TOKEN_VALUE = "s3cretpassphrase42"
PARAMETERS: list[dict[str, Any]] = [
    {"name": "TARGET", "type": "choice", "choices": ["staging", "production"],
     "required": True, "description": "where to deploy"},
    {"name": "STEPS", "type": "int", "default": 1},
    {"name": "DRY", "type": "bool", "default": False},
    {"name": "TOKEN", "pattern": "^[a-z0-9]+$", "secret": True},
]
PRINT = """
    import os
    print('deploying to', os.environ['TARGET'], 'steps', os.environ['STEPS'],
          'dry', os.environ['DRY'], 'token', os.environ.get('TOKEN', '-'))
"""
JOBS = [
    python_job("deploy", PRINT, parameters=PARAMETERS),
    python_job("careful", PRINT, parameters=PARAMETERS, confirm=True),
    python_job("plain", "print('plain')"),
]


@pytest.fixture
async def bot(tmp_path: Path, slack: FakeSlack, db_url: str, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Bot]:
    monkeypatch.chdir(tmp_path)
    started, stop = await start_bot(tmp_path, slack, db_url, jobs=JOBS)
    yield started
    await stop()


async def opened_form(bot: Bot, trigger: str) -> dict[str, Any]:
    """The modal jobbot opened with `trigger` (the command's or the click's trigger_id)."""
    call = await bot.fake.wait_for(lambda: next(
        (c for c in bot.fake.calls_of("views.open") if c.params["trigger_id"] == trigger), None))
    view = call.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    return next(v for v in bot.fake.views.values() if v["private_metadata"]
                == view["private_metadata"] and v["blocks"] == view["blocks"])


def fields(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


def database_text(bot: Bot) -> str:
    """Every row of every table, as text: where a secret value must never be."""
    store = bot.runtime.store
    parts = []
    with store.engine.connect() as conn:
        for table in sqlalchemy.inspect(store.engine).get_table_names():
            for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


async def submitted_run(bot: Bot, view: dict[str, Any], values: dict[str, str]) -> str:
    status, answer = await bot.slack.submit(view, values)
    assert status == 200 and answer is None, answer
    response_url = json.loads(view["private_metadata"])["response_url"]
    key = response_url.rsplit("/", 1)[1]
    text = str((await bot.slack.answer(key))["text"])
    return bot.run_id_from(text)


async def test_a_run_missing_a_required_parameter_opens_the_form(bot: Bot) -> None:
    status, _, trigger = await bot.command("run deploy STEPS=3")
    assert status == 200
    view = await opened_form(bot, trigger)
    assert view["callback_id"] == "jobbot_run_form"
    shown = fields(view)
    assert list(shown) == ["param:TARGET", "param:STEPS", "param:DRY", "param:TOKEN"]
    assert shown["param:TARGET"]["optional"] is False
    assert [o["value"] for o in shown["param:TARGET"]["element"]["options"]] == [
        "staging", "production"]
    assert shown["param:TARGET"]["hint"]["text"] == "where to deploy"
    # What the command gave fills the form; defaults fill the rest.
    assert shown["param:STEPS"]["element"]["initial_value"] == "3"
    assert shown["param:DRY"]["element"]["initial_option"]["value"] == "false"
    assert "initial_value" not in shown["param:TOKEN"]["element"]
    await bot.app[BOT].backlog.join()
    assert await bot.runtime.service.runs() == []
    assert bot.fake.refused == []


async def test_a_submission_with_bad_values_shows_errors_on_their_fields(bot: Bot) -> None:
    _, _, trigger = await bot.command("run deploy")
    view = await opened_form(bot, trigger)
    status, answer = await bot.slack.submit(view, {
        "param:TARGET": "staging", "param:STEPS": "lots", "param:TOKEN": "NOT-" + TOKEN_VALUE})
    assert status == 200
    assert answer == {"response_action": "errors", "errors": {
        "param:STEPS": "'lots' is not a whole number",
        "param:TOKEN": "the value does not match the pattern ^[a-z0-9]+$"}}
    status, answer = await bot.slack.submit(view, {"param:STEPS": "2"})
    assert answer == {"response_action": "errors", "errors": {
        "param:TARGET": "is required (where to deploy)"}}
    await bot.app[BOT].backlog.join()
    assert await bot.runtime.service.runs() == []
    entries = await asyncio.to_thread(bot.runtime.store.audit_log)
    refused = [e for e in entries if e.target == "/job run demo/deploy (form)"]
    assert [e.result for e in refused] == ["rejected", "rejected"]
    assert TOKEN_VALUE not in database_text(bot)


async def test_a_valid_submission_starts_the_run_and_keeps_the_secret_out_of_sight(
        bot: Bot) -> None:
    _, _, trigger = await bot.command("run deploy --ref main")
    view = await opened_form(bot, trigger)
    run_id = await submitted_run(bot, view, {"param:TARGET": "production",
                                             "param:STEPS": "+02", "param:DRY": "true",
                                             "param:TOKEN": TOKEN_VALUE})
    assert await bot.wait_final(run_id) == RunState.SUCCEEDED
    run = await bot.runtime.service.get_run(run_id)
    assert run.overrides == {"TARGET": "production", "STEPS": "2", "DRY": "true"}
    assert run.ref == "main" and run.actor == "slack:U0ALICE"
    assert list(run.secret_parameters) == ["TOKEN"]
    logs = await bot.ask(f"logs {run_id}")
    assert "deploying to production steps 2 dry true token ********" in logs
    await bot.fake.wait_for(lambda: any("succeeded" in m.text for m in bot.fake.parents()))
    await bot.app[BOT].backlog.join()
    assert TOKEN_VALUE not in bot.fake.everything_sent()
    assert TOKEN_VALUE not in database_text(bot)
    entries = await asyncio.to_thread(bot.runtime.store.audit_log)
    assert any(e.target.startswith("/job run demo/deploy TARGET=production")
               and "TOKEN='********'" in e.target and e.result == "ok" for e in entries)


async def test_a_retried_submission_starts_one_run(bot: Bot) -> None:
    _, _, trigger = await bot.command("run deploy")
    view = await opened_form(bot, trigger)
    body = bot.slack.view_submission(view, {"param:TARGET": "staging"})
    assert (await bot.slack.post(body, bot.slack.headers(body)))[0] == 200
    assert (await bot.slack.post(body, bot.slack.headers(body, retry_num=1)))[0] == 200
    await bot.fake.wait_for(lambda: bot.fake.responses)
    await bot.app[BOT].backlog.join()
    runs = await bot.runtime.service.runs("deploy")
    assert len(runs) == 1 and runs[0].overrides == {"TARGET": "staging", "STEPS": "1",
                                                    "DRY": "false"}


async def test_form_flag_and_commands_that_give_everything(bot: Bot) -> None:
    # Everything given: no form, the defaults applied.
    run_id = bot.run_id_from(await bot.ask("run deploy TARGET=staging"))
    assert (await bot.runtime.service.get_run(run_id)).overrides == {
        "TARGET": "staging", "STEPS": "1", "DRY": "false"}
    # --form asks anyway, filled in with what was given.
    _, _, trigger = await bot.command("run deploy TARGET=production --form")
    view = await opened_form(bot, trigger)
    assert fields(view)["param:TARGET"]["element"]["initial_option"]["value"] == "production"
    answer = await bot.ask("run plain --form")
    assert "demo/plain has no parameters to fill in: run it without --form" in answer
    # The same errors as the form's, in one answer.
    answer = await bot.ask("run deploy TARGET=stagin STEPS=x")
    assert ("bad parameters for deploy: TARGET: 'stagin' is not one of staging, production "
            "(did you mean staging?); STEPS: 'x' is not a whole number") in answer
    answer = await bot.ask("run deploy TARGET=staging TOKEN=BAD")
    assert "TOKEN: the value does not match the pattern" in answer and "BAD" not in answer
    assert len(await bot.runtime.service.runs("deploy")) == 1


async def test_a_field_changed_inside_the_form_is_acknowledged_and_does_nothing(
        bot: Bot) -> None:
    _, _, trigger = await bot.command("run deploy")
    view = await opened_form(bot, trigger)
    body = bot.slack.view_action_body(view, "param:TARGET", "staging")
    status, _ = await bot.slack.post(body, bot.slack.headers(body))
    assert status == 200
    await bot.app[BOT].backlog.join()
    assert await bot.runtime.service.runs() == []


async def test_rerun_with_changes_opens_the_form_filled_in_from_the_run(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask(f"run deploy TARGET=staging STEPS=4 "
                                           f"TOKEN={TOKEN_VALUE}"))
    assert await bot.wait_final(run_id) == RunState.SUCCEEDED
    parent = await bot.fake.wait_for(lambda: next(
        (m for m in bot.fake.parents() if "succeeded" in m.text), None))
    buttons = parent.blocks[-1]["elements"]
    assert [b["text"]["text"] for b in buttons] == ["View logs", "Rerun", "Rerun with changes"]
    _, trigger = await bot.slack.click("jobbot_rerun_form", run_id)
    view = await opened_form(bot, trigger)
    shown = fields(view)
    assert shown["param:TARGET"]["element"]["initial_option"]["value"] == "staging"
    assert shown["param:STEPS"]["element"]["initial_value"] == "4"
    # The secret is never shown back; left empty, the run's value is kept.
    assert "initial_value" not in shown["param:TOKEN"]["element"]
    assert "leave empty to keep" in shown["param:TOKEN"]["hint"]["text"]
    assert TOKEN_VALUE not in json.dumps(view)
    second = await submitted_run(bot, view, {"param:TARGET": "production",
                                             "param:STEPS": "4", "param:DRY": "false"})
    assert await bot.wait_final(second) == RunState.SUCCEEDED
    rerun = await bot.runtime.service.get_run(second)
    assert rerun.rerun_of == run_id
    assert rerun.overrides == {"TARGET": "production", "STEPS": "4", "DRY": "false"}
    assert "token ********" in await bot.ask(f"logs {second}")
    # `/job rerun` keeps the secret too; the plain Rerun button of a job without
    # parameters has no Rerun with changes.
    third = bot.run_id_from(await bot.ask(f"rerun {second}"))
    assert await bot.wait_final(third) == RunState.SUCCEEDED
    assert "token ********" in await bot.ask(f"logs {third}")
    plain = bot.run_id_from(await bot.ask("run plain"))
    await bot.wait_final(plain)
    parent = await bot.fake.wait_for(lambda: next(
        (m for m in bot.fake.parents() if "plain" in m.text and "succeeded" in m.text), None))
    assert [b["text"]["text"] for b in parent.blocks[-1]["elements"]] == ["View logs", "Rerun"]
    await bot.app[BOT].backlog.join()
    assert TOKEN_VALUE not in bot.fake.everything_sent()
    assert TOKEN_VALUE not in database_text(bot)


async def test_a_form_for_a_confirm_job_asks_for_confirmation_with_the_secret_sealed(
        bot: Bot) -> None:
    _, _, trigger = await bot.command("run careful")
    view = await opened_form(bot, trigger)
    status, answer = await bot.slack.submit(view, {"param:TARGET": "staging",
                                                   "param:TOKEN": TOKEN_VALUE})
    assert status == 200 and answer is None
    key = json.loads(view["private_metadata"])["response_url"].rsplit("/", 1)[1]
    question = await bot.slack.answer(key)
    assert "asks for confirmation" in question["text"]
    assert "TOKEN='********'" in question["text"]
    assert await bot.runtime.service.runs("careful") == []
    assert TOKEN_VALUE not in database_text(bot)
    pending = question["blocks"][-1]["elements"][0]["value"]
    _, click = await bot.slack.click("jobbot_confirm", pending)
    run_id = bot.run_id_from((await bot.slack.answer(click))["text"])
    assert await bot.wait_final(run_id) == RunState.SUCCEEDED
    assert "token ********" in await bot.ask(f"logs {run_id}")
    assert TOKEN_VALUE not in bot.fake.everything_sent()


async def test_only_people_allowed_to_run_the_job_get_its_form(
        tmp_path: Path, slack: FakeSlack, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    jobs = [python_job("deploy", PRINT, parameters=PARAMETERS,
                       allow={"slack_users": ["U0BOSS"]})]
    started, stop = await start_bot(tmp_path, slack, db_url, jobs=jobs)
    try:
        answer = await started.ask("run deploy")
        assert "may not run" in answer or "not allowed" in answer, answer
        assert slack.calls_of("views.open") == []
    finally:
        await stop()


@pytest.mark.parametrize("change", [
    {"state": "not an object"},
    {"state": {"values": ["a list"]}},
    {"private_metadata": "{not json"},
    {"private_metadata": "[1, 2]"},
    {"blocks": "not a list"},
    {"private_metadata": json.dumps({"job": "no-such-job"})},
])
async def test_odd_submissions_are_answered_without_a_server_error(
        bot: Bot, change: dict[str, Any]) -> None:
    _, _, trigger = await bot.command("run deploy")
    view = await opened_form(bot, trigger)
    body = json.loads(urllib.parse.parse_qs(
        bot.slack.view_submission(view, {"param:TARGET": "staging"}))["payload"][0])
    body["view"].update(change)
    raw = urllib.parse.urlencode({"payload": json.dumps(body)})
    status, text = await bot.slack.post(raw, bot.slack.headers(raw))
    assert status < 500, text
    if "no-such-job" in json.dumps(change):
        errors = json.loads(text)["errors"]
        assert list(errors) == ["param:TARGET"]
        assert errors["param:TARGET"].startswith("no job 'no-such-job'")
    await bot.app[BOT].backlog.join()
    assert await bot.runtime.service.runs() == []


async def test_a_command_that_cannot_be_parsed_is_recorded_without_its_values(
        bot: Bot) -> None:
    for text in (f"run deploy TOKEN={TOKEN_VALUE} --bogus",
                 f"run deploy 'TOKEN={TOKEN_VALUE} more' --bogus",
                 f"run deploy TOKEN='{TOKEN_VALUE}"):
        status, ack, _ = await bot.command(text)
        assert status == 200 and ("unknown option" in ack or "close your quotes" in ack), ack
        assert TOKEN_VALUE not in ack
    await bot.app[BOT].backlog.join()
    entries = await asyncio.to_thread(bot.runtime.store.audit_log)
    assert "/job run deploy 'TOKEN=********' --bogus" in [e.target for e in entries]
    assert TOKEN_VALUE not in database_text(bot)


async def test_a_command_naming_no_job_keeps_every_value_out_of_the_database(
        bot: Bot) -> None:
    """A misspelt job name: which of its values are secret cannot be known, so none is
    recorded or audited in the clear."""
    status, _, _ = await bot.command(f"run deplyo TOKEN={TOKEN_VALUE} SEED=plain-guess")
    assert status == 200
    await bot.app[BOT].backlog.join()
    entries = await asyncio.to_thread(bot.runtime.store.audit_log)
    assert "/job run deplyo TOKEN='********' SEED='********'" in [e.target for e in entries]
    assert TOKEN_VALUE not in database_text(bot)
    assert "plain-guess" not in database_text(bot)

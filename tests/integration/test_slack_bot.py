"""The Slack bot end to end: signed requests into `jobbot serve`'s app, a fake Slack Web API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.app import BOT
from bot.router import Router
from core.errors import BadInput
from core.models import RunState
from core.policy import Actor
from core.store import NewRun
from jobbot.server import make_app
from jobbot.settings import Settings
from jobbot.wiring import Runtime, build_runtime
from tests.fakes.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    SIGNING_SECRET,
    FakeSlack,
    Message,
    SlackSender,
    inline_code,
    live_markup,
    outside_code,
)
from tests.support.apps import python_job, write_app
from tests.support.server import serve

SECRET_VALUE = "hunter2-very-secret-value"
JOBS: list[dict[str, Any]] = [
    python_job("hello", "print('hello from the job')", env={"GREETING": "hello"}),
    python_job("broken", """
        import os, sys
        print('connecting with', os.environ['DB_PASSWORD'])
        print('bad things happened')
        sys.exit(3)
    """, env={"DB_PASSWORD": SECRET_VALUE, "API_TOKEN": "placeholder-token", "NOTE": ""}),
    python_job("flaky", """
        import pathlib, sys
        marker = pathlib.Path('flaky-marker')
        if not marker.exists():
            marker.write_text('x'); sys.exit(1)
        print('second time lucky')
    """, backoff_limit=2),
    python_job("slow", "import time; print('started', flush=True); time.sleep(60)",
               stop_grace_period=1),
    python_job("guarded", "print('guarded')",
               allow={"slack_users": ["U0BOSS"], "slack_usergroups": ["S0OPS"]}),
    python_job("channel-bound", "print('ok')", allow={"slack_channels": ["C0DEPLOYS"]}),
    python_job("risky", "print('risky')", confirm=True),
    python_job("announced", "print('announced')", notify={"slack_channel": "#deploys"}),
    python_job("quiet", "print('fine')", notify={"on": ["failure"]}),
    python_job("quiet-broken", "import sys; sys.exit(2)", notify={"on": ["failure"]}),
    python_job("nowhere", "print('x')", notify={"slack_channel": "#missing"}),
    python_job("secretive", "print('x')", notify={"slack_channel": "#private"}),
    python_job("sched", "print('x')", schedule="0 3 * * *"),
    python_job("shouty", """
        import sys
        print('```')
        print('<!here> look: <https://evil.example|click to fix> & `<!channel>`')
        print('```')
        sys.exit(1)
    """),
    python_job("dbjob", "import os; print('env', os.environ['RAILS_ENV'])",
               env={"RAILS_ENV": "production", "DB_HOST": "db.internal"},
               secrets=["db-credentials"]),
]
# The local executor's stand-in for the Kubernetes Secret `db-credentials`.
DB_CREDENTIALS = "DB_HOST=db.prod.internal\nDB_PASSWORD=hunter2-db-password\n"


@dataclass
class Bot:
    fake: FakeSlack
    slack: SlackSender
    runtime: Runtime
    url: str
    app: web.Application

    def runtime_router(self) -> Router:
        return self.app[BOT].router

    def runtime_actor(self) -> Actor:
        return Actor.cli("tester")

    async def command(self, text: str, **kwargs: Any) -> tuple[int, str, str]:
        return await self.slack.command(text, **kwargs)

    async def ask(self, text: str, **kwargs: Any) -> str:
        """Send a command and return the text of its answer (through response_url)."""
        status, ack, trigger = await self.slack.command(text, **kwargs)
        assert status == 200, ack
        return str((await self.slack.answer(trigger))["text"])

    async def wait_final(self, run_id: str) -> str:
        run = await asyncio.wait_for(self.runtime.service.wait(run_id, poll=0.05), 30)
        return run.state

    def run_id_from(self, text: str) -> str:
        return text.split("(id `", 1)[1].split("`", 1)[0]


async def start_bot(tmp_path: Path, fake: FakeSlack, database_url: str | None = None, *,
                    jobs: list[dict[str, Any]] | None = None,
                    extra: dict[str, Any] | None = None, **slack: str
                    ) -> tuple[Bot, Callable[[], Any]]:
    """jobbot serving Slack (these `jobs`, or JOBS) with `extra` settings added, on a free
    port; the default database is SQLite in its data dir."""
    workdir = tmp_path / "work"
    config = write_app(workdir, JOBS if jobs is None else jobs)
    (workdir / ".jobbot" / "secrets").mkdir(parents=True, exist_ok=True)
    (workdir / ".jobbot" / "secrets" / "db-credentials.env").write_text(DB_CREDENTIALS)
    slack = slack or {"SLACK_SIGNING_SECRET": SIGNING_SECRET}
    if database_url is not None:
        slack["JOBBOT_DATABASE_URL"] = database_url
    settings = Settings(JOBBOT_DATA_DIR=workdir / ".jobbot", JOBBOT_RETRY_DELAY=0.01,
                        JOBBOT_PUBLIC_URL="http://jobbot.test", JOBBOT_SECRET_KEY="k" * 32,
                        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=fake.api_url,
                        **(extra or {}), **slack)  # type: ignore[arg-type]
    served = await serve(settings, config)
    slack = SlackSender(fake, f"{served.base_url}/slack/events")

    async def stop() -> None:
        await slack.close()
        await served.stop()

    return Bot(fake, slack, served.runtime, slack.target, served.app), stop


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack()
    await slack.start()
    yield slack
    await slack.stop()


@pytest.fixture
async def bot(tmp_path: Path, fake: FakeSlack, db_url: str, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Bot]:
    monkeypatch.chdir(tmp_path)
    started, stop = await start_bot(tmp_path, fake, db_url)
    yield started
    await stop()


def unfinished_work(bot: Bot) -> list[str]:
    """The keys of Slack work recorded and not done (as a process starting now would take)."""
    rows = bot.runtime.service.store.take_over_slack_work("nobody:1:1", lambda owner, at: True)
    return [row.key for row in rows]


def parent_of(fake: FakeSlack, run_label: str) -> Message | None:
    return next((m for m in fake.parents() if run_label in m.text), None)


# -- signatures and retries -----------------------------------------------------------------


async def test_a_bad_signature_gets_401_and_changes_nothing(bot: Bot) -> None:
    body, _ = bot.slack.command_body("run hello")
    headers = bot.slack.headers(body)
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    status, _ = await bot.slack.post(body, headers)
    assert status == 401
    assert await bot.runtime.service.runs() == []
    # Not even recorded for after the ack.
    assert unfinished_work(bot) == []


async def test_a_stale_signature_gets_401(bot: Bot) -> None:
    body, _ = bot.slack.command_body("run hello")
    status, _ = await bot.slack.post(body, bot.slack.headers(body,
                                                              timestamp=int(time.time()) - 360))
    assert status == 401
    assert await bot.runtime.service.runs() == []


async def test_a_slack_retry_never_starts_a_second_run(bot: Bot) -> None:
    body, trigger = bot.slack.command_body("run hello")
    first = await bot.slack.post(body, bot.slack.headers(body))
    again = await bot.slack.post(body, bot.slack.headers(body, retry_num=1))
    assert first[0] == again[0] == 200
    await bot.fake.wait_for(lambda: bot.fake.responses.get(trigger))
    await bot.app[BOT].backlog.join()
    # The retry was recognised when it arrived: acknowledged, and neither run nor answered again.
    texts = [r["text"] for r in bot.fake.responses[trigger]]
    assert len(texts) == 1 and "started" in texts[0]
    assert len(await bot.runtime.service.runs("hello")) == 1


async def test_a_request_that_cannot_be_recorded_gets_503_and_its_retry_runs(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    def database_down(*args: object) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    body, trigger = bot.slack.command_body("run hello")
    with monkeypatch.context() as patch:
        patch.setattr(bot.runtime.service.store, "record_slack_work", database_down)
        status, text = await bot.slack.post(body, bot.slack.headers(body))
    assert status == 503 and "could not record" in text
    assert await bot.runtime.service.runs() == []
    # Slack retries an unanswered command: this time it is recorded and runs.
    status, _ = await bot.slack.post(body, bot.slack.headers(body, retry_num=1))
    assert status == 200
    await bot.fake.wait_for(lambda: bot.fake.responses.get(trigger))
    assert len(await bot.runtime.service.runs("hello")) == 1


# -- commands -------------------------------------------------------------------------------


async def test_run_starts_a_run_with_overrides_and_ref(bot: Bot) -> None:
    text = await bot.ask('run hello GREETING="hi there" --ref main')
    assert "started" in text
    run_id = bot.run_id_from(text)
    assert await bot.wait_final(run_id) == RunState.SUCCEEDED
    run = await bot.runtime.service.get_run(run_id)
    assert run.overrides == {"GREETING": "hi there"}
    assert run.ref == "main"
    assert run.actor == "slack:U0ALICE"
    assert run.origin["slack_channel"] == "C0COMMAND"


async def test_a_run_sets_only_names_its_job_declares(bot: Bot) -> None:
    only_greeting = "; a run of hello may set only GREETING"
    loader = "changes how programs are loaded or started: no run may set it"
    refusals = {
        "run hello PATH=/tmp/x": f"PATH {loader}{only_greeting}",
        "run hello LD_PRELOAD=/tmp/evil.so": f"LD_PRELOAD {loader}{only_greeting}",
        "run hello PYTHONPATH=/tmp": f"PYTHONPATH {loader}{only_greeting}",
        "run hello NODE_OPTIONS=--require=/tmp/x.js": f"NODE_OPTIONS {loader}{only_greeting}",
        "run hello GREETING=hi BASH_ENV=/tmp/x.sh": f"BASH_ENV {loader}{only_greeting}",
        "run hello JOBBOT_RUN_ID=forged": "JOBBOT_RUN_ID is set by jobbot itself (JOBBOT_ "
                                          f"variables are jobbot's): no run may set it"
                                          f"{only_greeting}",
        "run hello DB_HOST=attacker.example": f"hello does not declare DB_HOST in its env"
                                              f"{only_greeting}",
        # A key of the job's secret, undeclared or declared in env too: never.
        "run dbjob DB_PASSWORD=x": "DB_PASSWORD comes from the secrets of dbjob: no run may "
                                   "set it; a run of dbjob may set only RAILS_ENV",
        "run dbjob DB_HOST=attacker.example": "DB_HOST comes from the secrets of dbjob: no run "
                                              "may set it; a run of dbjob may set only RAILS_ENV",
        # Refused before a confirmation is asked for.
        "run risky X=1": "risky does not declare X in its env; a run of risky may set no "
                         "variables (it declares none in its env)",
    }
    for text, refusal in refusals.items():
        answer = await bot.ask(text)
        assert refusal in answer, (text, answer)
        assert "(id `" not in answer and "asks for confirmation" not in answer
    assert await bot.runtime.service.runs() == []
    entries = await asyncio.to_thread(bot.runtime.store.audit_log)
    assert ("/job run hello PATH=/tmp/x", "rejected") in [(e.target, e.result) for e in entries]
    run_id = bot.run_id_from(await bot.ask("run dbjob RAILS_ENV=staging"))
    assert await bot.wait_final(run_id) == RunState.SUCCEEDED
    assert "env staging" in await bot.ask(f"logs {run_id}")


async def test_override_names_are_whole_and_values_one_bounded_line(bot: Bot) -> None:
    bad = {
        "run hello 'GREETING\n=1'": "bad override 'GREETING\\n': names are letters, digits "
                                     "and _",
        "run hello 'GREETING =1'": "bad override 'GREETING ': names are letters",
        'run hello "GREETING=two\nlines"': "bad override GREETING: the value contains a "
                                          "newline; values are one line of text",
        'run hello "GREETING=a\rb"': "bad override GREETING: the value contains a carriage return",
        'run hello "GREETING=a\x00b"': "bad override GREETING: the value contains a NUL character",
        'run hello "GREETING=a\x1bb"': "the value contains U+001B, a control or invalid character",
        'run hello "GREETING=a\x7fb"': "the value contains U+007F, a control or invalid character",
        f"run hello GREETING={'x' * 4097}": "bad override GREETING: the value is longer than "
                                          "4096 characters",
    }
    for text, refusal in bad.items():
        status, ack, _ = await bot.command(text)
        assert status == 200
        assert refusal in ack, (text, ack)
    assert await bot.runtime.service.runs() == []
    run_id = bot.run_id_from(await bot.ask(f"run hello GREETING={'x' * 4096}"))
    assert await bot.wait_final(run_id) == RunState.SUCCEEDED


async def test_a_rerun_of_overrides_no_longer_allowed_is_refused(bot: Bot) -> None:
    # Runs recorded before the rule, or before app.yaml stopped declaring a name.
    store = bot.runtime.store
    old = await asyncio.to_thread(store.create_run, NewRun(
        app="demo", job="hello", source="slack", actor="slack:U0ALICE", state=RunState.FAILED,
        overrides={"GREETING": "hi", "LD_PRELOAD": "/tmp/evil.so"}))
    risky = await asyncio.to_thread(store.create_run, NewRun(
        app="demo", job="risky", source="slack", actor="slack:U0ALICE", state=RunState.FAILED,
        overrides={"MODE": "fast"}))
    refusal = ("cannot rerun hello #1: LD_PRELOAD changes how programs are loaded or started: "
               "no run may set it; a run of hello may set only GREETING")
    assert refusal in await bot.ask("rerun hello#1")
    _, key = await bot.slack.click("jobbot_rerun", old.run.id)
    assert refusal in (await bot.slack.answer(key))["text"]
    answer = await bot.ask(f"rerun {risky.run.id}")
    assert "cannot rerun risky #1: risky does not declare MODE in its env" in answer
    assert "asks for confirmation" not in answer
    assert [r.id for r in await bot.runtime.service.runs()] == [risky.run.id, old.run.id]


async def test_typos_are_answered_in_the_ack_with_the_closest_name(bot: Bot) -> None:
    status, ack, _ = await bot.command("rn hello")
    assert status == 200
    assert "did you mean run?" in ack
    status, ack, _ = await bot.command('run hello "unclosed')
    assert "close your quotes" in ack
    text = await bot.ask("run helo")
    assert "no job 'helo'" in text
    assert "did you mean hello?" in text
    assert await bot.runtime.service.runs() == []


async def test_list_status_history_help(bot: Bot) -> None:
    listing = await bot.ask("list")
    assert "demo/hello" in listing
    assert "demo/sched" in listing
    run_id = bot.run_id_from(await bot.ask("run hello"))
    await bot.wait_final(run_id)
    assert "hello #1" in await bot.ask("status hello#1")
    assert "attempt 1: succeeded" in await bot.ask(f"status {run_id}")
    assert "last #1 succeeded" in await bot.ask("status hello")
    assert "Active runs: no runs yet" in await bot.ask("status")
    assert "#1" in await bot.ask("history hello")
    help_text = await bot.ask("help")
    for name in ("run", "list", "status", "logs", "cancel", "history", "pause", "resume"):
        assert f"/job {name}" in help_text
    assert "--tail N" in await bot.ask("help logs")
    assert "did you mean logs?" in (await bot.command("help logz"))[1]


async def test_logs_shows_the_tail_masked(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run broken"))
    await bot.wait_final(run_id)
    text = await bot.ask("logs broken#1 --tail 1")
    assert "bad things happened" in text
    assert "connecting with" not in text
    assert "Last 1 lines" in text
    assert "--tail takes a number" in (await bot.command("logs broken#1 --tail x"))[1]


async def test_cancel_pause_and_resume(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run slow"))
    assert "cancel requested for demo/slow #1" in await bot.ask("cancel slow#1")
    assert await bot.wait_final(run_id) == RunState.CANCELLED
    assert "nothing to cancel" in await bot.ask("cancel slow#1")
    assert "demo/sched paused" in await bot.ask("pause sched")
    assert "already paused" in await bot.ask("pause sched")
    assert "paused by u0alice" in await bot.ask("list")
    assert "demo/sched resumed" in await bot.ask("resume sched")
    # As in the CLI: pausing a job without a schedule would do nothing.
    assert "hello has no schedule: nothing to pause" in await bot.ask("pause hello")
    assert not (await bot.runtime.service.job_summary("hello")).paused


async def test_every_command_is_audited_with_where_and_result(bot: Bot) -> None:
    await bot.ask("list")
    await bot.ask("run guarded")
    await bot.ask("run nope")
    entries = await asyncio.to_thread(bot.runtime.store.audit_log)
    commands = [(e.target, e.result, e.detail) for e in entries if e.action == "command"]
    assert ("/job list", "ok", "in C0COMMAND") in commands
    assert ("/job run guarded", "denied", "in C0COMMAND") in commands
    assert ("/job run nope", "rejected", "in C0COMMAND") in commands
    assert all(e.actor == "slack:U0ALICE" for e in entries)


# -- permissions ----------------------------------------------------------------------------


async def test_allowed_users_and_usergroups(bot: Bot) -> None:
    bot.fake.usergroups["S0OPS"] = ["U0CAROL"]
    denied = await bot.ask("run guarded", user="U0ALICE")
    assert "you may not run guarded" in denied
    assert "<@U0BOSS>" in denied
    assert "<!subteam^S0OPS>" in denied
    assert "started" in await bot.ask("run guarded", user="U0BOSS")
    assert "started" in await bot.ask("run guarded", user="U0CAROL")
    assert len(bot.fake.calls_of("usergroups.users.list")) == 1  # cached
    assert len(await bot.runtime.service.runs("guarded")) == 2


async def test_allowed_channels(bot: Bot) -> None:
    denied = await bot.ask("run channel-bound", channel="C0OTHER")
    assert "you may not run channel-bound" in denied
    assert "<#C0DEPLOYS>" in denied
    assert "started" in await bot.ask("run channel-bound", channel="C0DEPLOYS")


async def test_cancel_pause_resume_are_checked(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run guarded", user="U0BOSS"))
    await bot.wait_final(run_id)
    assert "you may not pause guarded" in await bot.ask("pause guarded")
    assert "you may not resume guarded" in await bot.ask("resume guarded")
    assert "you may not cancel guarded" in await bot.ask(f"cancel {run_id}")
    assert not (await bot.runtime.service.job_summary("guarded")).paused


async def test_buttons_check_the_person_clicking(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run slow"))
    guarded = bot.run_id_from(await bot.ask("run guarded", user="U0BOSS"))
    await bot.wait_final(guarded)
    _, key = await bot.slack.click("jobbot_rerun", guarded, user="U0ALICE")
    assert "you may not run guarded" in (await bot.slack.answer(key))["text"]
    _, key = await bot.slack.click("jobbot_rerun", guarded, user="U0BOSS")
    assert "started" in (await bot.slack.answer(key))["text"]
    _, key = await bot.slack.click("jobbot_cancel", run_id, user="U0BOB")
    assert "cancel requested" in (await bot.slack.answer(key))["text"]
    assert await bot.wait_final(run_id) == RunState.CANCELLED
    run = await bot.runtime.service.get_run(run_id)
    assert run.cancel_requested_by == "u0bob"


# -- confirm --------------------------------------------------------------------------------


async def test_confirm_jobs_ask_first_and_only_the_requester_confirms(bot: Bot) -> None:
    status, _, trigger = await bot.command("run risky")
    assert status == 200
    question = await bot.slack.answer(trigger)
    assert "asks for confirmation" in question["text"]
    assert await bot.runtime.service.runs("risky") == []
    buttons = question["blocks"][-1]["elements"]
    pending = buttons[0]["value"]
    _, key = await bot.slack.click("jobbot_confirm", pending, user="U0MALLORY")
    assert "only <@U0ALICE>, who asked, can confirm" in (await bot.slack.answer(key))["text"]
    _, key = await bot.slack.click("jobbot_confirm", pending, user="U0ALICE")
    answer = await bot.slack.answer(key)
    assert "started" in answer["text"]
    assert answer["replace_original"] is True
    _, key = await bot.slack.click("jobbot_confirm", pending, user="U0ALICE")
    assert "expired or was answered" in (await bot.slack.answer(key))["text"]
    assert len(await bot.runtime.service.runs("risky")) == 1


async def test_a_declined_or_expired_confirmation_runs_nothing(bot: Bot) -> None:
    _, _, trigger = await bot.command("run risky")
    pending = (await bot.slack.answer(trigger))["blocks"][-1]["elements"][0]["value"]
    _, key = await bot.slack.click("jobbot_decline", pending, user="U0ALICE")
    assert "not run" in (await bot.slack.answer(key))["text"]
    now = [datetime.now(UTC)]
    confirmations = bot.runtime_router().confirmations
    confirmations._clock = lambda: now[0]
    _, _, trigger = await bot.command("run risky")
    pending = (await bot.slack.answer(trigger))["blocks"][-1]["elements"][0]["value"]
    now[0] += timedelta(seconds=confirmations.ttl + 1)
    _, key = await bot.slack.click("jobbot_confirm", pending, user="U0ALICE")
    assert "expired" in (await bot.slack.answer(key))["text"]
    assert await bot.runtime.service.runs("risky") == []


# -- notifications --------------------------------------------------------------------------


async def test_a_run_gets_a_thread_edited_in_place(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run hello --ref main"))
    await bot.wait_final(run_id)
    fake = bot.fake
    parent = await fake.wait_for(lambda: parent_of(fake, "demo/hello #1"))
    await fake.wait_for(lambda: "succeeded" in parent.text and fake.replies(parent))
    assert parent.channel == "C0COMMAND"
    assert "<@U0ALICE>" in parent.text
    assert parent.history  # edited in place (chat.update), not posted again
    assert len(fake.parents()) == 1
    assert "`main`" in json.dumps(parent.blocks)
    buttons = parent.blocks[-1]["elements"]
    assert buttons[0]["url"].startswith(f"http://jobbot.test/runs/{run_id}?t=")
    assert [b["action_id"] for b in buttons] == ["jobbot_view_logs", "jobbot_rerun"]
    [end] = fake.replies(parent)
    assert "succeeded after" in end.text


async def test_a_running_run_has_a_cancel_button(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run slow"))
    parent = await bot.fake.wait_for(
        lambda: (p := parent_of(bot.fake, "demo/slow #1")) and "running" in p.text and p)
    assert [b["action_id"] for b in parent.blocks[-1]["elements"]] == [
        "jobbot_view_logs", "jobbot_cancel"]
    await bot.runtime.service.cancel(run_id, bot.runtime_actor())
    await bot.wait_final(run_id)


async def test_failure_reply_has_the_masked_log_tail(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run broken API_TOKEN=tok-abcdef-123"))
    await bot.wait_final(run_id)
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/broken #1"))
    [end] = await bot.fake.wait_for(lambda: bot.fake.replies(parent))
    assert "failed after" in end.text
    assert "exit code 3" in end.text
    assert "bad things happened" in json.dumps(end.blocks)
    sent = bot.fake.everything_sent()
    assert SECRET_VALUE not in sent
    assert "tok-abcdef-123" not in sent


async def test_retries_get_a_reply(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run flaky"))
    assert await bot.wait_final(run_id) == RunState.SUCCEEDED
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/flaky #1"))
    replies = await bot.fake.wait_for(lambda: len(bot.fake.replies(parent)) == 2
                                      and bot.fake.replies(parent))
    assert "attempt 2 started: attempt 1 ended failed (exit code 1)" in replies[0].text
    assert "succeeded" in replies[1].text


async def test_notify_channel_and_on_failure_only(bot: Bot) -> None:
    for job in ("announced", "quiet", "quiet-broken"):
        await bot.wait_final(bot.run_id_from(await bot.ask(f"run {job}")))
    fake = bot.fake
    announced = await fake.wait_for(lambda: parent_of(fake, "demo/announced #1"))
    assert announced.channel == "C0DEPLOYS"
    broken = await fake.wait_for(lambda: parent_of(fake, "demo/quiet-broken #1"))
    await fake.wait_for(lambda: fake.replies(broken))
    await fake.wait_for(lambda: fake.replies(announced))
    assert parent_of(fake, "demo/quiet #1") is None


async def test_scheduled_runs_notify_in_the_job_channel(bot: Bot) -> None:
    result = await bot.runtime.service.trigger("announced", Actor.scheduler())
    await bot.wait_final(result.run.id)
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/announced #1"))
    assert "the schedule" in json.dumps(parent.blocks)


async def test_slack_errors_are_logged_and_do_not_stop_other_notifications(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    bad = bot.run_id_from(await bot.ask("run nowhere"))
    await bot.wait_final(bad)
    good = bot.run_id_from(await bot.ask("run hello"))
    await bot.wait_final(good)
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/hello #1"))
    await bot.fake.wait_for(lambda: bot.fake.replies(parent))
    assert any("channel_not_found" in r.getMessage() and getattr(r, "run_id", None) == bad
               for r in caplog.records)


async def test_a_public_channel_the_bot_is_not_in_is_joined(bot: Bot) -> None:
    bot.fake.not_in.add("C0DEPLOYS")
    run_id = bot.run_id_from(await bot.ask("run announced"))
    await bot.wait_final(run_id)
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/announced #1"))
    await bot.fake.wait_for(lambda: "succeeded" in parent.text and bot.fake.replies(parent))
    assert parent.channel == "C0DEPLOYS"
    joined = bot.fake.calls_of("conversations.join")
    assert [c.params["channel"] for c in joined] == ["C0DEPLOYS"]  # joined once, by id


async def test_an_unreachable_channel_moves_the_thread_to_a_dm(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    bot.fake.channels["#private"] = "C0PRIVATE"
    bot.fake.channel_ids.add("C0PRIVATE")
    bot.fake.private.add("C0PRIVATE")
    bot.fake.not_in.add("C0PRIVATE")
    run_id = bot.run_id_from(await bot.ask("run secretive"))
    await bot.wait_final(run_id)
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/secretive #1"))
    await bot.fake.wait_for(lambda: "succeeded" in parent.text and bot.fake.replies(parent))
    assert parent.channel == "D0ALICE"  # the app's DM with the person who ran it
    assert "I cannot post in #private" in parent.blocks[0]["elements"][0]["text"]
    assert "(not_in_channel)" in parent.history[0]
    assert len(bot.fake.parents()) == 1  # later events edit the DM; nothing is posted twice
    assert any("following the run in a DM" in r.getMessage()
               and getattr(r, "run_id", None) == run_id for r in caplog.records)
    # Other runs' notifications are not held up.
    good = bot.run_id_from(await bot.ask("run hello"))
    await bot.wait_final(good)
    await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/hello #1"))


async def test_a_scheduled_run_in_an_unknown_channel_is_logged(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    result = await bot.runtime.service.trigger("nowhere", Actor.scheduler())
    await bot.wait_final(result.run.id)
    await bot.fake.wait_for(lambda: any(
        "no one to tell" in r.getMessage() and getattr(r, "run_id", None) == result.run.id
        for r in caplog.records))
    assert bot.fake.parents() == []


async def test_rate_limits_delay_notifications_without_dropping_them(bot: Bot) -> None:
    bot.fake.fail("chat.postMessage", "ratelimited", status=429, retry_after=1)
    run_id = bot.run_id_from(await bot.ask("run hello"))
    await bot.wait_final(run_id)
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/hello #1"))
    await bot.fake.wait_for(lambda: bot.fake.replies(parent))
    assert len(bot.fake.parents()) == 1
    statuses = [c.method for c in bot.fake.calls_of("chat.postMessage")]
    assert len(statuses) >= 3  # the refused one, the parent, the end reply


async def test_a_restart_mid_run_neither_loses_nor_repeats(tmp_path: Path, fake: FakeSlack,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first, stop = await start_bot(tmp_path, fake)
    run_id = first.run_id_from(await first.ask("run slow"))
    parent = await fake.wait_for(
        lambda: (p := parent_of(fake, "demo/slow #1")) and "running" in p.text and p)
    await stop()  # the run ends with the process (local executor): `cancelled` on shutdown
    second, stop_again = await start_bot(tmp_path, fake)
    try:
        run = await second.runtime.service.get_run(run_id)
        assert run.run_state.is_final
        await fake.wait_for(lambda: fake.replies(parent))
        store = second.runtime.store
        await fake.wait_for(lambda: store.cursor("slack") == store.last_event_id())
        assert len(fake.parents()) == 1
        assert len(fake.replies(parent)) == 1
        assert run.state in parent.text
    finally:
        await stop_again()


async def test_block_kit_messages_stay_within_limits(bot: Bot) -> None:
    long_value = "x" * 4000
    run_id = bot.run_id_from(await bot.ask(f"run broken NOTE={long_value}"))
    await bot.wait_final(run_id)
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/broken #1"))
    await bot.fake.wait_for(lambda: bot.fake.replies(parent))
    for _ in range(60):
        await bot.runtime.service.trigger("hello", bot.runtime_actor())
    assert "#60" in await bot.ask("history hello")
    assert "Active runs" in await bot.ask("status")  # up to 50 active runs: capped blocks
    assert "demo/hello" in await bot.ask("list")
    # The fake refuses what Slack refuses (invalid_blocks, msg_too_long): nothing was.
    assert bot.fake.refused == []


async def test_a_retried_button_click_starts_one_rerun(bot: Bot) -> None:
    first = bot.run_id_from(await bot.ask("run hello"))
    await bot.wait_final(first)
    body, key = bot.slack.action_body("jobbot_rerun", first)
    await bot.slack.post(body, bot.slack.headers(body))
    await bot.slack.post(body, bot.slack.headers(body, retry_num=1))
    await bot.fake.wait_for(lambda: bot.fake.responses.get(key))
    await bot.app[BOT].backlog.join()
    assert len(bot.fake.responses[key]) == 1
    runs = await bot.runtime.service.runs("hello")
    assert len(runs) == 2
    assert runs[0].rerun_of == first


async def test_rerun_of_a_confirm_job_asks_again(bot: Bot) -> None:
    run_id = await confirmed_risky(bot)
    _, key = await bot.slack.click("jobbot_rerun", run_id)
    assert "asks for confirmation" in (await bot.slack.answer(key))["text"]
    assert len(await bot.runtime.service.runs("risky")) == 1


async def test_rerun_command_runs_the_job_again_with_its_overrides(bot: Bot) -> None:
    first = bot.run_id_from(await bot.ask("run hello GREETING=hey"))
    await bot.wait_final(first)
    assert "hello #2" in await bot.ask("rerun hello#1")
    runs = await bot.runtime.service.runs("hello")
    assert [r.number for r in runs] == [2, 1]
    assert runs[0].rerun_of == first and runs[0].overrides == {"GREETING": "hey"}
    assert "no run" in (await bot.ask("rerun hello#9")).lower()
    assert "asks for confirmation" in await bot.ask(f"rerun {await confirmed_risky(bot)}")
    assert len(await bot.runtime.service.runs("risky")) == 1


async def confirmed_risky(bot: Bot) -> str:
    """The id of a finished run of `risky` (a `confirm: true` job)."""
    _, _, trigger = await bot.command("run risky")
    pending = (await bot.slack.answer(trigger))["blocks"][-1]["elements"][0]["value"]
    _, key = await bot.slack.click("jobbot_confirm", pending)
    run_id = bot.run_id_from((await bot.slack.answer(key))["text"])
    await bot.wait_final(run_id)
    return run_id


@pytest.mark.parametrize("slack", [
    {"SLACK_BOT_TOKEN": "xoxb-only"},
    {"SLACK_SIGNING_SECRET": "signing-secret-value"},
    {"SLACK_APP_TOKEN": "xapp-without-bot"},
])
async def test_half_configured_slack_is_a_precise_error(
        tmp_path: Path, slack: dict[str, str]) -> None:
    config = write_app(tmp_path / "work", JOBS)
    runtime = build_runtime(Settings(JOBBOT_DATA_DIR=tmp_path / ".jobbot",
                                     JOBBOT_SECRET_KEY="k" * 32, **slack),  # type: ignore[arg-type]
                            config)
    try:
        with pytest.raises(BadInput, match=r"^Slack is half configured: ") as refused:
            make_app(runtime)
    finally:
        runtime.close()
    for value in slack.values():
        assert value not in str(refused.value)


async def test_without_slack_credentials_there_is_no_bot(tmp_path: Path) -> None:
    config = write_app(tmp_path / "work", JOBS)
    runtime = build_runtime(Settings(JOBBOT_DATA_DIR=tmp_path / ".jobbot",
                                     JOBBOT_SECRET_KEY="k" * 32), config)
    app = make_app(runtime)
    assert BOT not in app
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/slack/events", data="x") as resp:
                assert resp.status == 404
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
        runtime.close()


async def test_socket_mode_answers_commands_over_the_websocket(
        tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bot, stop = await start_bot(tmp_path, fake, SLACK_APP_TOKEN=APP_TOKEN)
    try:
        body, trigger = bot.slack.command_body("run hello")
        payload = dict(urllib.parse.parse_qsl(body))
        envelope = await fake.send_envelope("slash_commands", payload)
        await fake.wait_for(lambda: envelope in fake.socket_acks)
        answer = await bot.slack.answer(trigger)
        assert "started" in answer["text"]
        await bot.wait_final(bot.run_id_from(answer["text"]))
        async with aiohttp.ClientSession() as session, session.post(bot.url, data=body) as resp:
            assert resp.status == 404  # no HTTP endpoint in Socket Mode
    finally:
        await stop()


async def test_a_slack_outage_delays_notifications_without_dropping_them(bot: Bot) -> None:
    bot.fake.fail("chat.postMessage", "service_unavailable", status=503, times=2)
    run_id = bot.run_id_from(await bot.ask("run hello"))
    await bot.wait_final(run_id)
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/hello #1"))
    await bot.fake.wait_for(lambda: bot.fake.replies(parent))
    assert len(bot.fake.parents()) == 1
    assert len(bot.fake.replies(parent)) == 1


async def test_the_server_offers_sign_in_with_slack_for_the_bots_workspace(
        tmp_path: Path, fake: FakeSlack) -> None:
    bot, stop = await start_bot(tmp_path, fake, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                                SLACK_CLIENT_ID=CLIENT_ID, SLACK_CLIENT_SECRET=CLIENT_SECRET)
    base = bot.url.removesuffix("/slack/events")
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"{base}/auth/slack", allow_redirects=False) as response:
            assert response.status == 303
            location = urllib.parse.urlsplit(response.headers["Location"])
        query = urllib.parse.parse_qs(location.query)
        assert f"{location.scheme}://{location.netloc}{location.path}" == (
            f"{fake.url}/openid/connect/authorize")
        assert query["client_id"] == [CLIENT_ID]
        assert query["team"] == ["T0FAKE"]  # the bot's workspace, from auth.test
        assert query["redirect_uri"] == ["http://jobbot.test/auth/slack/callback"]
        assert CLIENT_SECRET not in response.headers["Location"]
    finally:
        await stop()


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_sign_in_settings_in_the_environment_leave_the_bot_on_its_token(
        tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    # Bolt reads these from the environment and would switch to OAuth installs ("please
    # reinstall this app" for every command); jobbot's bot runs on its one bot token.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLACK_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SLACK_CLIENT_SECRET", CLIENT_SECRET)
    credentials = ({"SLACK_SIGNING_SECRET": SIGNING_SECRET} if mode == "http"
                   else {"SLACK_APP_TOKEN": APP_TOKEN})
    bot, stop = await start_bot(tmp_path, fake, SLACK_CLIENT_ID=CLIENT_ID,
                                SLACK_CLIENT_SECRET=CLIENT_SECRET, **credentials)
    try:
        body, trigger = bot.slack.command_body("run hello")
        if mode == "http":
            status, _ = await bot.slack.post(body, bot.slack.headers(body))
            assert status == 200
        else:
            await fake.send_envelope("slash_commands", dict(urllib.parse.parse_qsl(body)))
        answer = await bot.slack.answer(trigger)
        assert "started" in answer["text"]
        assert "reinstall" not in fake.everything_sent()
        assert os.environ["SLACK_CLIENT_ID"] == CLIENT_ID  # left as it was
    finally:
        await stop()


@pytest.mark.parametrize("body", [
    b"\xff\xfe not utf-8", b"payload={not json", b"payload=%5B1%5D",
    b"payload=" + b"%5B" * 100_000 + b"%5D" * 100_000,
    b'payload={"type": "block_actions", "actions": "run", "user": {"id": "U0ALICE"}}',
    b'payload={"type": "block_actions", "actions": [{"action_id": 7}], "user": "U0ALICE"}',
])
async def test_bodies_slack_never_sends_get_4xx_and_change_nothing(
        bot: Bot, body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    unsigned = await bot.slack.post(body.decode("latin-1"), {
        "Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned[0] == 401  # the signature is checked before anything is parsed
    ts = str(int(time.time()))
    mac = hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256)
    async with bot.slack.session.post(bot.url, data=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={mac.hexdigest()}",
    }) as response:
        assert response.status == 400
    assert unfinished_work(bot) == []
    assert await bot.runtime.service.runs() == []
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(("timestamp", "signature"), [
    ("not-a-number", "v0=" + "0" * 64), ("9" * 5000, "v0=" + "0" * 64),
    (None, "v0=é" + "0" * 63), (None, ""), (None, "v0=" + "0" * 6400)])
async def test_odd_signature_headers_get_401(bot: Bot, timestamp: str | None, signature: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    body, _ = bot.slack.command_body("run hello")
    headers = bot.slack.headers(body)
    headers["X-Slack-Request-Timestamp"] = timestamp or headers["X-Slack-Request-Timestamp"]
    headers["X-Slack-Signature"] = signature
    async with bot.slack.session.post(bot.url, data=body.encode(), headers={
            name: value.encode().decode("latin-1") for name, value in headers.items()}) as resp:
        assert resp.status == 401
    assert await bot.runtime.service.runs() == []
    assert "Traceback" not in caplog.text


# -- what people and jobs write is never markup -----------------------------------------------

EVIL_REF = "fix`<!channel>`<https://evil.example|click to fix>"
# How the ref shows: as typed, inside the Ref field's inline code, backticks as look-alikes.
SHOWN_REF = "fix\u02cb&lt;!channel&gt;\u02cb&lt;https://evil.example|click to fix&gt;"


def as_slack_sends(text: str) -> str:
    """Command text as Slack sends it: `&`, `<` and `>` as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def jobbots_own(markup: str) -> bool:
    """Markup jobbot writes itself: links to its run pages, and the person who ran a command."""
    return markup.startswith("http://jobbot.test/runs/") or markup == "@U0ALICE"


async def test_refs_errors_and_log_tails_are_never_live_markup(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask(as_slack_sends(f"run hello --ref '{EVIL_REF}'")))
    assert (await bot.runtime.service.get_run(run_id)).ref == EVIL_REF
    await bot.wait_final(run_id)
    parent = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/hello #1"))
    await bot.fake.wait_for(lambda: "succeeded" in parent.text and bot.fake.replies(parent))
    ref_field = next(f["text"] for f in parent.blocks[1]["fields"] if "*Ref*" in f["text"])
    assert inline_code(ref_field) == [SHOWN_REF]
    assert "evil" not in outside_code(ref_field)
    # The ephemeral answers: a confirmation quoting the command, errors quoting the input.
    question = await bot.ask(as_slack_sends(f"run risky --ref '{EVIL_REF}'"))
    assert SHOWN_REF in inline_code(question)[0]
    assert "no job '&lt;!channel&gt;'" in await bot.ask(as_slack_sends("run <!channel>"))
    status, ack, _ = await bot.command(as_slack_sends("logs hello#1 --tail <!here>"))
    assert status == 200 and "--tail takes a number" in ack and "&lt;!here&gt;" in ack
    # A failing job's log tail, in the thread and in `/job logs`.
    failed = bot.run_id_from(await bot.ask("run shouty"))
    await bot.wait_final(failed)
    thread = await bot.fake.wait_for(lambda: parent_of(bot.fake, "demo/shouty #1"))
    [end] = await bot.fake.wait_for(lambda: bot.fake.replies(thread))
    tail = end.blocks[-1]["text"]["text"]
    assert tail.count("```") == 2  # jobbot's fences only: the job's ``` are not fences
    assert "&lt;!here&gt; look: &lt;https://evil.example|click to fix&gt; &amp;" in tail
    logs = await bot.ask("logs shouty#1")
    assert logs.count("```") == 2 and "&lt;!channel&gt;" in logs
    sent = bot.fake.texts_sent()
    assert any("evil.example" in text for text in sent)
    assert [m for text in sent for m in live_markup(text) if not jobbots_own(m)] == []
    assert bot.fake.refused == []


@pytest.mark.parametrize("tail", ["²", "٣", "9" * 5000, "0", "201", "-1", "1e3", ""])
async def test_a_bad_tail_is_answered_with_what_would_work(bot: Bot, tail: str) -> None:
    status, ack, _ = await bot.command(f"logs hello#1 --tail '{tail}'")
    assert status == 200
    assert "--tail takes a number from 1 to 200" in ack
    assert len(ack) < 500  # the bad value is quoted back cut short
    await bot.app[BOT].backlog.join()
    assert await bot.runtime.service.runs() == []

"""The Slack bot's pure parts: command parsing, Block Kit limits, confirmations, error sorting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot import mrkdwn, render
from bot.app import SlackConfig
from bot.commands import Command, parse
from bot.notifier import category
from bot.slackapi import retry_after
from core.errors import BadInput, NotFound
from core.links import Links
from core.models import Attempt, Run, RunEvent
from core.service import JobSummary

LINKS = Links("http://jobbot.test", b"k" * 32)
NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def make_run(**fields: Any) -> Run:
    values: dict[str, Any] = {
        "id": "0123456789abcdef", "app": "demo", "job": "hello", "number": 7,
        "state": "running", "source": "slack", "actor": "slack:U0ALICE",
        "created_at": NOW, "started_at": NOW, "overrides": {}, "origin": {},
    }
    values.update(fields)
    return Run(**values)


def assert_within_limits(blocks: list[dict[str, Any]]) -> None:
    assert len(blocks) <= render.MAX_BLOCKS

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for item in node:
                walk(item, key)
        elif key == "text":
            assert len(node) <= render.MAX_TEXT
        elif key == "value":
            assert len(node) <= render.MAX_BUTTON_VALUE

    walk(blocks)


# -- parsing --------------------------------------------------------------------------------


def test_run_with_quoted_overrides_and_ref() -> None:
    command = parse('run migrate NAME="two words" EMPTY= --ref feature/x')
    assert command == Command("run", job="migrate", overrides={"NAME": "two words", "EMPTY": ""},
                              ref="feature/x")
    assert parse("run migrate --ref=main").ref == "main"


def test_slack_formatting_is_undone_before_parsing() -> None:
    # Slack turns quotes curly and escapes <, > and & in command text.
    command = parse("run migrate MSG=\u201ca &amp; b &lt;c&gt;\u201d")
    assert command.overrides == {"MSG": "a & b <c>"}


def test_shell_syntax_is_only_text() -> None:
    command = parse("run hello 'X=$(rm -rf /); echo'")
    assert command.overrides == {"X": "$(rm -rf /); echo"}


@pytest.mark.parametrize(("text", "message"), [
    ("rn hello", "did you mean run?"),
    ("run", "which job?"),
    ("run hello --ref", "--ref needs a value"),
    ("run hello --force", "unknown option '--force'"),
    ("run hello 1X=2", "bad override '1X'"),
    ("run hello NOEQUALS", "use KEY=VALUE"),
    ('run hello "open', "close your quotes"),
    ("logs", "which run?"),
    ("logs a#1 --tail 0", "--tail takes a number from 1 to 200"),
    ("logs a#1 b#2", "`logs` takes one run"),
    ("cancel", "`cancel` takes one argument"),
    ("list extra", "`list` takes no arguments"),
    ("status a b", "`status` takes at most one argument"),
    ("help nope", "no command 'nope'"),
])
def test_bad_commands_say_what_would_work(text: str, message: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse(text)
    assert message in str(caught.value)


def test_unknown_commands_carry_a_suggestion() -> None:
    with pytest.raises(NotFound) as caught:
        parse("histroy hello")
    assert caught.value.suggestion == "history"


def test_every_command_parses() -> None:
    assert parse("") == Command("help")
    assert parse("/job list") == Command("list")
    assert parse("status") == Command("status")
    assert parse("status hello") == Command("status", job="hello")
    assert parse("status hello#3") == Command("status", run="hello#3")
    assert parse("status 0123456789abcdef") == Command("status", run="0123456789abcdef")
    assert parse("logs hello#3 --tail 5") == Command("logs", run="hello#3", tail=5)
    assert parse("cancel hello#3") == Command("cancel", run="hello#3")
    assert parse("rerun hello#3") == Command("rerun", run="hello#3")
    assert parse("history hello") == Command("history", job="hello")
    assert parse("PAUSE hello") == Command("pause", job="hello")
    assert parse("resume hello") == Command("resume", job="hello")
    assert parse("help run") == Command("help", topic="run")


def test_describe_masks_sensitive_overrides() -> None:
    text = parse("run deploy DB_PASSWORD=hunter2 REGION=eu").describe()
    assert "hunter2" not in text
    assert "REGION=eu" in text


# -- rendering within Slack's limits ----------------------------------------------------------


def test_parent_message_buttons_follow_the_state() -> None:
    _, running = render.run_parent(make_run(), LINKS)
    assert [b["action_id"] for b in running[-1]["elements"]] == ["jobbot_view_logs",
                                                                 "jobbot_cancel"]
    _, done = render.run_parent(make_run(state="failed", finished_at=NOW), LINKS)
    assert [b["action_id"] for b in done[-1]["elements"]] == ["jobbot_view_logs", "jobbot_rerun"]
    assert done[-1]["elements"][0]["url"] == LINKS.run_url("0123456789abcdef")


def test_huge_fields_are_cut_to_fit() -> None:
    run = make_run(state="failed", reason="r" * 5000, ref="x" * 255, sha="f" * 40,
                   finished_at=NOW + timedelta(minutes=3))
    text, blocks = render.run_parent(run, LINKS)
    assert_within_limits(blocks)
    text, blocks = render.end_reply(run, ["line " + "y" * 500] * 100)
    assert_within_limits(blocks)
    assert len(text) <= render.MAX_FALLBACK
    assert blocks[-1]["text"]["text"].rstrip("`\n").endswith("y")  # the end of the log is kept


def test_long_lists_stay_within_fifty_blocks() -> None:
    jobs = [JobSummary("demo", f"job-{i:03d}", "d" * 300, (), "UTC", False, None, None, [])
            for i in range(600)]
    answer = render.job_list(jobs)
    assert_within_limits(answer.blocks)
    assert answer.blocks[-1]["type"] == "context"  # says how many were left out
    runs = [make_run(number=i, reason="z" * 1000) for i in range(200)]
    assert_within_limits(render.run_list("History", runs, LINKS).blocks)
    attempts = [Attempt(run_id="r", index=i, state="failed", started_at=NOW, exit_code=1)
                for i in range(1, 400)]
    assert_within_limits(render.run_status(make_run(), attempts, LINKS).blocks)


def test_button_values_are_clipped() -> None:
    element = render.button("x", action_id="a", value="v" * 5000)
    assert len(element["value"]) == render.MAX_BUTTON_VALUE


def test_who_started_a_run() -> None:
    assert render.who(make_run()) == "<@U0ALICE>"
    assert render.who(make_run(actor="cli:ann", source="cli")) == "ann (CLI)"
    assert render.who(make_run(actor="schedule", source="schedule")) == "the schedule"
    # Whatever else an actor says is text, never a mention.
    assert render.who(make_run(actor="slack:<!channel>")) == "slack:&lt;!channel&gt;"
    assert render.who(make_run(actor="cli:<!here>", source="cli")) == "&lt;!here&gt; (CLI)"


def test_cutting_to_fit_never_splits_an_entity() -> None:
    text = mrkdwn.escape("<" * 2000)
    for limit in range(10, 20):
        cut = render.clip(text, limit)
        assert cut.endswith("&lt;" + render.ELLIPSIS) and len(cut) <= limit
        start = render.clip_start(text, limit)
        assert start.startswith(render.ELLIPSIS + "&lt;") and len(start) <= limit


def test_errors_keep_only_the_references_refusals_make() -> None:
    answer = render.error("only <@U0BOSS>, <!subteam^S0OPS> in <#C0DEP> may; "
                          "not <!channel>, <!here>, <@U1|label>, <https://evil.example|x>")
    text = answer.blocks[0]["text"]["text"]
    assert "<@U0BOSS>, <!subteam^S0OPS> in <#C0DEP>" in text
    assert "&lt;!channel&gt;, &lt;!here&gt;, &lt;@U1|label&gt;, &lt;https://evil.example|x&gt;" \
        in text


# -- confirmations --------------------------------------------------------------------------


# -- small parts ----------------------------------------------------------------------------


def test_retry_after_is_read_from_headers() -> None:
    assert retry_after({"Retry-After": "7"}) == 7.0
    assert retry_after({"retry-after": ["3"]}) == 3.0
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


def test_events_map_to_notify_choices() -> None:
    def event(kind: str, state: str, **data: Any) -> RunEvent:
        return RunEvent(run_id="r", kind=kind, state=state, data=data, created_at=NOW)

    assert category(event("created", "queued")) == "start"
    assert category(event("state", "running")) == "start"
    assert category(event("state", "succeeded")) == "success"
    assert category(event("state", "timed_out")) == "failure"
    assert category(event("created", "skipped")) == "failure"
    assert category(event("attempt_started", "running", attempt=2)) == "retry"
    assert category(event("attempt_started", "running", attempt=1)) is None
    assert category(event("cancel_requested", "running")) is None


def test_the_bot_needs_a_token_and_a_way_in() -> None:
    assert SlackConfig().missing == "no SLACK_BOT_TOKEN"
    assert "SLACK_SIGNING_SECRET" in (SlackConfig(bot_token="x").missing or "")
    assert SlackConfig(bot_token="x", signing_secret="s").missing is None
    socket = SlackConfig(bot_token="x", app_token="xapp-1")
    assert socket.missing is None
    assert socket.socket_mode


@pytest.mark.parametrize(("values", "problem"), [
    ({}, None),
    ({"api_url": "http://slack.test/api/"}, None),
    ({"bot_token": "x", "signing_secret": "s"}, None),
    ({"bot_token": "x", "app_token": "xapp-1"}, None),
    ({"bot_token": "x"}, "Slack is half configured: SLACK_BOT_TOKEN needs SLACK_SIGNING_SECRET "
                         "(HTTP mode) or SLACK_APP_TOKEN (Socket Mode)"),
    ({"signing_secret": "s"}, "Slack is half configured: SLACK_SIGNING_SECRET set without "
                              "SLACK_BOT_TOKEN (unset them all to run without the bot)"),
    ({"signing_secret": "s", "app_token": "xapp-1"},
     "Slack is half configured: SLACK_SIGNING_SECRET and SLACK_APP_TOKEN set without "
     "SLACK_BOT_TOKEN (unset them all to run without the bot)"),
])
def test_half_configured_slack_says_what_is_missing(values: dict[str, str],
                                                     problem: str | None) -> None:
    assert SlackConfig(**values).half_configured == problem

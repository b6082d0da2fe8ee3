"""`jobbot slack-manifest` against what the code really uses: the Web API methods the bot
calls (and their scopes), the command it answers and the URLs the server serves."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk.web.async_client import AsyncWebClient

import bot
from bot.commands import usage
from bot.manifest import COMMAND, METHOD_SCOPES, bot_scopes, manifest
from core.errors import BadInput
from jobbot.cli import main
from jobbot.settings import Settings
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSender
from tests.support.apps import python_job, write_app
from tests.support.server import Served, serve
from web.signin import CALLBACK_PATH, SCOPES

PUBLIC = "https://jobbot.example.com"
BOT_DIR = Path(bot.__file__).parent


@cache
def web_api_methods() -> dict[str, str]:
    """slack_sdk's client methods and the Web API method each calls (chat_postMessage ->
    chat.postMessage), read from slack_sdk's own source."""
    methods = {}
    for name, function in inspect.getmembers(AsyncWebClient, inspect.iscoroutinefunction):
        if name.startswith("_"):
            continue
        found = re.search(r'api_call\(\s*"([\w.]+)"', inspect.getsource(function))
        if found:
            methods[name] = found.group(1)
    return methods


def methods_called(source: str) -> set[str]:
    """The Web API methods a module's code calls through a slack_sdk client."""
    known = web_api_methods()
    called = set()
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in known):
            called.add(known[node.func.attr])
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "api_call" and node.args
                and isinstance(node.args[0], ast.Constant)):
            called.add(str(node.args[0].value))
    return called


def bot_methods() -> set[str]:
    called: set[str] = set()
    for path in sorted(BOT_DIR.glob("*.py")):
        called |= methods_called(path.read_text())
    return called


def test_every_web_api_method_the_bot_calls_has_its_scopes_in_the_manifest() -> None:
    called = bot_methods()
    assert {"chat.postMessage", "chat.update", "usergroups.users.list"} <= called
    missing = called - set(METHOD_SCOPES)
    assert not missing, f"bot/ calls {sorted(missing)}: add them to bot/manifest.METHOD_SCOPES"
    stale = set(METHOD_SCOPES) - called
    assert not stale, f"METHOD_SCOPES names {sorted(stale)}, which bot/ no longer calls"
    needed = {"commands"} | {scope for method in called for scope in METHOD_SCOPES[method]}
    document = manifest(PUBLIC, socket_mode=False)
    assert sorted(needed) == document["oauth_config"]["scopes"]["bot"] == bot_scopes()


def test_the_scope_check_notices_a_new_method() -> None:
    source = "async def f(client):\n    await client.reactions_get(channel='C1', timestamp='1')\n"
    assert methods_called(source) == {"reactions.get"}
    assert "reactions.get" not in METHOD_SCOPES  # so the test above would fail for it
    assert methods_called("x = client.api_call('reactions.add')") == {"reactions.add"}


# -- the URLs and the command, against the real server ------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack()
    await slack.start()
    yield slack
    await slack.stop()


@pytest.fixture
async def served(tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[Served]:
    monkeypatch.chdir(tmp_path)
    config = write_app(tmp_path / "work", [python_job("hello", "print('hello')")])
    settings = Settings(JOBBOT_DATA_DIR=tmp_path / "work" / ".jobbot", JOBBOT_PUBLIC_URL=PUBLIC,
                        JOBBOT_SECRET_KEY="k" * 32, SLACK_BOT_TOKEN=BOT_TOKEN,
                        SLACK_SIGNING_SECRET=SIGNING_SECRET,  # type: ignore[arg-type]
                        SLACK_API_URL=fake.api_url)
    server = await serve(settings, config)
    yield server
    await server.stop()


def path_of(url: str) -> str:
    assert url.startswith(PUBLIC + "/"), url
    return url.removeprefix(PUBLIC)


async def test_the_manifests_command_and_urls_are_the_ones_jobbot_answers(
        served: Served, fake: FakeSlack) -> None:
    document = manifest(PUBLIC, socket_mode=False)
    [command] = document["features"]["slash_commands"]
    assert command["command"] == COMMAND
    assert usage("run").startswith(f"`{COMMAND} ")  # what help and errors tell people to type
    interactivity = document["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    sender = SlackSender(fake, served.base_url + path_of(command["url"]))
    try:
        status, _, trigger = await sender.command("run hello", command=command["command"])
        assert status == 200
        answer = await sender.answer(trigger)
        assert "hello #1" in answer["text"]
        clicks = SlackSender(fake, served.base_url + path_of(interactivity["request_url"]))
        try:
            status, _ = await clicks.click("jobbot_view_logs", "x")
            assert status == 200
        finally:
            await clicks.close()
        run = (await served.runtime.service.runs("hello"))[0]
        await asyncio.wait_for(served.runtime.service.wait(run.id), 30)
        async with asyncio.timeout(15):
            while not fake.calls_of("chat.postMessage"):
                await asyncio.sleep(0.05)
    finally:
        await sender.close()
    # What the bot called while answering is covered by the scopes too.
    assert {call.method for call in fake.calls} <= set(METHOD_SCOPES) | {"openid.connect.token"}
    [redirect] = document["oauth_config"]["redirect_urls"]
    assert path_of(redirect) == CALLBACK_PATH
    assert document["oauth_config"]["scopes"]["user"] == sorted(SCOPES.split())
    served_paths = {route.resource.canonical for route in served.app.router.routes()
                    if route.resource is not None}
    assert CALLBACK_PATH in served_paths


# -- the command ------------------------------------------------------------------------------


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def slack_manifest(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
                   ) -> Callable[..., Result]:
    """`jobbot slack-manifest ARGS` with `env` set (the environment holds no JOBBOT_* or
    SLACK_* of its own in tests)."""
    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            try:
                code = main(["slack-manifest", *args])
            except SystemExit as exc:  # argparse's own refusals
                code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def no_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # No app.yaml is needed: the manifest is about Slack and the URL, not the jobs.
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert list(tmp_path.iterdir()) == []  # nothing written


def all_values(document: Any) -> list[str]:
    if isinstance(document, dict):
        return [v for value in document.values() for v in all_values(value)]
    if isinstance(document, list):
        return [v for value in document for v in all_values(value)]
    return [str(document)]


def test_slack_manifest_fills_in_the_public_url(
        no_app: Path, slack_manifest: Callable[..., Result]) -> None:
    result = slack_manifest(env={"JOBBOT_PUBLIC_URL": PUBLIC + "/"})
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert document == manifest(PUBLIC, socket_mode=False)
    assert document["features"]["slash_commands"][0]["url"] == f"{PUBLIC}/slack/events"
    assert document["settings"]["interactivity"]["request_url"] == f"{PUBLIC}/slack/events"
    assert document["settings"]["socket_mode_enabled"] is False
    as_json = slack_manifest("--format", "json", "--name", "deploys",
                             env={"JOBBOT_PUBLIC_URL": PUBLIC})
    parsed = json.loads(as_json.stdout)
    assert parsed["display_information"]["name"] == "deploys"
    assert parsed["oauth_config"] == document["oauth_config"]


def test_socket_mode_needs_no_public_url(
        no_app: Path, slack_manifest: Callable[..., Result]) -> None:
    result = slack_manifest("--socket-mode")
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert document["settings"]["socket_mode_enabled"] is True
    assert document["settings"]["interactivity"] == {"is_enabled": True}
    assert "url" not in document["features"]["slash_commands"][0]
    assert not [v for v in all_values(document) if v.startswith("http")]
    assert document["oauth_config"] == {"scopes": {"bot": bot_scopes()}}


def test_without_a_usable_public_url_it_exits_2_saying_why(
        no_app: Path, slack_manifest: Callable[..., Result]) -> None:
    missing = slack_manifest()
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.splitlines() == [
        "jobbot: JOBBOT_PUBLIC_URL is not set: Slack sends commands and clicks to "
        "JOBBOT_PUBLIC_URL/slack/events; set it to jobbot's public https URL, or pass "
        "--socket-mode (no public URL needed)"]
    for url in ("http://jobbot.example.com", "jobbot.example.com", "https://", "ftp://x",
                "https://jobbot.example.com/?a=b"):
        result = slack_manifest(env={"JOBBOT_PUBLIC_URL": url})
        assert result.returncode == 2, url
        assert result.stdout == ""
        assert "JOBBOT_PUBLIC_URL must be an https:// URL" in result.stderr, url
    for name in ("", "x" * 36, "bad\nname"):
        result = slack_manifest("--name", name, env={"JOBBOT_PUBLIC_URL": PUBLIC})
        assert result.returncode == 2, name
        assert "--name must be" in result.stderr
    with pytest.raises(BadInput):
        manifest(None, socket_mode=False)

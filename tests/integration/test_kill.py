"""kill -9 right after answering: what Slack and GitHub were told is done by the next jobbot."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from core.store import Store
from github_app.signature import sign
from tests.fakes import github_payloads as p
from tests.fakes.github import FakeGitHub
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSender
from tests.support.apps import python_job, write_app
from tests.support.server import ServeProcess, wait_until

REPO = "acme/shop"
PR = 7
HEAD = "1" * 40
WEBHOOK_SECRET = "webhook-secret-for-kill-tests"


async def test_requests_answered_right_before_kill_9_are_done_once_after_the_restart(
        tmp_path: Path, db_url: str, slack: FakeSlack,
        github: tuple[FakeGitHub, str]) -> None:
    fake_github, private_key = github
    write_app(tmp_path, [python_job("hello", "print('hello')", pull_requests=True)],
              app="shop")
    server = ServeProcess(tmp_path, {
        "JOBBOT_DATABASE_URL": db_url, "JOBBOT_SECRET_KEY": "k" * 32,
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url, "GITHUB_APP_ID": str(p.APP_ID),
        "GITHUB_PRIVATE_KEY": private_key, "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GITHUB_API_URL": fake_github.url})
    await server.start()
    sender = SlackSender(slack, f"{server.url}/slack/events")
    try:
        status, _, trigger = await sender.command("run hello")
        body = json.dumps(p.issue_comment(REPO, PR, "/run hello")).encode()
        async with aiohttp.ClientSession() as session, session.post(
                f"{server.url}/github/webhook", data=body, headers={
                    "X-GitHub-Event": "issue_comment", "Content-Type": "application/json",
                    "X-GitHub-Delivery": str(uuid.uuid4()),
                    "X-Hub-Signature-256": sign(WEBHOOK_SECRET.encode(), body)}) as answer:
            delivered = answer.status
        server.kill()  # at once: the work after the answers may not have begun
        assert (status, delivered) == (200, 202)
        await server.start()  # restarted within seconds, as Kubernetes restarts a container

        store = Store(db_url)
        try:
            def runs_of(source: str) -> list[Any]:
                return [run for run in store.list_runs(job="hello", limit=50)
                        if run.source == source]

            await wait_until(lambda: runs_of("slack"))
            await wait_until(lambda: runs_of("github"))
            await wait_until(lambda: store.unhandled_delivery_count() == 0)
            answer_text = (await sender.answer(trigger, timeout=30))["text"]
            assert "hello" in answer_text
            await wait_until(lambda: fake_github.checks_for("jobbot: hello"))
            # Once each: the restart did not start a second run of either request.
            await asyncio.sleep(1)
            assert len(runs_of("slack")) == 1
            assert len(runs_of("github")) == 1
        finally:
            store.close()
    finally:
        await sender.close()
        server.stop()

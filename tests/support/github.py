"""A jobbot server with the GitHub App mounted, wired to the fake GitHub, for tests and bench."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from core.builds import Builder
from core.events import Outbox
from core.links import Links
from core.service import JobService
from core.spec import AppSpec
from core.store import Store
from github_app.app import GitHubApp, setup
from github_app.config import GitHubConfig
from github_app.signature import sign
from tests.fakes.github import FakeGitHub, private_key_pem
from tests.fakes.github_payloads import APP_ID
from tests.support.apps import dead_process, make_service

SECRET = b"webhook-secret-for-tests"
_KEYS = private_key_pem()
# Builds jobbot's JobService from the app, the store and a data directory (local by default).
ServiceFactory = Callable[[AppSpec, Store, Path], JobService]
# Builds the builder for pushes from the service (None: the App's local builder).
BuilderFactory = Callable[[JobService], Builder | None]


def no_builder(service: JobService) -> Builder | None:
    return None


@dataclass
class Harness:
    fake: FakeGitHub
    client: TestClient[Any, Any]
    github: GitHubApp
    service: JobService
    store: Store
    outbox: asyncio.Task[None]
    make_service: ServiceFactory = make_service
    make_builder: BuilderFactory = no_builder
    # The fake Slack's API URL, when run events are also announced in Slack.
    slack_api_url: str | None = None

    async def deliver(self, event: str, payload: dict[str, Any], *,
                      delivery_id: str | None = None, secret: bytes = SECRET,
                      signature: str | None = None) -> ClientResponse:
        body = json.dumps(payload).encode()
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
                   "Content-Type": "application/json",
                   "User-Agent": "GitHub-Hookshot/abc123"}
        if signature is not None or secret:
            headers["X-Hub-Signature-256"] = signature if signature is not None else sign(
                secret, body)
        return await self.client.post("/github/webhook", data=body, headers=headers)

    async def settle(self, timeout: float = 30.0) -> None:
        """Until queued deliveries, runs and check-run updates are all done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.github.intake.join()
            await self.github.installations.settled()
            unfinished = await asyncio.to_thread(self.store.unfinished_runs)
            last = await asyncio.to_thread(self.store.last_event_id)
            cursor = await asyncio.to_thread(self.store.cursor, "github")
            unhandled = await asyncio.to_thread(self.store.unhandled_delivery_count)
            if not unfinished and cursor == last and not unhandled:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("jobbot did not settle in time")


async def start(tmp_path: Path, app: AppSpec, store: Store, *, workers: int = 4,
                service: ServiceFactory = make_service, builder: BuilderFactory = no_builder,
                slack_api_url: str | None = None,
                installations: dict[int, list[str]] | None = None
                ) -> tuple[Harness, list[Any]]:
    """Fake GitHub + jobbot with the App; returns the harness and what to close. `service`
    builds jobbot's service (the local executor unless a test passes another), `builder`
    its builder for pushes; with `slack_api_url`, run events are also announced in Slack
    (the bot's notifier). `installations` are the App's, as GitHub lists them, before
    jobbot starts."""
    fake, fake_server = await start_fake()
    fake.installations.update(installations or {})
    harness = await _start_jobbot(tmp_path, app, store, fake, workers, service, builder,
                                  slack_api_url)
    return harness, [fake_server]


async def start_fake() -> tuple[FakeGitHub, TestServer]:
    """The fake GitHub on a free port (its `url` set), knowing the App's public key; the
    App's private key is `private_key()`."""
    _, public = _KEYS
    fake = FakeGitHub(APP_ID, public)
    fake_server = TestServer(fake.app(), host="127.0.0.1")
    await fake_server.start_server()
    fake.url = str(fake_server.make_url("")).rstrip("/")
    return fake, fake_server


def private_key() -> str:
    """The App's private key (PEM), the one the fake GitHub checks its JWTs against."""
    return _KEYS[0]


async def _start_jobbot(tmp_path: Path, app: AppSpec, store: Store, fake: FakeGitHub,
                        workers: int, make: ServiceFactory = make_service,
                        make_builder: BuilderFactory = no_builder,
                        slack_api_url: str | None = None) -> Harness:
    private, _ = _KEYS
    service = make(app, store, tmp_path / "data")
    links = Links("http://jobbot.test", b"k" * 32)
    jobbot = web.Application()
    outbox = Outbox(store, service.changes, poll=0.05)
    if slack_api_url is not None:
        from slack_sdk.web.async_client import AsyncWebClient

        from bot.notifier import SUBSCRIBER, Notifier
        from tests.fakes.slack import BOT_TOKEN

        client = AsyncWebClient(token=BOT_TOKEN, base_url=slack_api_url)
        outbox.subscribe(SUBSCRIBER, Notifier(client, service, links))
    github = setup(jobbot, config=GitHubConfig(str(APP_ID), private, SECRET, fake.url),
                   service=service, links=links, outbox=outbox,
                   workspaces=tmp_path / "workspaces", workers=workers,
                   builder=make_builder(service))
    client: TestClient[Any, Any] = TestClient(TestServer(jobbot, host="127.0.0.1"))
    await client.start_server()
    await github.installations.settled()  # the start-up listing of installations
    task = asyncio.create_task(outbox.run())
    return Harness(fake, client, github, service, store, task, make, make_builder,
                   slack_api_url)


async def restart(harness: Harness, tmp_path: Path, app: AppSpec, *, workers: int = 4) -> None:
    """Stop jobbot (not the fake GitHub) and start a new one on the same database, as a
    restarted process would: nothing is carried over in memory. The harness then drives
    the new one."""
    await _stop_jobbot(harness)
    new = await _start_jobbot(tmp_path, app, harness.store, harness.fake, workers,
                              harness.make_service, harness.make_builder,
                              harness.slack_api_url)
    harness.client, harness.github, harness.service, harness.outbox = (
        new.client, new.github, new.service, new.outbox)


def die_after_answering(harness: Harness) -> None:
    """From now on deliveries are recorded and answered, then nothing: as if the process were
    killed right after each answer (its rows name a process that is gone)."""
    harness.github.intake.owner = dead_process()
    harness.github.intake.put = lambda key, work: None  # type: ignore[method-assign]


async def _stop_jobbot(harness: Harness) -> None:
    harness.outbox.cancel()
    await asyncio.gather(harness.outbox, return_exceptions=True)
    await harness.service.shutdown()
    await harness.client.close()


async def stop(harness: Harness, closers: list[Any]) -> None:
    await _stop_jobbot(harness)
    for closer in closers:
        await closer.close()

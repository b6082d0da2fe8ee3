"""Sign in with Slack and Cancel in real headless Chromium (the fake Slack's authorize page)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser
from slack_sdk.web.async_client import AsyncWebClient

from bot.usergroups import UserGroups
from bot.workspace import Workspace
from core.links import Links
from core.models import RunState
from core.policy import Actor
from core.service import JobService
from core.store import Store
from tests.fakes.slack import BOT_TOKEN, CLIENT_ID, CLIENT_SECRET, FakeSlack, Person
from tests.support.apps import python_job, service_for
from tests.support.net import free_port
from tests.support.pages import GATED, KEY, make_app, serving
from web.oidc import SlackSignIn


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def links(port: int) -> Links:
    return Links(f"http://127.0.0.1:{port}", KEY)


@pytest.fixture
def service(tmp_path: Path) -> AsyncIterator[JobService]:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    gate = str(tmp_path / "gate")
    yield service_for(tmp_path, store, [python_job(  # type: ignore[misc]
        "gated", GATED, env={"GATE": gate}, allow={"slack_users": ["U0ALICE"]})])
    store.close()


@pytest.fixture
async def base_url(service: JobService, links: Links, slack: FakeSlack, port: int,
                   tmp_path: Path) -> AsyncIterator[str]:
    client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url)
    app = make_app(service, links, web_token=None,
                   slack_signin=SlackSignIn(CLIENT_ID, CLIENT_SECRET, slack.api_url),
                   slack_directory=Workspace(client, UserGroups(client)))
    async with serving(app, port) as url:
        yield url
    (tmp_path / "gate").touch()
    await service.shutdown()


async def test_a_signed_in_person_cancels_a_run_from_its_page(
        browser: Browser, service: JobService, links: Links, base_url: str,
        slack: FakeSlack) -> None:
    result = await service.trigger("gated", Actor.cli("ada"))
    run_id = result.run.id
    async with asyncio.timeout(30):
        while len(service.log_store.tail(run_id, 1, 5)) < 3:
            await service.changes.wait(0.05)
    slack.person = Person("U0ALICE", "T0FAKE", "Alice")
    page = await browser.new_page()
    await page.goto(f"{base_url}/runs/{run_id}?t={links.token(run_id)}")
    assert await page.locator("button", has_text="Cancel").count() == 0
    await page.click("#sign-in")  # to Slack's authorize page (the fake) and back
    await page.wait_for_selector("#signed-in")
    assert page.url.startswith(f"{base_url}/runs/{run_id}")
    assert await page.inner_text("#signed-in") == "Alice"
    await page.click("button:has-text('Cancel')")
    await page.wait_for_selector("#state.s-cancelled")
    assert (await service.get_run(run_id)).state == RunState.CANCELLED
    assert await page.inner_text("#state .word") == "cancelled"
    await page.reload()  # the page offers Rerun once the run is over
    assert await page.locator("button", has_text="Rerun").count() == 1
    assert await page.locator("button", has_text="Cancel").count() == 0
    await page.close()

"""Debian's Chromium driven by Playwright (never a downloaded browser), and a served test app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from core.links import Links
from core.service import JobService
from core.store import Store
from tests.support.apps import python_job, service_for
from tests.support.pages import GATED, KEY, make_app, serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser(base_url: str) -> AsyncIterator[Browser]:
    # Depends on the server so that it closes first: open live streams end with the browser.
    if not CHROMIUM.exists():  # noqa: ASYNC240  (one stat before the browser starts)
        # Never skipped: CI must run these. `make browser-test` installs Debian's chromium.
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-test` (installs chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        await browser.close()


@pytest.fixture
def links() -> Links:
    return Links("http://127.0.0.1", KEY)


@pytest.fixture
def service(tmp_path: Path) -> AsyncIterator[JobService]:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    gate = str(tmp_path / "gate")
    jobs = [python_job("gated", GATED, env={"GATE": gate, "API_TOKEN": ""})]
    yield service_for(tmp_path, store, jobs)  # type: ignore[misc]
    store.close()


@pytest.fixture
async def base_url(service: JobService, links: Links) -> AsyncIterator[str]:
    async with serving(make_app(service, links)) as url:
        yield url
    await service.shutdown()

"""The run page in real headless Chromium: live tail, state change, 403, no secrets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser

from core.links import Links
from core.masking import MASK
from core.policy import Actor
from core.service import JobService

ADA = Actor.cli("ada")
SECRET = "s3cr3t-value-4242"


async def start(service: JobService, **kwargs: object) -> str:
    result = await service.trigger("gated", ADA, **kwargs)  # type: ignore[arg-type]
    async with asyncio.timeout(30):
        while len(service.log_store.tail(result.run.id, 1, 5)) < 3:
            await service.changes.wait(0.05)
    return result.run.id


async def test_a_running_run_tails_its_log_live_and_turns_succeeded(
        browser: Browser, service: JobService, links: Links, base_url: str,
        tmp_path: Path) -> None:
    run_id = await start(service, overrides={"API_TOKEN": SECRET})
    page = await browser.new_page()
    response = await page.goto(f"{base_url}/runs/{run_id}?t={links.token(run_id)}")
    assert response is not None
    assert response.status == 200
    assert await page.inner_text("#state .word") == "running"
    # Marks this document: if the page reloaded, the mark would be gone.
    await page.evaluate("window.__sameDocument = true")
    shown = await page.locator("#log-1 > div").count()
    # (Locators, not wait_for_function: the page's CSP forbids evaluating strings.)
    await page.locator("#log-1 > div").nth(shown + 2).wait_for()
    (tmp_path / "gate").touch()
    await page.wait_for_selector("#state.s-succeeded")
    await page.locator("#log-1 > div", has_text="done").last.wait_for()
    assert await page.inner_text("#state .word") == "succeeded"
    assert await page.evaluate("window.__sameDocument") is True
    numbers = await page.eval_on_selector_all("#log-1 > div > a:first-child",
                                              "els => els.map(e => +e.textContent)")
    assert numbers == list(range(1, len(numbers) + 1))  # no line lost or shown twice
    text_of_line_1 = "e => [...e.childNodes].slice(1).map(n => n.textContent).join('')"
    assert await page.eval_on_selector("#L1", text_of_line_1) == "starting <b>bold?</b>"
    assert await page.eval_on_selector("#L1 > span", "e => e.className") == "c2 bold"
    content = await page.content()
    assert SECRET not in content
    assert f"token is {MASK}" in await page.inner_text("#log-1")
    await page.close()


async def test_a_bad_token_gets_403_and_nothing_of_the_run(
        browser: Browser, service: JobService, links: Links, base_url: str,
        tmp_path: Path) -> None:
    (tmp_path / "gate").touch()
    run_id = await start(service, overrides={"API_TOKEN": SECRET})
    page = await browser.new_page()
    for token in ("", "forged", links.token("0123456789abcdef")):
        response = await page.goto(f"{base_url}/runs/{run_id}?t={token}")
        assert response is not None
        assert response.status == 403
        text = await page.inner_text("body")
        assert "This link is not valid" in text
        assert "gated" not in text
        assert "starting" not in text
    await page.close()


async def test_a_finished_run_shows_no_secret_and_links_to_a_line_range(
        browser: Browser, service: JobService, links: Links, base_url: str,
        tmp_path: Path) -> None:
    (tmp_path / "gate").touch()
    run_id = await start(service, overrides={"API_TOKEN": SECRET})
    await asyncio.wait_for(service.wait(run_id), 30)
    page = await browser.new_page()
    await page.goto(f"{base_url}/runs/{run_id}?t={links.token(run_id)}#L1-2")
    assert await page.locator(".log > div.hl").count() == 2
    assert await page.inner_text("#state .word") == "succeeded"
    assert SECRET not in await page.content()
    raw = await page.goto(f"{base_url}/runs/{run_id}/logs?t={links.token(run_id)}")
    assert raw is not None
    assert SECRET not in await raw.text()
    await page.close()

"""GET /github/setup: register the GitHub App from a manifest against the fake GitHub, keep its
credentials, and serve its webhook; refused from elsewhere, closed once configured."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import stat
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import make_mocked_request
from pydantic import SecretStr

from github_app.manifest import EVENTS, PERMISSIONS
from github_app.signature import sign
from jobbot.settings import Settings
from tests.fakes import github_payloads as p
from tests.fakes.github import FakeGitHub
from tests.support import github as support
from tests.support.apps import python_job, write_app
from tests.support.server import Served, serve

PUBLIC = "https://jobbot.example.com"
REPO = "acme/shop"
HEAD = "1" * 40
PR = 7


@dataclass
class Site:
    """jobbot without a GitHub App, the fake GitHub, and a browser (a cookie jar)."""

    fake: FakeGitHub
    settings: Settings
    config: Path
    served: Served
    browser: aiohttp.ClientSession
    running: list[Served] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.served.base_url

    async def restart(self) -> None:
        """Stop jobbot and start it again on the same settings and data directory."""
        await self.served.stop()
        self.running.remove(self.served)
        self.served = await serve(self.settings, self.config)
        self.running.append(self.served)

    async def deliver(self, event: str, payload: dict[str, Any], secret: str) -> int:
        body = json.dumps(payload).encode()
        async with self.browser.post(self.url + "/github/webhook", data=body, headers={
                "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
                "Content-Type": "application/json",
                "X-Hub-Signature-256": sign(secret.encode(), body)}) as answer:
            return answer.status


def settings_for(tmp_path: Path, fake: FakeGitHub, **more: Any) -> tuple[Settings, Path]:
    config = write_app(tmp_path / "app", [python_job("echo", "print('greeting hello')")],
                       app="shop")
    values: dict[str, Any] = {
        "JOBBOT_APP_CONFIG": config, "JOBBOT_DATA_DIR": tmp_path / "data",
        "JOBBOT_SECRET_KEY": SecretStr("k" * 32), "JOBBOT_PUBLIC_URL": PUBLIC,
        "GITHUB_API_URL": fake.url + "/api/v3", **more}
    return Settings(**values), config


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    fake, fake_server = await support.start_fake()
    settings, config = settings_for(tmp_path, fake)
    served = await serve(settings, config)
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    result = Site(fake, settings, config, served, browser, [served])
    yield result
    await browser.close()
    for running in result.running:
        await running.stop()
    await fake_server.close()


@dataclass
class Form:
    action: str
    manifest: dict[str, Any]
    state: str


async def open_page(site: Site, query: str = "", **headers: str) -> tuple[int, str]:
    async with site.browser.get(site.url + "/github/setup" + query, headers=headers) as page:
        return page.status, await page.text()


def register_form(page: str) -> Form:
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page)[1])  # type: ignore[index]
    manifest = html.unescape(re.search(r'name="manifest" value="([^"]+)"', page)[1])  # type: ignore[index]
    return Form(action, json.loads(manifest), re.search(r"state=([^&]+)", action)[1])  # type: ignore[index]


async def to_github(site: Site, form: Form) -> str:
    """The browser posts the form to GitHub; GitHub's answer sends it back: where to."""
    async with site.browser.post(form.action, data={"manifest": json.dumps(form.manifest)},
                                 allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        return answer.headers["Location"]


async def back_from_github(site: Site, location: str) -> tuple[int, str]:
    async with site.browser.get(location) as page:
        return page.status, await page.text()


async def register(site: Site, query: str = "") -> tuple[int, str]:
    status, page = await open_page(site, query)
    assert status == 200, page
    return await back_from_github(site, await to_github(site, register_form(page)))


def saved(site: Site) -> Path:
    return site.settings.JOBBOT_DATA_DIR / "github-app.json"


def conversions(fake: FakeGitHub) -> list[Any]:
    return fake.calls_to("POST", r"/app-manifests/[^/]+/conversions")


# -- the page and its manifest --------------------------------------------------------------


async def test_the_page_posts_jobbots_manifest_to_the_enterprise_servers_new_app_page(
        site: Site) -> None:
    status, page = await open_page(site)
    assert status == 200
    assert "Register the GitHub App" in page
    form = register_form(page)
    # GITHUB_API_URL is https://HOST/api/v3: the form goes to HOST's own pages.
    assert form.action.startswith(site.fake.url + "/settings/apps/new?state=")
    assert form.manifest == {
        "name": "jobbot-shop", "url": PUBLIC,
        "hook_attributes": {"url": PUBLIC + "/github/webhook", "active": True},
        "redirect_url": site.url + "/github/setup/callback",
        "callback_urls": [site.url + "/github/setup/callback"],
        "public": False, "default_permissions": PERMISSIONS, "default_events": list(EVENTS)}
    # Each page view is a new registration with its own state.
    assert register_form((await open_page(site))[1]).state != form.state


async def test_an_organisation_owns_the_app_when_chosen(site: Site) -> None:
    status, page = await open_page(site, "?owner=org&org=acme-corp&name=jobbot-acme")
    assert status == 200
    form = register_form(page)
    assert form.action.startswith(site.fake.url + "/organizations/acme-corp/settings/apps/new?")
    assert form.manifest["name"] == "jobbot-acme"
    status, text = await back_from_github(site, await to_github(site, form))
    assert status == 200, text
    assert site.fake.made[0].owner == "acme-corp"


@pytest.mark.parametrize("query", ["?owner=org&org=-bad-", "?owner=org&org=",
                                   "?name=" + "x" * 35, "?store=elsewhere"])
async def test_bad_choices_are_400(site: Site, query: str) -> None:
    status, page = await open_page(site, query)
    assert status == 400
    assert "<form method=\"post\"" not in page


# -- the callback -----------------------------------------------------------------------------


async def test_registering_keeps_the_credentials_0600_and_serves_the_webhook_at_once(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    status, page = await register(site)
    assert status == 200, page
    assert "GitHub App registered" in page
    [made] = site.fake.made
    [conversion] = conversions(site.fake)
    assert conversion.path == f"/app-manifests/{made.code}/conversions"
    # GITHUB_API_URL is https://HOST/api/v3: the conversion goes to that API.
    assert conversion.sent_to == f"/api/v3/app-manifests/{made.code}/conversions"
    assert f'href="{site.fake.url}/apps/{made.slug}/installations/new"' in page
    path = saved(site)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = json.loads(path.read_text())
    assert (kept["app_id"], kept["webhook_secret"], kept["private_key"]) == (
        str(made.app_id), made.webhook_secret, made.private_key)
    assert made.webhook_secret not in page and "PRIVATE KEY" not in page
    # Signed with the new secret: accepted now, without a restart; with another: refused.
    assert await site.deliver("ping", p.ping(), made.webhook_secret) == 202
    assert await site.deliver("ping", p.ping(), "another-secret") == 401
    # The App works with what its manifest asked for (the fake grants exactly that).
    site.fake.permissions[(REPO, "alice")] = "write"
    site.fake.add_pull(REPO, PR, HEAD)
    comment = p.issue_comment(REPO, PR, "/run echo", login="alice")
    assert await site.deliver("issue_comment", comment, made.webhook_secret) == 202
    check = await completed_check(site.fake, "jobbot: echo")
    assert check["conclusion"] == "success"
    assert site.fake.reactions[-1] == (REPO, comment["comment"]["id"], "rocket")
    # The page is closed now: no second App.
    status, page = await open_page(site)
    assert status == 404
    assert "configured" in page
    logged = caplog.text
    assert made.webhook_secret not in logged
    assert "PRIVATE KEY" not in logged


async def completed_check(fake: FakeGitHub, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = [c for c in fake.checks_for(name) if c.get("status") == "completed"]
        if done:
            return done[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no completed check run {name}: {fake.checks_for(name)}")


async def test_after_a_restart_jobbot_reads_the_saved_credentials(site: Site) -> None:
    status, _ = await register(site)
    assert status == 200
    [made] = site.fake.made
    await site.restart()
    status, page = await open_page(site)
    assert status == 404
    assert str(made.app_id) in page
    assert await site.deliver("ping", p.ping(), made.webhook_secret) == 202
    # A token for the installation is made with the saved key (the fake checks the JWT).
    site.fake.permissions[(REPO, "alice")] = "write"
    site.fake.add_pull(REPO, PR, HEAD)
    comment = p.issue_comment(REPO, PR, "/run echo", login="alice")
    assert await site.deliver("issue_comment", comment, made.webhook_secret) == 202
    await completed_check(site.fake, "jobbot: echo")
    assert site.fake.tokens_issued >= 1


async def test_the_kubernetes_secret_is_shown_and_nothing_is_written(site: Site) -> None:
    status, page = await register(site, "?store=secret")
    assert status == 200, page
    [made] = site.fake.made
    secret = yaml.safe_load(html.unescape(re.search(r"<pre>(.*)</pre>", page, re.S)[1]))  # type: ignore[index]
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "jobbot-github"
    assert secret["stringData"] == {"GITHUB_APP_ID": str(made.app_id),
                                    "GITHUB_WEBHOOK_SECRET": made.webhook_secret,
                                    "GITHUB_PRIVATE_KEY": made.private_key.strip() + "\n"}
    assert not saved(site).exists()
    # Nothing is configured in this process: the webhook still answers 404.
    assert await site.deliver("ping", p.ping(), made.webhook_secret) == 404


async def test_without_a_writable_data_directory_the_secret_is_the_way(tmp_path: Path) -> None:
    fake, fake_server = await support.start_fake()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    settings, config = settings_for(
        tmp_path, fake, JOBBOT_DATA_DIR=blocked / "data",
        JOBBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'jobbot.db'}")
    served = await serve(settings, config)
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    site = Site(fake, settings, config, served, browser, [served])
    try:
        status, page = await open_page(site, "?store=data")
        assert status == 400
        assert "not writable" in page
        status, page = await register(site)
        assert status == 200, page
        assert "kind: Secret" in page
        assert fake.made[0].webhook_secret in html.unescape(page)
    finally:
        await browser.close()
        await served.stop()
        await fake_server.close()


async def test_the_secret_page_is_never_cached(site: Site) -> None:
    _, page = await open_page(site, "?store=secret")
    location = await to_github(site, register_form(page))
    async with site.browser.get(location) as answer:
        assert answer.status == 200
        assert answer.headers["Cache-Control"] == "no-store"


async def test_a_callback_without_a_registration_started_here_is_refused(site: Site) -> None:
    status, page = await open_page(site)
    location = await to_github(site, register_form(page))
    site.browser.cookie_jar.clear()
    status, text = await back_from_github(site, location)
    assert status == 400
    assert "started in this browser" in text
    assert not conversions(site.fake)
    assert not saved(site).exists()


@pytest.mark.parametrize("state", ["", "state-of-another-registration"])
async def test_a_missing_or_unknown_state_is_refused(site: Site, state: str) -> None:
    status, page = await open_page(site)
    location = await to_github(site, register_form(page))
    forged = re.sub(r"state=[^&]*", f"state={state}", location)
    status, text = await back_from_github(site, forged)
    assert status == 403
    assert "state" in text
    assert not conversions(site.fake)
    assert not saved(site).exists()


@pytest.mark.parametrize("code", ["", "..%2F..%2Fapp", "a b"])
async def test_a_missing_or_malformed_code_never_reaches_github(site: Site, code: str) -> None:
    status, page = await open_page(site)
    location = await to_github(site, register_form(page))
    status, text = await back_from_github(site, re.sub(r"code=[^&]*", f"code={code}", location))
    assert status == 400
    assert "no valid <code>code</code>" in text
    assert not conversions(site.fake)
    assert not saved(site).exists()


async def test_a_code_github_does_not_know_is_400(site: Site) -> None:
    status, page = await open_page(site)
    location = await to_github(site, register_form(page))
    status, text = await back_from_github(site, re.sub(r"code=[^&]*", "code=" + "0" * 40,
                                                       location))
    assert status == 400
    assert "GitHub refused the code" in text
    assert "404" in text
    assert not saved(site).exists()


async def test_github_failing_is_4xx_and_the_same_code_works_on_reload(site: Site) -> None:
    status, page = await open_page(site)
    location = await to_github(site, register_form(page))
    site.fake.fail("POST", r"/app-manifests/[^/]+/conversions", 502)
    status, text = await back_from_github(site, location)
    assert status == 424
    assert not saved(site).exists()
    status, text = await back_from_github(site, location)
    assert status == 200, text
    assert saved(site).exists()
    # A code is good once: the same answer again finds the page closed.
    status, _ = await back_from_github(site, location)
    assert status == 404


# -- who may register -------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-For": "203.0.113.9"},  # through a proxy (an ingress, a tunnel)
    {"Forwarded": "for=203.0.113.9"},
    {"Host": "evil.example:8080"},  # a page of another site whose name resolves to 127.0.0.1
    {"Host": "[oops"},
])
async def test_refused_unless_from_this_machine_or_signed_in(site: Site,
                                                             headers: dict[str, str]) -> None:
    status, page = await open_page(site, **headers)
    assert status == 403
    assert "own machine" in page
    async with site.browser.get(site.url + "/github/setup/callback?code=abc&state=x",
                                headers=headers) as answer:
        assert answer.status == 403
    assert not conversions(site.fake)


async def test_refused_to_another_machine(site: Site) -> None:
    """A request whose peer is another machine's address (the route's handler, as aiohttp
    calls it for a connection from 203.0.113.9)."""
    [route] = [r for r in site.served.app.router.routes()
               if r.method == "GET" and r.resource is not None
               and r.resource.canonical == "/github/setup"]
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("203.0.113.9", 40000) if name == "peername" else default)
    request = make_mocked_request("GET", "/github/setup", headers={"Host": "127.0.0.1:8080"},
                                  app=site.served.app, transport=transport)
    assert request.remote == "203.0.113.9"
    answer = await route.handler(request)
    assert answer.status == 403


async def test_the_browsing_token_lets_a_person_register_from_elsewhere(tmp_path: Path) -> None:
    fake, fake_server = await support.start_fake()
    settings, config = settings_for(tmp_path, fake, JOBBOT_WEB_TOKEN=SecretStr("browse-token"))
    served = await serve(settings, config)
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    site = Site(fake, settings, config, served, browser, [served])
    proxied = {"X-Forwarded-For": "203.0.113.9"}
    try:
        assert (await open_page(site, **proxied))[0] == 403
        async with browser.get(served.base_url + "/jobs?token=browse-token",
                               allow_redirects=False) as jobs:
            assert jobs.status == 303
            # The cookie is Secure (JOBBOT_PUBLIC_URL is https): sent as the proxy would.
            session = jobs.cookies["jobbot_session"].value
        proxied["Cookie"] = f"jobbot_session={session}"
        async with browser.get(served.base_url + "/github/setup", headers=proxied) as answer:
            assert answer.status == 200
            form = register_form(await answer.text())
            state = answer.cookies["jobbot_github_setup"].value
        proxied["Cookie"] += f"; jobbot_github_setup={state}"
        # Not from this machine: GitHub sends the browser back to the public URL.
        assert form.manifest["redirect_url"] == PUBLIC + "/github/setup/callback"
        location = await to_github(site, form)
        local = location.replace(PUBLIC, served.base_url)
        async with browser.get(local, headers=proxied) as answer:
            assert answer.status == 200, await answer.text()
        assert saved(site).exists()
    finally:
        await browser.close()
        await served.stop()
        await fake_server.close()


async def test_with_the_app_configured_the_setup_is_closed(tmp_path: Path) -> None:
    fake, fake_server = await support.start_fake()
    key = tmp_path / "app.pem"
    key.write_text(support.private_key())
    settings, config = settings_for(tmp_path, fake, GITHUB_APP_ID=str(p.APP_ID),
                                    GITHUB_PRIVATE_KEY_PATH=key,
                                    GITHUB_WEBHOOK_SECRET=SecretStr("s" * 20))
    served = await serve(settings, config)
    try:
        async with aiohttp.ClientSession() as browser:
            for path in ("/github/setup", "/github/setup/callback?code=abc&state=x"):
                async with browser.get(served.base_url + path) as answer:
                    assert answer.status == 404
                    assert "configured" in await answer.text()
        assert not conversions(fake)
        assert not (tmp_path / "data" / "github-app.json").exists()
    finally:
        await served.stop()
        await fake_server.close()

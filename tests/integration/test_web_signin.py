"""Sign in with Slack against the fake Slack, then Cancel and Rerun as core policy allows."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.usergroups import UserGroups
from bot.workspace import Workspace
from core.links import Links
from core.models import RunState
from core.policy import Actor
from core.service import JobService
from core.store import NewRun, Store
from tests.fakes.slack import BOT_TOKEN, CLIENT_ID, CLIENT_SECRET, FakeSlack, Person
from tests.support.apps import python_job, service_for
from tests.support.net import free_port
from tests.support.pages import GATED, KEY, make_app, serving
from web.access import USER_COOKIE, USER_TTL
from web.oidc import SlackSignIn
from web.sessions import Signer

ADA = Actor.cli("ada")
ALICE = Person("U0ALICE", "T0FAKE", "Alice")
BOB = Person("U0BOB", "T0FAKE", "Bob")
CAROL = Person("U0CAROL", "T0FAKE", "Carol")  # allowed through the user group S0OPS


@dataclass
class Site:
    url: str
    links: Links
    service: JobService
    store: Store
    slack: FakeSlack
    gate: Path


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    slack = FakeSlack()
    await slack.start()
    slack.usergroups = {"S0OPS": ["U0CAROL"]}
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    gate = tmp_path / "gate"
    service = service_for(tmp_path, store, [python_job(
        "gated", GATED, env={"GATE": str(gate)},
        allow={"slack_users": ["U0ALICE"], "slack_usergroups": ["S0OPS"]})])
    client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url)
    port = free_port()
    links = Links(f"http://127.0.0.1:{port}", KEY)
    app = make_app(service, links, web_token=None,
                   slack_signin=SlackSignIn(CLIENT_ID, CLIENT_SECRET, slack.api_url),
                   slack_directory=Workspace(client, UserGroups(client)))
    async with serving(app, port) as url:
        yield Site(url, links, service, store, slack, gate)
        gate.touch()
        await service.shutdown()
    store.close()
    await slack.stop()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: keep cookies for 127.0.0.1, as a browser does.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def sign_in(site: Site, browser: aiohttp.ClientSession, person: Person | None,
                  next_path: str = "/jobs") -> aiohttp.ClientResponse:
    """Click "Sign in with Slack"; the fake's authorize page answers for `person`."""
    site.slack.person = person
    async with browser.get(f"{site.url}/auth/slack", params={"next": next_path}) as response:
        await response.read()
        return response


async def started(site: Site) -> str:
    result = await site.service.trigger("gated", ADA)
    async with asyncio.timeout(30):
        while len(site.service.log_store.tail(result.run.id, 1, 5)) < 3:
            await site.service.changes.wait(0.05)
    return result.run.id


async def post(site: Site, browser: aiohttp.ClientSession, run_id: str,
               action: str) -> tuple[int, str, str]:
    """Press a page button: (status, body, where it sent the browser)."""
    async with browser.post(f"{site.url}/runs/{run_id}/{action}",
                            data={"t": site.links.token(run_id)},
                            headers={"Origin": site.url}, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers.get("Location", "")


async def page(site: Site, browser: aiohttp.ClientSession, run_id: str) -> str:
    async with browser.get(f"{site.url}/runs/{run_id}?t={site.links.token(run_id)}") as response:
        assert response.status == 200
        return await response.text()


async def test_an_allowed_person_signs_in_then_cancels_and_reruns(
        site: Site, browser: aiohttp.ClientSession) -> None:
    run_id = await started(site)
    before = await page(site, browser, run_id)
    assert 'id="sign-in"' in before
    assert 'action="/runs/' not in before  # no buttons before signing in
    landed = await sign_in(site, browser, ALICE, f"/runs/{run_id}")
    assert landed.status == 200
    assert landed.url.path == f"/runs/{run_id}"
    token_call = site.slack.calls_of("openid.connect.token")[-1].params
    assert token_call["redirect_uri"] == f"{site.url}/auth/slack/callback"
    body = await page(site, browser, run_id)
    assert '<span id="signed-in">Alice</span>' in body
    assert f'action="/runs/{run_id}/cancel"' in body
    assert f'action="/runs/{run_id}/rerun"' not in body  # rerun once it is over

    status, _, location = await post(site, browser, run_id, "cancel")
    assert status == 303
    assert location.startswith(f"/runs/{run_id}?t=")
    run = await asyncio.wait_for(site.service.wait(run_id), 30)
    assert run.state == RunState.CANCELLED
    assert run.cancel_requested_by == "Alice"
    body = await page(site, browser, run_id)
    assert f'action="/runs/{run_id}/rerun"' in body

    status, _, location = await post(site, browser, run_id, "rerun")
    assert status == 303
    new_id = location.split("?")[0].removeprefix("/runs/")
    rerun = await site.service.get_run(new_id)
    assert rerun.rerun_of == run_id
    assert rerun.actor == "slack:U0ALICE"
    entries = [(e.actor, e.source, e.action, e.result) for e in site.store.audit_log()]
    assert ("slack:U0ALICE", "web", "cancel", "requested") in entries
    assert any(e[:3] == ("slack:U0ALICE", "web", "run") and e[3] != "denied" for e in entries)


async def test_rerun_of_overrides_no_longer_allowed_is_refused_with_the_reason(
        site: Site, browser: aiohttp.ClientSession) -> None:
    # A run recorded before the rule (or before app.yaml stopped declaring the name).
    old = await asyncio.to_thread(site.store.create_run, NewRun(
        app="demo", job="gated", source="cli", actor="cli:ada", state=RunState.FAILED,
        overrides={"PATH": "/tmp/x"}))
    await sign_in(site, browser, ALICE)
    status, text, _ = await post(site, browser, old.run.id, "rerun")
    assert status == 400
    assert html.escape("cannot rerun gated #1: PATH changes how programs are loaded or "
                       "started: no run may set it; a run of gated may set only GATE",
                       quote=False) in text
    assert [r.id for r in await site.service.history("gated")] == [old.run.id]


async def test_a_user_group_member_may_cancel(site: Site, browser: aiohttp.ClientSession) -> None:
    run_id = await started(site)
    await sign_in(site, browser, CAROL)
    assert f'action="/runs/{run_id}/cancel"' in await page(site, browser, run_id)
    assert [c.params["usergroup"] for c in site.slack.calls_of("usergroups.users.list")] == [
        "S0OPS"]
    status, _, _ = await post(site, browser, run_id, "cancel")
    assert status == 303
    assert (await asyncio.wait_for(site.service.wait(run_id), 30)).state == RunState.CANCELLED


async def test_a_person_not_allowed_sees_why_and_gets_403_and_nothing_changes(
        site: Site, browser: aiohttp.ClientSession) -> None:
    run_id = await started(site)
    await sign_in(site, browser, BOB)
    body = await page(site, browser, run_id)
    assert 'action="/runs/' not in body
    reason = "you may not cancel gated: only users <@U0ALICE> and members of <!subteam^S0OPS> may"
    assert html.escape("Y" + reason[1:], quote=False) in body
    status, text, _ = await post(site, browser, run_id, "cancel")
    assert status == 403
    assert html.escape(reason, quote=False) in text
    assert (await site.service.get_run(run_id)).state == RunState.RUNNING
    denied = [e for e in site.store.audit_log() if e.actor == "slack:U0BOB"]
    assert [(e.action, e.result, e.source) for e in denied] == [("cancel", "denied", "web")]
    site.gate.touch()
    await asyncio.wait_for(site.service.wait(run_id), 30)
    status, text, _ = await post(site, browser, run_id, "rerun")
    assert status == 403
    assert "you may not run gated" in text
    assert [r.id for r in await site.service.history("gated")] == [run_id]


async def test_without_signing_in_no_buttons_and_posts_are_refused(
        site: Site, browser: aiohttp.ClientSession) -> None:
    run_id = await started(site)
    body = await page(site, browser, run_id)
    assert 'action="/runs/' not in body
    assert f'href="/auth/slack?next=%2Fruns%2F{run_id}' in body
    status, text, _ = await post(site, browser, run_id, "cancel")
    assert status == 403
    assert "not signed in with Slack or GitHub" in text
    # Signed in, but the post comes from another site: still refused.
    await sign_in(site, browser, ALICE)
    async with browser.post(f"{site.url}/runs/{run_id}/cancel",
                            data={"t": site.links.token(run_id)},
                            headers={"Origin": "https://evil.example"}) as response:
        assert response.status == 403
    assert (await site.service.get_run(run_id)).state == RunState.RUNNING


async def test_a_forged_or_expired_session_is_nobody(
        site: Site, browser: aiohttp.ClientSession) -> None:
    run_id = await started(site)
    key = site.links.subkey("web-user")
    alice = {"u": "U0ALICE", "tm": "T0FAKE", "n": "Alice"}
    expired = Signer(key, "user", clock=lambda: time.time() - USER_TTL - 1).dumps(alice, USER_TTL)
    forged = Signer(b"another-key-0123456789", "user").dumps(alice, USER_TTL)
    other_use = Signer(site.links.subkey("web-login"), "login").dumps(alice, USER_TTL)
    for value in (expired, forged, other_use, "garbage", expired.replace(".", "")):
        browser.cookie_jar.clear()
        browser.cookie_jar.update_cookies({USER_COOKIE: value},
                                          aiohttp.client.URL(site.url))
        body = await page(site, browser, run_id)
        assert 'id="signed-in"' not in body
        assert 'action="/runs/' not in body
        status, _, _ = await post(site, browser, run_id, "cancel")
        assert status == 403
    assert (await site.service.get_run(run_id)).state == RunState.RUNNING


async def test_a_callback_with_a_wrong_state_or_no_sign_in_under_way_is_refused(
        site: Site, browser: aiohttp.ClientSession) -> None:
    # A callback this browser never started (a login CSRF): no sign-in cookie.
    async with browser.get(f"{site.url}/auth/slack/callback",
                           params={"code": "x", "state": "y"}) as response:
        assert response.status == 403
        assert "not started in this browser" in await response.text()
    # Started here, but the answer carries another state: refused, and the code is not traded.
    site.slack.person = ALICE
    async with browser.get(f"{site.url}/auth/slack", allow_redirects=False) as response:
        authorize = response.headers["Location"]
    async with browser.get(authorize, allow_redirects=False) as response:
        callback = aiohttp.client.URL(response.headers["Location"])
    async with browser.get(callback.update_query(state="forged")) as response:
        assert response.status == 403
        assert "does not belong to the sign-in started here" in await response.text()
    assert site.slack.calls_of("openid.connect.token") == []
    assert USER_COOKIE not in {c.key for c in browser.cookie_jar}


async def test_slack_refusals_and_other_workspaces_sign_nobody_in(
        site: Site, browser: aiohttp.ClientSession) -> None:
    denied = await sign_in(site, browser, None)
    assert denied.status == 403
    assert "access_denied" in await denied.text()
    stranger = await sign_in(site, browser, Person("U0EVE", "T0OTHER", "Eve"))
    assert stranger.status == 403
    assert "another Slack workspace" in await stranger.text()
    # A code replayed from the browser's history: Slack answers invalid_code.
    site.slack.person = ALICE
    async with browser.get(f"{site.url}/auth/slack", allow_redirects=False) as response:
        authorize = response.headers["Location"]
    async with browser.get(authorize, allow_redirects=False) as response:
        callback = response.headers["Location"]
    code = aiohttp.client.URL(callback).query["code"]
    site.slack.grants[code].used = True
    async with browser.get(callback) as response:
        assert response.status == 403
        assert "invalid_code" in await response.text()
    assert USER_COOKIE not in {c.key for c in browser.cookie_jar}


async def test_the_session_cookie_is_http_only_and_lax_and_sign_out_forgets_it(
        site: Site, browser: aiohttp.ClientSession) -> None:
    site.slack.person = ALICE
    async with browser.get(f"{site.url}/auth/slack", allow_redirects=False) as response:
        login = response.cookies["jobbot_signin"]
        assert login["httponly"] and login["samesite"] == "Lax"
        assert login["path"] == "/auth/slack"
        authorize = response.headers["Location"]
    query = aiohttp.client.URL(authorize).query
    assert query["scope"] == "openid profile"
    assert query["team"] == "T0FAKE"
    assert query["state"] and query["nonce"] and query["state"] != query["nonce"]
    async with browser.get(authorize, allow_redirects=False) as response:
        callback = response.headers["Location"]
    async with browser.get(callback, allow_redirects=False) as response:
        assert response.status == 303
        session = response.cookies[USER_COOKIE]
        assert session["httponly"] and session["samesite"] == "Lax"
        assert not session["secure"]  # the public URL is http here
    async with browser.get(f"{site.url}/jobs") as response:
        assert response.status == 200  # signed-in people may browse
    async with browser.post(f"{site.url}/auth/signout", headers={"Origin": site.url}) as response:
        assert response.status == 200
    async with browser.get(f"{site.url}/jobs") as response:
        assert response.status == 403
        assert 'id="sign-in"' in await response.text()


async def press_run_now(site: Site, browser: aiohttp.ClientSession) -> tuple[int, str, str]:
    async with browser.get(f"{site.url}/jobs/gated") as response:
        assert response.status == 200
        body = await response.text()
    key = re.search(r'name="key" value="([^"]+)"', body)
    async with browser.post(f"{site.url}/jobs/gated/run",
                            data={"key": key.group(1) if key else "k" * 22},
                            headers={"Origin": site.url}, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers.get("Location", "")


async def test_run_now_follows_the_jobs_allow_rules_as_in_slack(
        site: Site, browser: aiohttp.ClientSession) -> None:
    await sign_in(site, browser, BOB)
    async with browser.get(f"{site.url}/jobs/gated") as response:
        body = await response.text()
    assert 'id="run-now"' not in body
    reason = "you may not run gated: only users <@U0ALICE> and members of <!subteam^S0OPS> may"
    assert html.escape("Y" + reason[1:], quote=False) in body
    status, text, _ = await press_run_now(site, browser)
    assert status == 403
    assert html.escape(reason, quote=False) in text
    assert await site.service.history("gated") == []
    denied = [e for e in site.store.audit_log() if e.actor == "slack:U0BOB"]
    assert [(e.action, e.result, e.source) for e in denied] == [("run", "denied", "web")]

    await sign_in(site, browser, CAROL)  # allowed through the user group S0OPS
    status, _, location = await press_run_now(site, browser)
    assert status == 303
    run = await site.service.get_run(location.split("?")[0].removeprefix("/runs/"))
    assert (run.actor, run.source) == ("slack:U0CAROL", "web")
    site.gate.touch()
    assert (await asyncio.wait_for(site.service.wait(run.id), 30)).state == RunState.SUCCEEDED

"""Approvals (`approval:` on a job) through Slack: a run waits in needs_approval, its thread's
Approve and Deny buttons decide it, and it starts once, ends denied, or ends expired."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import BOT
from bot.usergroups import UserGroups
from bot.workspace import Workspace
from core.catalog import Catalog
from core.errors import Conflict
from core.links import Links
from core.models import RunState, Source
from core.policy import Actor
from core.service import Slot
from core.spec import load_app
from core.store import Decision, NewRun, Store
from tests.fakes.slack import BOT_TOKEN, CLIENT_ID, CLIENT_SECRET, FakeSlack, Message
from tests.integration.test_slack_bot import Bot, start_bot
from tests.integration.test_web_signin import ALICE, BOB, CAROL, Site, page, post, sign_in
from tests.support.apps import python_job, service_for, write_app
from tests.support.net import free_port
from tests.support.pages import KEY, make_app, serving
from web.oidc import SlackSignIn

APPROVERS = ["U0ALICE", "U0BOB", "U0CAROL"]


def jobs(marker: Path, *, command: str = "launched", expires: str = "1h"
         ) -> list[dict[str, Any]]:
    """The jobs of these tests; each run of `deploy` appends a line to `marker`."""
    append = f"open({str(marker)!r}, 'a').write({command!r} + '\\n')"
    return [
        python_job("deploy", append, notify={"slack_channel": "#deploys", "on": ["failure"]},
                   approval={"required": 2, "from": {"slack_users": APPROVERS},
                             "expires": expires}),
        python_job("ops-only", "print('ops')",
                   approval={"from": {"slack_usergroups": ["S0OPS"]}, "self": True}),
        python_job("brief", "print('brief')", notify={"slack_channel": "#deploys"},
                   approval={"from": {"slack_users": APPROVERS}, "expires": "1s"}),
    ]


@pytest.fixture
async def bot(tmp_path: Path, slack: FakeSlack, db_url: str, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Bot]:
    monkeypatch.chdir(tmp_path)
    started, stop = await start_bot(tmp_path, slack, db_url, jobs=jobs(tmp_path / "marker"))
    yield started
    await stop()


async def click(bot: Bot, action: str, run_id: str, user: str) -> str:
    """Click Approve or Deny as `user`; the text of jobbot's (ephemeral) answer."""
    _, key = await bot.slack.click(f"jobbot_{action}", run_id, user=user)
    return str((await bot.slack.answer(key))["text"])


async def parent(bot: Bot, label: str, check: Callable[[Message], bool]) -> Message:
    """The run's thread parent, once `check` holds for it (it is edited as events arrive)."""
    def found() -> Message | None:
        message = next((m for m in bot.fake.parents() if label in m.text), None)
        return message if message is not None and check(message) else None

    result: Message = await bot.fake.wait_for(found)
    return result


def buttons(message: Message) -> list[str]:
    return [e.get("action_id", "") for b in message.blocks if b["type"] == "actions"
            for e in b["elements"]]


def texts(message: Message) -> str:
    out = []
    for block in message.blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [e["text"] for e in block.get("elements", ()) if e.get("type") == "mrkdwn"]
    return "\n".join(out)


def audit_lines(bot: Bot, action: str) -> list[tuple[str, str, str | None]]:
    return [(e.actor, e.result, e.detail) for e in reversed(bot.runtime.store.audit_log(500))
            if e.action == action]


def launches(tmp_path: Path) -> list[str]:
    marker = tmp_path / "marker"
    return marker.read_text().splitlines() if marker.exists() else []


async def test_two_distinct_eligible_approvals_start_the_run_once(bot: Bot,
                                                                  tmp_path: Path) -> None:
    answer = await bot.ask("run deploy")
    assert "waits for approval" in answer
    run_id = bot.run_id_from(answer)
    run = await bot.runtime.service.get_run(run_id)
    assert run.state == RunState.NEEDS_APPROVAL and run.spec_digest
    waiting = await parent(bot, "deploy #1", lambda m: "jobbot_approve" in buttons(m))
    assert "jobbot_deny" in buttons(waiting)
    assert "0 of 2 approvals" in texts(waiting)

    # The requester may not approve their own run (self: false); nor may anyone not listed.
    assert "someone else must approve" in await click(bot, "approve", run_id, "U0ALICE")
    assert "you may not approve deploy: only users <@U0ALICE>" in await click(
        bot, "approve", run_id, "U0MALLORY")
    assert await bot.runtime.service.approvals(run_id) == []

    assert "(1 of 2): waiting for more" in await click(bot, "approve", run_id, "U0BOB")
    await parent(bot, "deploy #1", lambda m: "1 of 2 approvals: <@U0BOB>" in texts(m))
    # One person counts once.
    assert "a person counts once" in await click(bot, "approve", run_id, "U0BOB")
    assert (await bot.runtime.service.get_run(run_id)).state == RunState.NEEDS_APPROVAL

    assert "you approved" in await click(bot, "approve", run_id, "U0CAROL")
    assert await bot.wait_final(run_id) == RunState.SUCCEEDED
    assert launches(tmp_path) == ["launched"]
    done = await parent(bot, "deploy #1", lambda m: "succeeded" in m.text)
    assert "jobbot_approve" not in buttons(done) and "jobbot_deny" not in buttons(done)
    assert "approved: 2 of 2 approvals: <@U0BOB>, <@U0CAROL>" in texts(done)
    # A click after the decision changes nothing.
    assert "not waiting for approval" in await click(bot, "approve", run_id, "U0ALICE")

    lines = audit_lines(bot, "approve")
    assert ("slack:U0ALICE", "refused", lines[0][2]) == lines[0]
    assert "someone else must approve" in (lines[0][2] or "")
    assert lines[1][:2] == ("slack:U0MALLORY", "refused")
    assert lines[2] == ("slack:U0BOB", "approved", "1 of 2 approvals")
    assert lines[3][:2] == ("slack:U0BOB", "rejected")
    assert lines[4] == ("slack:U0CAROL", "approved", "2 of 2 approvals")
    assert lines[5][:2] == ("slack:U0ALICE", "rejected")


async def test_a_denial_ends_the_run_denied_saying_who(bot: Bot, tmp_path: Path) -> None:
    run_id = bot.run_id_from(await bot.ask("run deploy"))
    assert "approved" in await click(bot, "approve", run_id, "U0BOB")
    assert "you denied" in await click(bot, "deny", run_id, "U0CAROL")
    run = await bot.runtime.service.get_run(run_id)
    assert run.state == RunState.DENIED and run.run_state.is_final
    assert run.reason == "denied by u0carol"
    assert launches(tmp_path) == []
    ended = await parent(bot, "deploy #1", lambda m: "denied" in m.text)
    assert "jobbot_approve" not in buttons(ended) and "jobbot_rerun" in buttons(ended)
    reply = await bot.fake.wait_for(lambda: next(
        (m for m in bot.fake.replies(ended) if "denied" in m.text), None))
    assert "denied by u0carol" in reply.text
    assert audit_lines(bot, "deny") == [("slack:U0CAROL", "denied", None)]
    # Too late to approve a denied run.
    assert "not waiting for approval: it is denied" in await click(bot, "approve", run_id,
                                                                   "U0ALICE")


async def test_a_run_not_approved_in_time_ends_expired(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run brief"))
    run = await bot.runtime.service.get_run(run_id)
    assert run.approval_expires_at is not None
    # Past its expiry, the next heartbeat ends it (whichever replica beats first).
    await asyncio.sleep(1.1)
    await bot.runtime.service.replica.beat()
    run = await bot.runtime.service.get_run(run_id)
    assert run.state == RunState.EXPIRED
    assert run.reason == "expired: not approved in time"
    assert "not waiting for approval: it is expired" in await click(bot, "approve", run_id,
                                                                    "U0BOB")
    await parent(bot, "brief #1", lambda m: "expired" in m.text
                 and "jobbot_approve" not in buttons(m))
    assert [line[:2] for line in audit_lines(bot, "approval")] == [("jobbot", "expired")]


async def test_an_approval_past_the_expiry_does_not_start_the_run(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run brief"))
    await asyncio.sleep(1.1)
    assert "was not started: expired" in await click(bot, "approve", run_id, "U0BOB")
    run = await bot.runtime.service.get_run(run_id)
    assert run.state == RunState.EXPIRED
    assert await bot.runtime.service.detail(run_id) and (
        await bot.runtime.service.detail(run_id)).attempts == []


async def test_slack_user_groups_decide_who_may_approve(bot: Bot) -> None:
    bot.fake.usergroups["S0OPS"] = ["U0OPS"]
    run_id = bot.run_id_from(await bot.ask("run ops-only", user="U0OPS"))
    assert "only members of <!subteam^S0OPS>" in await click(bot, "approve", run_id, "U0BOB")
    # self: true: the requester, a member of the group, may approve their own run.
    assert "it is" in await click(bot, "approve", run_id, "U0OPS")
    assert await bot.wait_final(run_id) == RunState.SUCCEEDED


async def test_cancelling_a_waiting_run_ends_it(bot: Bot, tmp_path: Path) -> None:
    run_id = bot.run_id_from(await bot.ask("run deploy"))
    assert "cancel" in await bot.ask(f"cancel {run_id}", user="U0BOB")
    run = await bot.runtime.service.get_run(run_id)
    assert run.state == RunState.CANCELLED and run.reason == "cancelled by u0bob"
    assert launches(tmp_path) == []


async def test_an_approval_after_the_definition_changed_does_not_start_it(
        tmp_path: Path, slack: FakeSlack, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    old, stop_old = await start_bot(tmp_path / "old", slack, db_url, jobs=jobs(tmp_path / "m"))
    try:
        run_id = old.run_id_from(await old.ask("run deploy"))
        assert "approved" in await click(old, "approve", run_id, "U0BOB")
    finally:
        await stop_old()
    # jobbot restarts with a changed app.yaml: the run was asked for with the old definition.
    new, stop_new = await start_bot(tmp_path / "new", slack, db_url,
                                    jobs=jobs(tmp_path / "m", command="changed"))
    try:
        answer = await click(new, "approve", run_id, "U0CAROL")
        assert "was not started" in answer and "definition of deploy changed" in answer
        run = await new.runtime.service.get_run(run_id)
        assert run.state == RunState.CANCELLED
        assert "definition of deploy changed" in (run.reason or "")
        assert (await new.runtime.service.detail(run_id)).attempts == []
        assert not (tmp_path / "m").exists()
        # Run again, it asks for approval of the new definition and runs it once approved.
        again = new.run_id_from(await new.ask("run deploy"))
        await click(new, "approve", again, "U0BOB")
        await click(new, "approve", again, "U0CAROL")
        assert await new.wait_final(again) == RunState.SUCCEEDED
        assert (tmp_path / "m").read_text().splitlines() == ["changed"]
    finally:
        await stop_new()


async def test_two_replicas_approving_at_once_start_the_run_once(
        tmp_path: Path, slack: FakeSlack, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker"
    one, stop_one = await start_bot(tmp_path / "one", slack, db_url, jobs=jobs(marker))
    two, stop_two = await start_bot(tmp_path / "two", slack, db_url, jobs=jobs(marker))
    try:
        for round_ in range(3):
            run_id = one.run_id_from(await one.ask("run deploy"))
            answers = await asyncio.gather(click(one, "approve", run_id, "U0BOB"),
                                           click(two, "approve", run_id, "U0CAROL"))
            assert all("you approved" in a for a in answers), answers
            assert sum("waiting for more" in a for a in answers) == 1, answers
            assert await one.wait_final(run_id) == RunState.SUCCEEDED
            events = one.runtime.store.events_for(run_id)
            assert [e.state for e in events if e.kind == "state"].count("queued") == 1
            assert len((await one.runtime.service.detail(run_id)).attempts) == 1
            assert launches(tmp_path) == ["launched"] * (round_ + 1)
    finally:
        await stop_two()
        await stop_one()
    await asyncio.sleep(0)


async def test_the_backlog_records_clicks_before_the_ack(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run deploy"))
    status, _ = await bot.slack.click("jobbot_approve", run_id, user="U0BOB")
    assert status == 200
    await bot.app[BOT].backlog.join()
    approvals = await bot.runtime.service.approvals(run_id)
    assert [(a.who, a.decision) for a in approvals] == [("slack:U0BOB", "approved")]


async def test_the_run_page_shows_the_wait_and_who_approved(bot: Bot) -> None:
    run_id = bot.run_id_from(await bot.ask("run deploy"))
    await click(bot, "approve", run_id, "U0BOB")
    page_url = bot.runtime.links.run_url(run_id)
    path = page_url.split("jobbot.test", 1)[1]
    base = bot.url.rsplit("/slack/events", 1)[0]
    async with bot.slack.session.get(base + path) as response:
        assert response.status == 200
        html = await response.text()
    assert "waiting for approval" in html
    assert 'id="approvals">1 of 2 · u0bob approved' in html


def test_jobbot_validate_refuses_a_bad_approval_with_file_and_line(tmp_path: Path) -> None:
    bad = python_job("deploy", "print(1)", approval={"required": 0, "from": {"teams": ["x"]}})
    config = write_app(tmp_path, [bad])
    result = subprocess.run([sys.executable, "-m", "jobbot", "--config", str(config),
                             "validate"], capture_output=True, text=True, check=False,
                            timeout=60, env={**os.environ})
    assert result.returncode == 2
    assert f"{config}:" in result.stderr
    assert "jobs[deploy].approval.required: 0 is too small: the least allowed is 1" in (
        result.stderr)
    assert "jobs[deploy].approval.from.teams: unknown key 'teams'" in result.stderr


async def test_a_scheduled_run_of_a_job_with_approval_waits_too(tmp_path: Path,
                                                                store: Store) -> None:
    nightly = python_job("nightly", "print('nightly')", schedule="0 3 * * *",
                         approval={"from": {"slack_users": APPROVERS}})
    service = service_for(tmp_path, store, [nightly])
    try:
        slot = Slot(job=service.catalog.resolve("nightly"),
                    scheduled_for=datetime(2026, 12, 1, 3, tzinfo=UTC),
                    idempotency_key="nightly:2026-12-01T03:00")
        [run] = await service.record_slots([slot])
        waiting = await service.get_run(run.id)
        assert waiting.state == RunState.NEEDS_APPROVAL
        assert waiting.spec_digest and waiting.approval_expires_at is not None
        bob = Actor("slack:U0BOB", Source.SLACK, display="bob", slack_user="U0BOB")
        result = await service.approve(run.id, bob)
        assert result.outcome == "released"
        assert (await asyncio.wait_for(service.wait(run.id, poll=0.05), 30)).state == (
            RunState.SUCCEEDED)
    finally:
        await service.shutdown()


@pytest.fixture
async def site(tmp_path: Path, store: Store) -> AsyncIterator[Site]:
    slack = FakeSlack()
    await slack.start()
    slack.usergroups = {"S0OPS": ["U0CAROL"]}
    service = service_for(tmp_path, store, [python_job(
        "gated", "print('approved and run')",
        approval={"from": {"slack_users": ["U0ALICE"], "slack_usergroups": ["S0OPS"]}})])
    client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url)
    port = free_port()
    links = Links(f"http://127.0.0.1:{port}", KEY)
    app = make_app(service, links, web_token=None,
                   slack_signin=SlackSignIn(CLIENT_ID, CLIENT_SECRET, slack.api_url),
                   slack_directory=Workspace(client, UserGroups(client)))
    async with serving(app, port) as url:
        yield Site(url, links, service, store, slack, tmp_path / "gate")
        await service.shutdown()
    await slack.stop()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def test_the_run_page_approves_and_denies_for_eligible_people(
        site: Site, browser: aiohttp.ClientSession) -> None:
    ada = Actor("slack:U0ADA", Source.SLACK, display="Ada", slack_user="U0ADA")
    first = (await site.service.trigger("gated", ada)).run.id
    second = (await site.service.trigger("gated", ada)).run.id
    await sign_in(site, browser, BOB)
    body = await page(site, browser, first)
    assert f'action="/runs/{first}/approve"' not in body  # Bob may not approve
    status, text, _ = await post(site, browser, first, "approve")
    assert status == 403 and "only users &lt;@U0ALICE&gt;" in text
    assert await site.service.approvals(first) == []

    await sign_in(site, browser, CAROL)  # through the user group S0OPS
    body = await page(site, browser, first)
    assert f'action="/runs/{first}/approve"' in body and f'action="/runs/{first}/deny"' in body
    status, _, location = await post(site, browser, first, "approve")
    assert status == 303 and location.startswith(f"/runs/{first}?t=")
    run = await asyncio.wait_for(site.service.wait(first, poll=0.05), 30)
    assert run.state == RunState.SUCCEEDED
    status, text, _ = await post(site, browser, first, "approve")
    assert status == 409 and "not waiting for approval" in text

    await sign_in(site, browser, ALICE)
    status, _, _ = await post(site, browser, second, "deny")
    assert status == 303
    run = await site.service.get_run(second)
    assert run.state == RunState.DENIED and run.reason == "denied by Alice"
    entries = [(e.actor, e.source, e.action, e.result) for e in site.store.audit_log()]
    assert ("slack:U0CAROL", "web", "approve", "approved") in entries
    assert ("slack:U0ALICE", "web", "deny", "denied") in entries
    assert ("slack:U0BOB", "web", "approve", "refused") in entries


def test_concurrent_last_approvals_release_the_run_exactly_once(store: Store) -> None:
    """Two approvals of one run committed at the same moment (two replicas): the run's row
    lock makes the second see the first, so one of them releases it, never none or both."""
    for round_ in range(15):
        created = store.create_run(NewRun(
            app="demo", job="deploy", source="slack", actor="slack:U0ALICE",
            state=RunState.NEEDS_APPROVAL, spec_digest="d" * 64,
            approval_expires_at=datetime.now(UTC) + timedelta(hours=1)))
        run_id = created.run.id
        barrier = threading.Barrier(2)

        def approve(who: str, run_id: str = run_id, barrier: threading.Barrier = barrier,
                    target: str = f"demo/deploy#{round_ + 1}") -> str:
            barrier.wait()
            return store.decide_approval(Decision(
                run_id=run_id, who=who, display=who, source="slack", decision="approved",
                digest="d" * 64, required=2, owner=f"replica-{who}",
                audit_target=target)).outcome

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(approve, ["slack:U0BOB", "slack:U0CAROL"]))
        assert outcomes == ["recorded", "released"], outcomes
        run = store.get_run(run_id)
        assert run is not None and run.state == RunState.QUEUED
        queued = [e for e in store.events_for(run_id) if e.kind == "state"]
        assert [e.state for e in queued] == ["queued"]


async def test_no_one_decides_a_run_whose_job_no_longer_asks_for_approval(
        tmp_path: Path, store: Store) -> None:
    """app.yaml lost the job's `approval:` while a run waited: its rules are gone, so no one
    may approve (start) or deny it; it stays unstarted until it expires or is cancelled."""
    waiting_job = python_job("deploy", "print('launched')", approval={"required": 1})
    service = service_for(tmp_path, store, [waiting_job])
    run = (await service.trigger("deploy", Actor.cli("ada"))).run
    assert run.state == RunState.NEEDS_APPROVAL
    plain = load_app(write_app(tmp_path / "changed", [python_job("deploy", "print('x')")]))
    service.catalog = Catalog([plain])
    for decide in (service.approve, service.deny):
        with pytest.raises(Conflict, match="no longer asks for approval"):
            await decide(run.id, Actor.cli("bob"))
    after = await service.get_run(run.id)
    assert after.state == RunState.NEEDS_APPROVAL and await service.approvals(run.id) == []
    assert [a.result for a in store.audit_log(10) if a.action in ("approve", "deny")] == [
        "rejected", "rejected"]
    await service.shutdown()

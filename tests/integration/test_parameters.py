"""Job parameters through the CLI, the run page's rerun and the service: one validator, the
same errors, defaults for scheduled runs, and secret values sealed in the database."""

from __future__ import annotations

import asyncio
import html
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy
from slack_sdk.web.async_client import AsyncWebClient

from bot.usergroups import UserGroups
from bot.workspace import Workspace
from core.errors import BadInput
from core.links import Links
from core.models import RunState
from core.policy import Actor
from core.sealing import Sealer
from core.service import Slot
from core.store import Store
from tests.fakes.slack import BOT_TOKEN, CLIENT_ID, CLIENT_SECRET, FakeSlack
from tests.integration.test_web_signin import ALICE, Site, browser, post, sign_in
from tests.support.apps import python_job, service_for, write_app
from tests.support.net import free_port
from tests.support.pages import KEY, make_app, serving
from web.oidc import SlackSignIn

__all__ = ["browser"]  # a fixture, shared with the sign-in tests

TOKEN_VALUE = "s3cretpassphrase42"
PARAMETERS: list[dict[str, Any]] = [
    {"name": "TARGET", "type": "choice", "choices": ["staging", "production"],
     "required": True},
    {"name": "STEPS", "type": "int", "default": 1},
    {"name": "TOKEN", "pattern": "^[a-z0-9]+$", "secret": True},
]
PRINT = ("import os; print('to', os.environ['TARGET'], 'steps', os.environ['STEPS'], "
         "'token', os.environ.get('TOKEN', '-'))")
JOBS = [python_job("migrate", PRINT, parameters=PARAMETERS, allow={"slack_users": ["U0ALICE"]}),
        python_job("nightly", PRINT, schedule="0 3 * * *",
                   parameters=[{**PARAMETERS[0], "default": "staging"}, PARAMETERS[1]])]
ADA = Actor.cli("ada")


def database_text(store: Store) -> str:
    parts = []
    with store.engine.connect() as conn:
        for table in sqlalchemy.inspect(store.engine).get_table_names():
            parts += [repr(tuple(row)) for row in
                      conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"'))]
    return "\n".join(parts)


def jobbot(workdir: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobbot", *args], cwd=workdir, capture_output=True, text=True,
        timeout=60, check=False, env={**os.environ, "JOBBOT_RETRY_DELAY": "0.01",
                                      "JOBBOT_DATABASE_URL": db_url,
                                      "JOBBOT_SECRET_KEY": "k" * 32})


def test_the_cli_takes_parameters_with_the_same_errors(tmp_path: Path, db_url: str) -> None:
    write_app(tmp_path, JOBS)
    refusals = {
        (): "TARGET: is required",
        ("TARGET=stagin", "STEPS=two"): "TARGET: 'stagin' is not one of staging, production "
                                        "(did you mean staging?); STEPS: 'two' is not a "
                                        "whole number",
        ("TARGET=staging", "TOKEN=NOT-SECRET"): "TOKEN: the value does not match the pattern "
                                                "^[a-z0-9]+$",
        ("TARGET=staging", "OTHER=1"): "migrate does not declare OTHER in its env or "
                                       "parameters; a run of migrate may set only STEPS, "
                                       "TARGET, TOKEN",
    }
    for given, message in refusals.items():
        result = jobbot(tmp_path, db_url, "run", "migrate", *given)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr, (given, result.stderr)
        assert "NOT-SECRET" not in result.stderr
    result = jobbot(tmp_path, db_url, "run", "migrate", "TARGET=production", "STEPS=07",
                    f"TOKEN={TOKEN_VALUE}", "--follow")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "to production steps 7 token ********\n"
    store = Store(db_url)
    try:
        [run] = store.list_runs(limit=10)
        assert run.overrides == {"TARGET": "production", "STEPS": "7"}
        assert TOKEN_VALUE not in database_text(store)
    finally:
        store.close()
    # render shows what a run would get: the secret from the run's Secret, never its value.
    rendered = jobbot(tmp_path, db_url, "render", "migrate", "TARGET=staging",
                      f"TOKEN={TOKEN_VALUE}")
    assert rendered.returncode == 0, rendered.stderr
    assert "secretKeyRef:" in rendered.stdout and TOKEN_VALUE not in rendered.stdout
    assert "value: '1'" in rendered.stdout  # STEPS' default


async def test_secrets_are_sealed_and_a_rerun_needs_the_key_they_were_sealed_with(
        tmp_path: Path, store: Store) -> None:
    service = service_for(tmp_path, store, JOBS)
    try:
        first = await service.trigger("migrate", Actor.cli("ada"),
                                      overrides={"TARGET": "staging", "TOKEN": TOKEN_VALUE})
        assert (await service.wait(first.run.id)).state == RunState.SUCCEEDED
        assert TOKEN_VALUE not in database_text(store)
        again = await service.rerun(first.run.id, ADA, changes={"STEPS": "3"})
        assert (await service.wait(again.run.id)).state == RunState.SUCCEEDED
        assert again.run.overrides == {"TARGET": "staging", "STEPS": "3"}
        lines = [line async for _, line in service.logs(again.run.id)]
        assert lines == ["to staging steps 3 token ********"]
        # Another JOBBOT_SECRET_KEY cannot open the sealed value: the rerun asks for it.
        service.sealer = Sealer(b"another-key-0123456789")
        with pytest.raises(BadInput, match="cannot rerun migrate #2: the value of TOKEN was "
                                           "sealed with another JOBBOT_SECRET_KEY; give it "
                                           "again"):
            await service.rerun(again.run.id, ADA)
        given = await service.rerun(again.run.id, ADA, changes={"TOKEN": "fresh0value"})
        assert (await service.wait(given.run.id)).state == RunState.SUCCEEDED
    finally:
        await service.shutdown()


async def test_scheduled_runs_get_the_defaults(tmp_path: Path, store: Store) -> None:
    service = service_for(tmp_path, store, JOBS)
    try:
        target = service.catalog.resolve("nightly")
        slot = datetime(2026, 12, 7, 3, tzinfo=UTC)
        [run] = await service.record_slots([Slot(target, slot, f"nightly:{slot}")])
        assert run.overrides == {"TARGET": "staging", "STEPS": "1"}
        assert (await service.wait(run.id)).state == RunState.SUCCEEDED
        lines = [line async for _, line in service.logs(run.id)]
        assert lines == ["to staging steps 1 token -"]
    finally:
        await service.shutdown()


@pytest.fixture
async def site(tmp_path: Path, store: Store) -> AsyncIterator[Site]:
    slack = FakeSlack()
    await slack.start()
    service = service_for(tmp_path, store, JOBS)
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


async def rerun(site: Site, browser: aiohttp.ClientSession, run_id: str,
                fields: dict[str, str]) -> tuple[int, str, str]:
    async with browser.post(f"{site.url}/runs/{run_id}/rerun",
                            data={"t": site.links.token(run_id), **fields},
                            headers={"Origin": site.url}, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers.get("Location", "")


async def test_the_run_page_reruns_with_changed_parameters_and_the_same_errors(
        site: Site, browser: aiohttp.ClientSession) -> None:
    first = await site.service.trigger("migrate", Actor.cli("ada"),
                                       overrides={"TARGET": "staging", "TOKEN": TOKEN_VALUE})
    await asyncio.wait_for(site.service.wait(first.run.id), 30)
    await sign_in(site, browser, ALICE)
    url = f"{site.url}/runs/{first.run.id}?t={site.links.token(first.run.id)}"
    async with browser.get(url) as response:
        body = await response.text()
    assert '<select name="p:TARGET">' in body and "<option selected>staging</option>" in body
    assert re.search(r'<input name="p:STEPS" value="1"[^>]* inputmode="numeric"', body)
    assert re.search(r'<input name="p:TOKEN" value=""[^>]* type="password"', body)
    assert "<th>TOKEN</th><td><code>********</code>" in body
    assert TOKEN_VALUE not in body
    status, text, _ = await rerun(site, browser, first.run.id,
                                  {"p:TARGET": "prod", "p:STEPS": "x", "p:TOKEN": ""})
    assert status == 400
    assert html.escape("bad parameters for migrate: TARGET: 'prod' is not one of staging, "
                       "production; STEPS: 'x' is not a whole number",
                       quote=False).replace("'", "&#39;") in text
    status, text, _ = await rerun(site, browser, first.run.id, {"p:NOPE": "1"})
    assert status == 400 and "migrate does not declare NOPE" in text
    assert len(await site.service.history("migrate")) == 1
    status, _, location = await rerun(site, browser, first.run.id,
                                      {"p:TARGET": "production", "p:STEPS": "2", "p:TOKEN": ""})
    assert status == 303
    new_id = location.split("?")[0].removeprefix("/runs/")
    run = await asyncio.wait_for(site.service.wait(new_id), 30)
    assert (run.state, run.rerun_of, run.overrides) == (
        RunState.SUCCEEDED, first.run.id, {"TARGET": "production", "STEPS": "2"})
    lines = [line async for _, line in site.service.logs(new_id)]
    assert lines == ["to production steps 2 token ********"]
    # The plain Rerun button (no fields) reruns with the same values.
    status, _, location = await post(site, browser, new_id, "rerun")
    assert status == 303
    assert TOKEN_VALUE not in database_text(site.store)

"""The local browse token (`/?token=`) and Run now on a job's page, through aiohttp's client."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.links import Links
from core.models import RunState, Source
from core.policy import Actor
from core.service import JobService
from core.store import Store
from tests.support.apps import python_job, service_for
from tests.support.pages import KEY, WEB_TOKEN, make_app

PUBLIC_URL = "http://jobbot.test"
LOCAL_TOKEN = "fresh-local-token-0123456789abcdefghij"
FORM_KEY = "k" * 22
ORIGIN = {"Origin": PUBLIC_URL}
JOBS = [
    python_job("hello", "import os; print('hello', os.environ['GREETING'])",
               env={"GREETING": "hi", "API_TOKEN": "not-shown-default"}),
    python_job("risky", "print('risky ran')", confirm=True, env={"MODE": "dry"}),
    python_job("deploy", "import os; print('to', os.environ['TARGET'], os.environ['KEY'])",
               confirm=True, parameters=[
                   {"name": "TARGET", "type": "choice", "choices": ["staging", "production"],
                    "required": True},
                   {"name": "STEPS", "type": "int", "default": 1},
                   {"name": "KEY", "secret": True, "required": True},
                   {"name": "DB_PASSWORD"}]),
]
SECRET_VALUE = "s3cret-typed-in-the-form"


@pytest.fixture
def links() -> Links:
    return Links(PUBLIC_URL, KEY)


@pytest.fixture
def service(tmp_path: Path, sqlite_store: Store) -> JobService:
    return service_for(tmp_path, sqlite_store, JOBS)


async def client_for(service: JobService, links: Links, **settings: object
                     ) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(service, links, **settings))) as client:
        yield client
    await service.shutdown()


@pytest.fixture
async def local(service: JobService, links: Links) -> AsyncIterator[TestClient]:
    """The pages as a loopback `jobbot serve` mounts them: the printed token, operator ada."""
    async for client in client_for(service, links, web_token=LOCAL_TOKEN, local_operator="ada"):
        yield client


@pytest.fixture
async def shared(service: JobService, links: Links) -> AsyncIterator[TestClient]:
    """The pages with JOBBOT_WEB_TOKEN: browsing, but nobody core policy can decide about."""
    async for client in client_for(service, links, web_token=WEB_TOKEN):
        yield client


async def run_now(client: TestClient, job: str, **fields: str) -> tuple[int, str, str]:
    """Press Run now: (status, body, where it sent the browser)."""
    response = await client.post(f"/jobs/{job}/run", data={"key": FORM_KEY, **fields},
                                 headers=ORIGIN, allow_redirects=False)
    return response.status, await response.text(), response.headers.get("Location", "")


def run_id_of(location: str) -> str:
    return location.split("?")[0].removeprefix("/runs/")


async def test_the_printed_link_signs_the_browser_in_and_leads_to_the_jobs(
        local: TestClient) -> None:
    before = await local.get("/jobs")
    assert before.status == 403
    assert "printed in its terminal" in await before.text()
    opened = await local.get(f"/?token={LOCAL_TOKEN}", allow_redirects=False)
    assert opened.status == 303
    assert opened.headers["Location"] == "/jobs"  # the token leaves the address bar
    assert "HttpOnly" in opened.headers["Set-Cookie"]
    assert LOCAL_TOKEN not in opened.headers["Set-Cookie"]
    jobs = await local.get("/")  # `/` leads to /jobs, now signed in
    assert jobs.status == 200
    assert jobs.url.path == "/jobs"
    assert "hello" in await jobs.text()


async def test_a_wrong_token_is_403_with_a_clear_message(local: TestClient) -> None:
    for path in ("/?token=wrong", "/?token=", f"/?token={LOCAL_TOKEN}x", "/jobs?token=%C2%B2",
                 f"/jobs/hello?token={LOCAL_TOKEN[:-1]}"):
        response = await local.get(path, allow_redirects=False)
        body = await response.text()
        assert response.status == 403, path
        assert "wrong or from an earlier start of jobbot" in body, path
        assert "Set-Cookie" not in response.headers
    # Without a token, / still leads to /jobs (which asks for the link).
    response = await local.get("/", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/jobs")


async def test_the_operator_runs_a_job_from_its_page_with_overrides(
        local: TestClient, service: JobService) -> None:
    await local.get(f"/?token={LOCAL_TOKEN}")
    page = await (await local.get("/jobs/hello")).text()
    assert 'id="run-now"' in page
    assert 'name="env:GREETING" placeholder="hi"' in page
    assert "not-shown-default" not in page  # a secret-looking default is masked
    key = re.search(r'name="key" value="([^"]+)"', page)
    assert key is not None and len(key.group(1)) >= 16

    status, _, location = await run_now(local, "hello", **{"env:GREETING": "hey",
                                                           "env:API_TOKEN": ""})
    assert status == 303
    assert location.startswith("/runs/") and "?t=" in location
    run = await asyncio.wait_for(service.wait(run_id_of(location)), 30)
    assert run.state == RunState.SUCCEEDED
    assert run.overrides == {"GREETING": "hey"}  # an empty field keeps the job's value
    assert (run.actor, run.source) == ("local:ada", Source.WEB.value)
    log = [line async for _, line in service.logs(run.id)]
    assert log == ["hello hey"]
    # The same form sent twice (a double click, a reload) starts one run.
    again = await run_now(local, "hello", **{"env:GREETING": "hey"})
    assert run_id_of(again[2]) == run.id
    assert len(await service.runs("hello")) == 1
    # Its page offers Rerun to the operator.
    body = await (await local.get(location)).text()
    assert f'action="/runs/{run.id}/rerun"' in body


async def test_bad_run_now_posts_are_4xx_and_run_nothing(
        local: TestClient, service: JobService) -> None:
    await local.get(f"/?token={LOCAL_TOKEN}")
    cases = [
        ({"env:PATH": "/tmp"}, 400, "PATH changes how programs are loaded or started"),
        ({"env:NOPE": "x"}, 400, "a run of hello may set only"),
        ({"env:GREETING": "two\nlines"}, 400, "GREETING"),
        ({"env:JOBBOT_RUN_ID": "x"}, 400, "JOBBOT_"),
    ]
    for fields, status, words in cases:
        got, body, _ = await run_now(local, "hello", **fields)
        assert got == status, fields
        assert words in html.unescape(body), (fields, body)
    for key in ("", "short", "x" * 65, "é" * 20, "../../etc/passwd-0123"):
        response = await local.post("/jobs/hello/run", data={"key": key}, headers=ORIGIN)
        assert response.status == 400, key
    unknown = await run_now(local, "nope")
    assert unknown[0] == 404
    not_ascii = await run_now(local, "h%C3%A9llo")
    assert not_ascii[0] in (400, 404)
    foreign = await local.post("/jobs/hello/run", data={"key": FORM_KEY},
                               headers={"Origin": "https://evil.example"})
    assert foreign.status == 403
    no_origin = await local.post("/jobs/hello/run", data={"key": FORM_KEY})
    assert no_origin.status == 403
    garbled = await local.post("/jobs/hello/run", data=b"\xff\xfe=%%%", headers={
        **ORIGIN, "Content-Type": "application/x-www-form-urlencoded; charset=no-such"})
    assert garbled.status == 400
    assert await service.runs() == []


async def test_a_confirm_job_asks_first_from_the_page_then_runs(
        local: TestClient, service: JobService) -> None:
    await local.get(f"/?token={LOCAL_TOKEN}")
    status, body, _ = await run_now(local, "risky", **{"env:MODE": "live"})
    assert status == 200
    assert "Run risky?" in body
    assert await service.runs() == []  # nothing runs before the yes
    refused = await run_now(local, "risky", **{"env:PATH": "/x"})
    assert refused[0] == 400  # refused overrides are refused before asking
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body))
    assert fields["confirmed"] == "yes" and fields["env:MODE"] == "live"
    response = await local.post("/jobs/risky/run", data=fields, headers=ORIGIN,
                                allow_redirects=False)
    assert response.status == 303
    run = await asyncio.wait_for(service.wait(run_id_of(response.headers["Location"])), 30)
    assert (run.state, run.overrides) == (RunState.SUCCEEDED, {"MODE": "live"})
    # A rerun from the run page asks again.
    token = Links(PUBLIC_URL, KEY).token(run.id)
    asked = await local.post(f"/runs/{run.id}/rerun", data={"t": token}, headers=ORIGIN)
    assert asked.status == 200
    assert "Run risky?" in await asked.text()
    assert len(await service.runs()) == 1
    done = await local.post(f"/runs/{run.id}/rerun", data={"t": token, "confirmed": "yes"},
                            headers=ORIGIN, allow_redirects=False)
    assert done.status == 303
    rerun = await service.get_run(run_id_of(done.headers["Location"]))
    assert (rerun.rerun_of, rerun.overrides) == (run.id, {"MODE": "live"})


async def test_a_shared_web_token_browses_but_may_not_run(
        shared: TestClient, service: JobService) -> None:
    await shared.get(f"/jobs?token={WEB_TOKEN}")
    page = await (await shared.get("/jobs/hello")).text()
    assert 'id="run-now"' not in page
    assert "jobbot run hello" in page
    status, body, _ = await run_now(shared, "hello")
    assert status == 403
    assert "not signed in with Slack or GitHub" in body
    assert await service.runs() == []


async def test_without_the_cookie_run_now_is_refused(
        local: TestClient, service: JobService) -> None:
    status, body, _ = await run_now(local, "hello")
    assert status == 403
    assert "not signed in" in body
    assert await service.runs() == []


async def test_run_now_takes_parameters_and_a_secret_crosses_the_confirmation_sealed(
        local: TestClient, service: JobService) -> None:
    await local.get(f"/?token={LOCAL_TOKEN}")
    page = await (await local.get("/jobs/deploy")).text()
    assert '<select name="p:TARGET">' in page
    assert re.search(r'<input name="p:STEPS" value="" placeholder="default: 1"', page)
    assert re.search(r'<input name="p:KEY" value=""[^>]* type="password"', page)
    # Missing and malformed parameters are named, before any confirmation, and run nothing.
    status, body, _ = await run_now(local, "deploy", **{"p:TARGET": "prod", "p:STEPS": "x"})
    assert status == 400
    text = html.unescape(body)
    assert "TARGET: 'prod' is not one of staging, production" in text
    assert "STEPS: 'x' is not a whole number" in text and "KEY: is required" in text
    status, body, _ = await run_now(local, "deploy", **{"p:TARGET": "staging",
                                                        "p:KEY": SECRET_VALUE})
    assert status == 200 and "Run deploy?" in body
    assert SECRET_VALUE not in body  # neither shown nor carried in the clear
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body))
    assert fields["p:TARGET"] == "staging" and "p:KEY" not in fields
    assert "sealed:KEY" in fields
    assert await service.runs() == []
    # A seal that does not open is refused, not run.
    forged = {**fields, "sealed:KEY": "not-a-seal"}
    response = await local.post("/jobs/deploy/run", data=forged, headers=ORIGIN)
    assert response.status == 400
    response = await local.post("/jobs/deploy/run", data=fields, headers=ORIGIN,
                                allow_redirects=False)
    assert response.status == 303
    run = await asyncio.wait_for(service.wait(run_id_of(response.headers["Location"])), 30)
    assert run.state == RunState.SUCCEEDED
    assert run.overrides == {"TARGET": "staging", "STEPS": "1"}
    assert SECRET_VALUE not in str(run.secret_parameters)
    assert [line async for _, line in service.logs(run.id)] == ["to staging ********"]
    # A rerun that changes the secret carries it sealed through the confirmation too.
    token = Links(PUBLIC_URL, KEY).token(run.id)
    asked = await local.post(f"/runs/{run.id}/rerun",
                             data={"t": token, "p:KEY": "another-typed-secret"}, headers=ORIGIN)
    body = await asked.text()
    assert asked.status == 200 and "another-typed-secret" not in body
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body))
    done = await local.post(f"/runs/{run.id}/rerun", data=fields, headers=ORIGIN,
                            allow_redirects=False)
    assert done.status == 303
    rerun = await asyncio.wait_for(service.wait(run_id_of(done.headers["Location"])), 30)
    assert (rerun.state, rerun.rerun_of) == (RunState.SUCCEEDED, run.id)
    opened = service.sealer.open(rerun.secret_parameters)
    assert opened == {"KEY": "another-typed-secret"}


async def test_secret_looking_values_stay_masked_and_stray_seals_are_refused(
        local: TestClient, service: JobService) -> None:
    await local.get(f"/?token={LOCAL_TOKEN}")
    first = await service.trigger("deploy", Actor.cli("ada"), overrides={
        "TARGET": "staging", "KEY": SECRET_VALUE, "DB_PASSWORD": "looks-secret-value"})
    await asyncio.wait_for(service.wait(first.run.id), 30)
    token = Links(PUBLIC_URL, KEY).token(first.run.id)
    # The run page's rerun form does not put a secret-looking value back.
    page = await (await local.get(f"/runs/{first.run.id}?t={token}")).text()
    assert re.search(r'<input name="p:DB_PASSWORD" value=""', page)
    assert "looks-secret-value" not in page and SECRET_VALUE not in page
    # Nor does the rerun's confirmation page, in what it shows or carries.
    asked = await local.post(f"/runs/{first.run.id}/rerun", data={"t": token}, headers=ORIGIN)
    body = await asked.text()
    assert asked.status == 200 and "Run deploy?" in body
    assert "looks-secret-value" not in body and SECRET_VALUE not in body
    # A sealed value only stands for a secret parameter of the job.
    forged = service.sealer.seal({"TARGET": "production"})["TARGET"]
    for name in ("TARGET", "NOPE"):
        response = await local.post("/jobs/deploy/run", headers=ORIGIN, data={
            "key": FORM_KEY, "confirmed": "yes", "p:KEY": "x" * 8, f"sealed:{name}": forged})
        assert response.status == 400, name
        assert "not a secret parameter" in html.unescape(await response.text())
    assert len(await service.runs("deploy")) == 1

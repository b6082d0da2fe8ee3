"""The pages through aiohttp's test client: access, run page, raw and live logs, jobs, actions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.links import Links
from core.masking import MASK
from core.models import RunState
from core.policy import Actor
from core.service import JobService
from core.store import Store
from jobbot import server
from jobbot.settings import Settings
from jobbot.wiring import build_runtime
from tests.support.apps import python_job, service_for, write_app
from tests.support.pages import GATED, KEY, WEB_TOKEN, make_app
from web.context import WEB

ADA = Actor.cli("ada")
SECRET = "s3cr3t-value-4242"


PUBLIC_URL = "http://jobbot.test"


@pytest.fixture
def links() -> Links:
    return Links(PUBLIC_URL, KEY)


@pytest.fixture
def service(tmp_path: Path, sqlite_store: Store) -> JobService:
    gate = str(tmp_path / "gate")
    return service_for(tmp_path, sqlite_store, [
        python_job("gated", GATED, env={"GATE": gate, "API_TOKEN": "", "MODE": ""},
                   schedule="0 3 * * *",
                   timezone="Europe/Berlin", description="Waits for the test"),
        python_job("colours", 'print("\\x1b[31mred\\x1b[0m & <script>alert(1)</script>")'),
        # A colour code no terminal knows, with a 5,000-digit parameter, then text.
        python_job("absurd", 'print("\\x1b[" + "9" * 5000 + "mstill shown\\x1b[0m after")'),
    ])


@pytest.fixture
async def client(service: JobService, links: Links) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(service, links))) as client:
        yield client
    await service.shutdown()


async def finished_run(service: JobService, job: str, **kwargs: object) -> str:
    result = await service.trigger(job, ADA, **kwargs)  # type: ignore[arg-type]
    run = await asyncio.wait_for(service.wait(result.run.id), 30)
    return run.id


async def started_run(service: JobService, job: str, **kwargs: object) -> str:
    """A run that has written its first lines and waits for the gate."""
    result = await service.trigger(job, ADA, **kwargs)  # type: ignore[arg-type]
    async with asyncio.timeout(30):
        while len(service.log_store.tail(result.run.id, 1, 5)) < 3:
            await service.changes.wait(0.05)
    return result.run.id


async def test_a_run_page_without_a_valid_token_is_403_and_shows_nothing(
        client: TestClient, service: JobService, links: Links) -> None:
    run_id = await finished_run(service, "colours")
    for query in ("", "?t=", "?t=garbage", f"?t={links.token('0123456789abcdef')}"):
        response = await client.get(f"/runs/{run_id}{query}")
        body = await response.text()
        assert response.status == 403, query
        assert "colours" not in body
        assert "alert" not in body
        assert run_id not in body
    raw = await client.get(f"/runs/{run_id}/logs?t=nope")
    assert raw.status == 403
    assert "alert" not in await raw.text()


async def test_log_lines_about_a_run_carry_its_id(
        client: TestClient, service: JobService, links: Links,
        caplog: pytest.LogCaptureFixture) -> None:
    run_id = await finished_run(service, "colours")
    caplog.set_level("INFO", logger="web")
    await client.get(f"/runs/{run_id}?t=bad")
    refused = [r for r in caplog.records if "refused run page" in r.getMessage()]
    assert [getattr(r, "run_id", None) for r in refused] == [run_id]


async def test_a_finished_run_page_shows_facts_and_the_escaped_coloured_log(
        client: TestClient, service: JobService, links: Links) -> None:
    run_id = await finished_run(service, "colours",
                                origin={"slack_channel": "C123", "repo": "acme/db", "pr": 7})
    response = await client.get(f"/runs/{run_id}?t={links.token(run_id)}")
    body = await response.text()
    assert response.status == 200
    assert "colours" in body
    assert "succeeded" in body
    assert '<div id="L1"><a href="#L1">1</a>' in body
    assert '<span class="c1">red</span> &amp; &lt;script&gt;alert(1)&lt;/script&gt;' in body
    assert "<script>alert(1)" not in body
    assert "https://slack.com/app_redirect?channel=C123" in body
    assert "https://github.com/acme/db/pull/7" in body
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


async def test_secret_overrides_are_masked_on_the_page_and_in_the_log(
        client: TestClient, service: JobService, links: Links, tmp_path: Path) -> None:
    (tmp_path / "gate").touch()
    run_id = await finished_run(service, "gated", overrides={"API_TOKEN": SECRET, "MODE": "x"})
    page = await (await client.get(f"/runs/{run_id}?t={links.token(run_id)}")).text()
    raw = await (await client.get(f"/runs/{run_id}/logs?t={links.token(run_id)}")).text()
    assert SECRET not in page
    assert SECRET not in raw
    assert f"token is {MASK}" in raw
    assert "<th>API_TOKEN</th><td><code>" + MASK in page
    assert "<th>MODE</th><td><code>x</code>" in page


async def test_bad_run_references_get_precise_answers(client: TestClient, links: Links) -> None:
    missing = "0123456789abcdef"
    response = await client.get(f"/runs/{missing}?t={links.token(missing)}")
    assert response.status == 404
    assert "no run" in await response.text()
    response = await client.get(f"/runs/nope?t={links.token('nope')}")
    assert response.status == 400
    assert "is not a run" in await response.text()


async def test_raw_log_streams_whole_and_follows_a_running_run(
        client: TestClient, service: JobService, links: Links, tmp_path: Path) -> None:
    run_id = await started_run(service, "gated")
    response = await client.get(f"/runs/{run_id}/logs?t={links.token(run_id)}&follow=1")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    first = await response.content.readline()
    assert first.decode().endswith("<b>bold?</b>\n")
    (tmp_path / "gate").touch()
    rest = (await response.content.read()).decode().splitlines()
    assert rest[-1] == "done"
    assert rest[0] == "token is none"
    bad = await client.get(f"/runs/{run_id}/logs?t={links.token(run_id)}&attempt=x")
    assert bad.status == 400


async def test_raw_log_of_an_attempt_the_run_does_not_have_is_404(
        client: TestClient, service: JobService, links: Links) -> None:
    run_id = await finished_run(service, "colours")
    first = await client.get(f"/runs/{run_id}/logs?t={links.token(run_id)}&attempt=1")
    assert first.status == 200
    assert "red" in await first.text()
    for query in ("attempt=2", "attempt=9&follow=1", "attempt=0"):
        response = await client.get(f"/runs/{run_id}/logs?t={links.token(run_id)}&{query}")
        assert response.status == 404, query
        attempt = query.split("&")[0].removeprefix("attempt=")
        assert await response.text() == (
            f"colours #1 has 1 attempt: there is no attempt {attempt}\n")


async def read_events(response: object) -> AsyncIterator[tuple[str, str, str]]:
    """(event, id, data) from a text/event-stream body."""
    event, ident, data = "message", "", ""
    async for raw in response.content:  # type: ignore[attr-defined]
        line = raw.decode().rstrip("\n")
        if not line:
            yield event, ident, data
            event, ident, data = "message", "", ""
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            data = line[6:]


async def test_live_log_events_bring_new_lines_and_the_final_state(
        client: TestClient, service: JobService, links: Links, tmp_path: Path) -> None:
    run_id = await started_run(service, "gated")
    response = await client.get(f"/runs/{run_id}/logs?t={links.token(run_id)}&from=1:1",
                                headers={"Accept": "text/event-stream"})
    assert response.headers["Content-Type"] == "text/event-stream"
    numbers: list[int] = []
    states: list[str] = []
    opened = False
    async for event, ident, data in read_events(response):
        if event == "lines":
            rows = json.loads(data)
            numbers += [n for _, n, _ in rows]
            assert ident == f"1:{rows[-1][1]}"
            if not opened:
                (tmp_path / "gate").touch()
                opened = True
        elif event == "state":
            states.append(json.loads(data)["state"])
        elif event == "end":
            break
    assert numbers[0] == 2  # the first line was already on the page (from=1:1)
    assert numbers == list(range(2, numbers[-1] + 1))
    assert states[0] == "running"
    assert states[-1] == "succeeded"
    lines = [line async for _, line in service.logs(run_id)]
    assert len(lines) == numbers[-1]


async def test_browsing_jobs_needs_the_shared_token_then_a_cookie(
        client: TestClient, service: JobService) -> None:
    refused = await client.get("/jobs")
    assert refused.status == 403
    assert "gated" not in await refused.text()
    wrong = await client.get("/jobs?token=wrong")
    assert wrong.status == 403
    signed_in = await client.get(f"/jobs?token={WEB_TOKEN}", allow_redirects=False)
    assert signed_in.status == 303
    assert signed_in.headers["Location"] == "/jobs"
    assert "HttpOnly" in signed_in.headers["Set-Cookie"]
    page = await client.get("/jobs")
    body = await page.text()
    assert page.status == 200
    assert "every day at 03:00 Europe/Berlin" in body
    assert "Waits for the test" in body
    assert "manual only" in body


async def test_job_history_shows_skipped_slots_and_pages(
        client: TestClient, service: JobService, links: Links) -> None:
    await client.get(f"/jobs?token={WEB_TOKEN}")
    for hour in range(3):
        await service.record_skipped("gated", reason="paused",
                                     scheduled_for=datetime(2026, 1, 1, hour, tzinfo=UTC),
                                     idempotency_key=f"slot-{hour}")
    run_id = await finished_run(service, "colours")
    body = await (await client.get("/jobs/gated")).text()
    assert body.count("skipped") >= 3
    assert "paused" in body
    older = await (await client.get("/jobs/gated?before=2")).text()
    assert older.count('class="s-skipped"') == 1
    colours = await (await client.get("/jobs/colours")).text()
    assert f"/runs/{run_id}?t=" in colours
    assert (await client.get("/jobs/gated?before=x")).status == 400
    missing = await client.get("/jobs/nosuch")
    assert missing.status == 404
    # A browser (signed in with the shared token) opens run pages without a link token.
    assert (await client.get(f"/runs/{run_id}")).status == 200


async def test_page_actions_refuse_cross_site_posts_and_people_without_identity(
        client: TestClient, service: JobService, links: Links, sqlite_store: Store,
        tmp_path: Path) -> None:
    run_id = await started_run(service, "gated")
    token = links.token(run_id)
    cross = await client.post(f"/runs/{run_id}/cancel", data={"t": token},
                              headers={"Origin": "https://evil.example"})
    assert cross.status == 403
    assert "own page" in await cross.text()
    origin = PUBLIC_URL  # what a browser on jobbot's page sends
    bad = await client.post(f"/runs/{run_id}/cancel", data={"t": "x"}, headers={"Origin": origin})
    assert bad.status == 403
    denied = await client.post(f"/runs/{run_id}/cancel", data={"t": token},
                               headers={"Origin": origin})
    assert denied.status == 403
    assert "not signed in with Slack or GitHub" in await denied.text()
    entries = sqlite_store.audit_log()
    assert any(e.action == "cancel" and e.result == "denied" and e.source == "web"
               for e in entries)
    run = await service.get_run(run_id)
    assert run.state == RunState.RUNNING
    (tmp_path / "gate").touch()
    await asyncio.wait_for(service.wait(run_id), 30)


METRICS_TOKEN = "scrape-token-7a1f"


@pytest.fixture
async def scraped(service: JobService, links: Links) -> AsyncIterator[TestClient]:
    app = make_app(service, links, metrics_token=METRICS_TOKEN)
    async with TestClient(TestServer(app)) as client:
        yield client
    await service.shutdown()


async def test_metrics_count_runs_by_job_and_state(scraped: TestClient,
                                                    service: JobService) -> None:
    def finished() -> float:
        return _sample(metrics_text, 'jobbot_runs_finished_total{app="demo",job="colours",'
                                     'state="succeeded"}')

    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    metrics_text = await (await scraped.get("/metrics", headers=bearer)).text()
    before = finished()
    await finished_run(service, "colours")
    response = await scraped.get("/metrics", headers=bearer)
    metrics_text = await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert finished() == before + 1
    assert "jobbot_run_duration_seconds_bucket" in metrics_text
    assert "jobbot_scheduler_lag_seconds" in metrics_text


async def test_metrics_need_the_bearer_token(scraped: TestClient) -> None:
    missing = await scraped.get("/metrics")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="jobbot metrics"'
    for header in (f"Bearer {METRICS_TOKEN}x", f"Basic {METRICS_TOKEN}", "Bearer ",
                   f"Bearer {METRICS_TOKEN[:-1]}"):
        wrong = await scraped.get("/metrics", headers={"Authorization": header})
        assert wrong.status == 401, header
        assert "jobbot_" not in await wrong.text()
    good = await scraped.get("/metrics", headers={"Authorization": f"bearer {METRICS_TOKEN}"})
    assert good.status == 200
    assert "jobbot_runs_finished_total" in await good.text()


async def test_metrics_are_off_without_a_token_unless_opened(
        client: TestClient, service: JobService, links: Links) -> None:
    closed = await client.get("/metrics")
    assert closed.status == 403
    assert "JOBBOT_METRICS_TOKEN" in await closed.text()
    async with TestClient(TestServer(make_app(service, links, metrics_open=True))) as open_:
        response = await open_.get("/metrics")
        assert response.status == 200
        assert "jobbot_runs_finished_total" in await response.text()


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_a_viewer_that_falls_behind_is_cut_off_and_resumes_from_its_last_line(
        client: TestClient, service: JobService, links: Links, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    # A limit of one byte: every live batch is more than this viewer may have waiting, so it is
    # cut off each time and must resume; the catch-up from the files moves it on meanwhile.
    client.app[WEB].live.viewer_limit = 1
    caplog.set_level("INFO", logger="web")
    run_id = await started_run(service, "gated")
    url = f"/runs/{run_id}/logs?t={links.token(run_id)}&from=1:0"
    numbers: list[int] = []
    last_id = ""
    connections = 0
    ended = False
    while not ended:
        connections += 1
        assert connections < 200, numbers[-5:]
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        response = await client.get(url, headers=headers)
        try:
            async for event, ident, data in read_events(response):
                if event == "lines":
                    numbers += [n for _, n, _ in json.loads(data)]
                    last_id = ident
                    if connections >= 2:
                        (tmp_path / "gate").touch()
                elif event == "end":
                    ended = True
        except aiohttp.ClientPayloadError:
            pass  # cut off mid-stream: what it did not receive whole, it asks for again
        response.close()
    assert connections >= 2
    assert numbers == list(range(1, numbers[-1] + 1))  # nothing lost, nothing twice
    lines = [line async for _, line in service.logs(run_id)]
    assert len(lines) == numbers[-1]
    assert any("fell behind" in r.getMessage() for r in caplog.records)
    assert client.app[WEB].live._feeds == {}  # nothing left behind for the cut-off viewers


# -- the page buttons' cross-site check ---------------------------------------------------


async def cancel_post(client: TestClient, run_id: str, token: str,
                      **headers: str) -> tuple[int, str]:
    response = await client.post(f"/runs/{run_id}/cancel", data={"t": token}, headers=headers)
    return response.status, await response.text()


async def test_page_buttons_compare_the_origin_with_the_public_url_behind_a_proxy(
        client: TestClient, service: JobService, links: Links, tmp_path: Path) -> None:
    run_id = await started_run(service, "gated")
    token = links.token(run_id)
    # A proxy in front of jobbot rewrites Host; the browser still names the public URL.
    proxied = {"Host": "jobbot-internal:8080"}
    for sent in ({"Origin": PUBLIC_URL}, {"Origin": "HTTP://JOBBOT.TEST:80"},
                 {"Referer": f"{PUBLIC_URL}/runs/{run_id}?t={token}"}):
        status, body = await cancel_post(client, run_id, token, **proxied, **sent)
        # Past the cross-site check: refused only because nobody is signed in.
        assert (status, "not signed in with Slack or GitHub" in body) == (403, True), sent
    own_host = str(client.make_url("/")).rstrip("/")
    for origin in ("https://evil.example", "http://jobbot.test.evil.example",
                   "https://jobbot.test", "http://jobbot.test:8080", own_host, "null",
                   "http://[", "http://jobbot.test:99999", "javascript:alert(1)", "²"):
        status, body = await cancel_post(client, run_id, token, Origin=origin)
        assert (status, "own page" in body) == (403, True), origin
    status, body = await cancel_post(client, run_id, token, Referer="https://evil.example/x")
    assert (status, "own page" in body) == (403, True)
    assert (await service.get_run(run_id)).state == RunState.RUNNING
    (tmp_path / "gate").touch()
    await asyncio.wait_for(service.wait(run_id), 30)


async def test_without_a_public_url_the_origin_must_be_the_requests_host(
        service: JobService, tmp_path: Path) -> None:
    guessed = Links("http://127.0.0.1:8080", KEY, guessed=True)  # JOBBOT_PUBLIC_URL unset
    async with TestClient(TestServer(make_app(service, guessed))) as client:
        run_id = await started_run(service, "gated")
        token = guessed.token(run_id)
        own_host = str(client.make_url("/")).rstrip("/")
        status, body = await cancel_post(client, run_id, token, Origin=own_host)
        assert (status, "not signed in with Slack or GitHub" in body) == (403, True)
        for origin in ("https://evil.example", "http://127.0.0.1:8080"):
            status, body = await cancel_post(client, run_id, token, Origin=origin)
            assert (status, "own page" in body) == (403, True), origin
        (tmp_path / "gate").touch()
        await asyncio.wait_for(service.wait(run_id), 30)
    await service.shutdown()


@pytest.mark.parametrize("public_url", ["https://jobbot.example.com", None])
async def test_the_server_checks_page_posts_against_jobbot_public_url(
        tmp_path: Path, public_url: str | None) -> None:
    config = write_app(tmp_path / "work", [python_job("hello", "print(1)")])
    runtime = build_runtime(Settings(JOBBOT_DATA_DIR=tmp_path / ".jobbot",
                                     JOBBOT_SECRET_KEY="k" * 32,
                                     JOBBOT_PUBLIC_URL=public_url), config)
    missing = "0123456789abcdef"  # a valid link to no run: past the origin check it is 404
    form = {"t": runtime.links.token(missing)}
    try:
        async with TestClient(TestServer(server.make_app(runtime))) as client:
            own_host = str(client.make_url("/")).rstrip("/")
            # Behind a proxy the Host header names jobbot's internal address.
            headers = {"Host": "jobbot.internal:8080"} if public_url else {}
            allowed = public_url or own_host
            response = await client.post(f"/runs/{missing}/cancel", data=form,
                                         headers={**headers, "Origin": allowed})
            assert response.status == 404
            refused = own_host if public_url else "https://jobbot.example.com"
            response = await client.post(f"/runs/{missing}/cancel", data=form,
                                         headers={**headers, "Origin": refused})
            assert response.status == 403
            assert "own page" in await response.text()
    finally:
        runtime.close()


async def test_a_page_form_that_cannot_be_read_is_400(
        client: TestClient, service: JobService, links: Links, tmp_path: Path) -> None:
    run_id = await started_run(service, "gated")
    for content_type, body in [
            ("multipart/form-data", b"t=1"),
            ("multipart/form-data; boundary=zz", b"no parts here"),
            ("application/x-www-form-urlencoded", b"\xff\xfe=1"),
            ("application/x-www-form-urlencoded; charset=no-such-charset", b"t=1")]:
        response = await client.post(f"/runs/{run_id}/cancel", data=body, headers={
            "Origin": PUBLIC_URL, "Host": "jobbot.test", "Content-Type": content_type})
        assert response.status == 400, content_type
        assert "could not be read" in await response.text()
    assert (await service.get_run(run_id)).state == RunState.RUNNING
    (tmp_path / "gate").touch()
    await asyncio.wait_for(service.wait(run_id), 30)


# -- malformed numbers, tokens and cookies ------------------------------------------------

HUGE = "9" * 5000


async def test_malformed_tokens_and_cookies_are_refused_not_errors(
        client: TestClient, service: JobService, links: Links) -> None:
    run_id = await finished_run(service, "colours")
    for query in ("token=%C2%B2", "token=%FF", f"token={WEB_TOKEN}%C2%B2", "token=" + HUGE):
        response = await client.get(f"/jobs?{query}", allow_redirects=False)
        assert response.status == 403, query
    for cookie in ("jobbot_session=²", "jobbot_session=été", "jobbot_user=².²",
                   "jobbot_user=" + "é" * 100 + "." + "x" * 40):
        response = await client.get("/jobs", headers={"Cookie": cookie})
        assert response.status == 403, cookie
        assert "gated" not in await response.text()
    for query in ("t=%C2%B2", "t=" + "é" * 40, "t=" + HUGE):
        response = await client.get(f"/runs/{run_id}?{query}")
        assert response.status == 403, query
        raw = await client.get(f"/runs/{run_id}/logs?{query}")
        assert raw.status == 403, query


async def test_malformed_numbers_in_page_and_log_urls_are_400(
        client: TestClient, service: JobService, links: Links) -> None:
    run_id = await finished_run(service, "colours")
    await client.get(f"/jobs?token={WEB_TOKEN}")
    for before in ("%C2%B2", "%D9%A3", HUGE, "2147483648", "99999999999999999999", "-1", "0",
                   "1e3", " 1", ""):
        response = await client.get(f"/jobs/colours?before={before}")
        assert response.status == 400, before
        assert "before (a run number) must be a whole number" in await response.text()
    assert (await client.get("/jobs/colours?before=2147483647")).status == 200
    logs = f"/runs/{run_id}/logs?t={links.token(run_id)}"
    for attempt in ("%C2%B2", HUGE, "2147483648", "-1", "+1"):
        response = await client.get(f"{logs}&attempt={attempt}")
        assert response.status == 400, attempt
        assert "attempt must be a whole number" in await response.text()
    stream = {"Accept": "text/event-stream"}
    for position in ("1:" + HUGE, HUGE + ":0", "²:0", "1:-1", "1", "x:y"):
        response = await client.get(logs, headers={**stream, "Last-Event-ID": position})
        assert response.status == 400, position
        assert "Last-Event-ID" in await response.text()
        response = await client.get(f"{logs}&from={position}", headers=stream)
        assert response.status == 400, position
        assert "from" in await response.text()
    # A good position still streams the rest of the log, to its end.
    response = await client.get(logs, headers={**stream, "Last-Event-ID": "1:0"})
    assert response.status == 200
    events = [event async for event, _, _ in read_events(response)]
    assert events[-1] == "end"


async def test_an_absurd_colour_code_cannot_hide_a_jobs_log(
        client: TestClient, service: JobService, links: Links) -> None:
    run_id = await finished_run(service, "absurd")
    page = await client.get(f"/runs/{run_id}?t={links.token(run_id)}")
    body = await page.text()
    assert page.status == 200
    assert "still shown after" in body
    assert body.rstrip().endswith("</html>")  # the whole page, not one cut off at the log
    response = await client.get(f"/runs/{run_id}/logs?t={links.token(run_id)}&from=1:0",
                                headers={"Accept": "text/event-stream"})
    lines = [json.loads(data) async for event, _, data in read_events(response)
             if event == "lines"]
    assert [text for _, _, text in lines[0]] == ["still shown after"]

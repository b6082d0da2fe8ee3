"""Run logs on both stores: files with SQLite, chunks in the database with PostgreSQL, read
by every replica (pages, raw logs, live tails, `/job logs`), compacted, pruned, capped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from core.links import Links
from core.logs import limit_marker
from core.masking import MASK
from core.policy import Actor
from core.service import JobService
from core.store import Store
from core.store.base import LOG_CHUNKS
from jobbot.settings import Settings
from tests.conftest import fresh_database_url
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSender
from tests.support.apps import make_service, python_job, service_for, stored_log, write_app
from tests.support.kube import eventually
from tests.support.pages import KEY, make_app, serving
from tests.support.server import Served, serve

ADA = Actor.cli("ada")
SECRET = "hunter2-not-for-logs"

# Prints in bursts (several chunks while it runs), then waits for the gate file.
BURSTS = """
import os, sys, time
for burst in range(5):
    for i in range(200):
        print("burst", burst, "line", i, "x" * (i % 50), flush=True)
    time.sleep(0.15)
print("token", os.environ["API_TOKEN"], flush=True)
while not os.path.exists(os.environ["GATE"]):
    time.sleep(0.05)
print("done", flush=True)
"""
EXPECTED = [f"burst {b} line {i} {'x' * (i % 50)}" for b in range(5) for i in range(200)]
EXPECTED += [f"token {MASK}", "done"]


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return fresh_database_url("postgresql", tmp_path, request)


def chunk_rows(store: Store, run_id: str) -> list[tuple[int, int, bool]]:
    """(attempt, seq, compressed) of the run's rows in the log_chunks table."""
    c = LOG_CHUNKS.c
    with store.engine.connect() as conn:
        return [(a, s, bool(z)) for a, s, z in conn.execute(
            select(c.attempt, c.seq, c.compressed).where(c.run_id == run_id)
            .order_by(c.attempt, c.seq))]


def bursts_job(tmp_path: Path) -> dict[str, object]:
    return python_job("bursts", BURSTS, env={"GATE": str(tmp_path / "gate"), "API_TOKEN": ""})


async def lines_of(service: JobService, run_id: str) -> list[str]:
    return [line async for _, line in service.logs(run_id)]


async def test_a_log_is_written_and_read_back_whole_on_both_stores(
        store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [bursts_job(tmp_path)])
    (tmp_path / "gate").touch()
    run = (await service.trigger("bursts", ADA, overrides={"API_TOKEN": SECRET})).run
    assert (await asyncio.wait_for(service.wait(run.id), 30)).state == "succeeded"
    assert await lines_of(service, run.id) == EXPECTED
    assert service.log_store.line_count(run.id, 1) == len(EXPECTED)
    assert service.log_store.tail(run.id, 1, 2) == EXPECTED[-2:]
    raw = stored_log(service, run.id).decode()
    assert raw == "\n".join(EXPECTED) + "\n"
    assert SECRET not in raw
    rows = chunk_rows(store, run.id)
    if store.dialect == "postgresql":
        # Written as chunks while it ran, one compressed row once the attempt ended.
        assert len(rows) == 1 and rows[0][2]
        assert not (tmp_path / "data" / "logs").exists()
    else:
        assert rows == []


async def test_compaction_keeps_the_log_identical_for_a_reader_part_way_through(
        pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    store.migrate()
    service = service_for(tmp_path, store, [bursts_job(tmp_path)])
    try:
        run = (await service.trigger("bursts", ADA, overrides={"API_TOKEN": SECRET})).run
        await eventually(lambda: _has_line(service, run.id, f"token {MASK}"), "all bursts")
        before = chunk_rows(store, run.id)
        assert len(before) > 1 and not any(z for _, _, z in before)
        # A reader that has read some lines when the attempt's chunks are merged.
        follower = service.logs(run.id, follow=True)
        first = [line for _, line in [await anext(follower) for _ in range(300)]]
        (tmp_path / "gate").touch()
        assert (await asyncio.wait_for(service.wait(run.id), 30)).state == "succeeded"
        after = chunk_rows(store, run.id)
        assert len(after) == 1 and after[0][2] and after[0][1] >= before[-1][1]
        rest = [line async for _, line in follower]
        assert first + rest == EXPECTED
        assert await lines_of(service, run.id) == EXPECTED
    finally:
        await service.shutdown()
        store.close()


async def _has_line(service: JobService, run_id: str, text: str) -> bool:
    return text in [line async for _, line in service.logs(run_id)]


async def test_pruning_history_deletes_a_runs_log_with_it(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("chatty", "print('hello')")])
    runs = []
    for _ in range(3):
        run = (await service.trigger("chatty", ADA)).run
        await asyncio.wait_for(service.wait(run.id), 30)
        runs.append(run.id)
    assert all(stored_log(service, run_id) == b"hello\n" for run_id in runs)
    assert await service.prune_history({("demo", "chatty"): (1, 1, 1)}) == 2
    assert [stored_log(service, run_id) for run_id in runs] == [b"", b"", b"hello\n"]
    assert [service.log_store.attempts(run_id) for run_id in runs] == [[], [], [1]]
    with store.engine.connect() as conn:
        left = conn.execute(select(LOG_CHUNKS.c.run_id).distinct()).scalars().all()
    assert left == ([runs[2]] if store.dialect == "postgresql" else [])


async def test_an_attempt_keeps_its_log_up_to_the_limit_then_a_marker(
        store: Store, tmp_path: Path) -> None:
    limit = 10_000
    app = write_app(tmp_path / "app", [python_job("flood", """
        import sys
        for i in range(5000):
            print("line", i, "of output", flush=i % 100 == 0)
        print("the end", file=sys.stderr)
    """)])
    from core.spec import load_app

    service = make_service(load_app(app), store, tmp_path / "data", log_limit=limit)
    run = (await service.trigger("flood", ADA)).run
    final = await asyncio.wait_for(service.wait(run.id), 30)
    assert (final.state, final.exit_code) == ("succeeded", 0)  # the run itself is unaffected
    lines = await lines_of(service, run.id)
    assert lines[-1] == limit_marker(limit)
    assert lines[:-1] == [f"line {i} of output" for i in range(len(lines) - 1)]
    kept = len("\n".join(lines[:-1]) + "\n")
    assert limit - 30 < kept <= limit
    assert len(stored_log(service, run.id)) == kept + len(limit_marker(limit)) + 1
    assert limit_marker(limit) == (
        "[jobbot] log limit of 10000 bytes reached: the rest of this attempt's output is "
        "dropped")


# -- two replicas on one PostgreSQL ---------------------------------------------------------


async def test_a_second_replica_follows_a_live_log_written_by_the_first(
        pg_url: str, tmp_path: Path) -> None:
    stores = [Store(pg_url), Store(pg_url)]
    for store in stores:
        store.migrate()
    writer = service_for(tmp_path / "a", stores[0], [bursts_job(tmp_path)])
    reader = service_for(tmp_path / "b", stores[1], [bursts_job(tmp_path)])
    links = Links("http://jobbot.test", KEY)
    try:
        run = (await writer.trigger("bursts", ADA, overrides={"API_TOKEN": SECRET})).run
        await eventually(lambda: _has_line(reader, run.id, "burst 0 line 0 "), "a first line")
        async with serving(make_app(reader, links)) as base, aiohttp.ClientSession() as http:
            url = f"{base}/runs/{run.id}/logs?t={links.token(run.id)}&follow=1"
            async with http.get(url) as response:
                assert response.status == 200
                received = b""
                while b"burst 4 line 199" not in received:
                    received += await asyncio.wait_for(response.content.readany(), 10)
                (tmp_path / "gate").touch()
                received += await asyncio.wait_for(response.content.read(), 30)
        assert received.decode() == "\n".join(EXPECTED) + "\n"
        assert not (tmp_path / "b" / "data" / "logs").exists()
    finally:
        await writer.shutdown()
        await reader.shutdown()
        for store in stores:
            store.close()


async def start_replica(tmp_path: Path, name: str, pg_url: str, config: Path,
                        fake: FakeSlack) -> Served:
    settings = Settings(JOBBOT_DATA_DIR=tmp_path / name, JOBBOT_DATABASE_URL=pg_url,
                        JOBBOT_PUBLIC_URL="http://jobbot.test", JOBBOT_SECRET_KEY="k" * 32,
                        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=fake.api_url,
                        SLACK_SIGNING_SECRET=SIGNING_SECRET)
    return await serve(settings, config)


async def test_another_replica_serves_the_page_raw_log_and_slack_logs_of_a_run(
        pg_url: str, tmp_path: Path, slack: FakeSlack) -> None:
    config = write_app(tmp_path / "app", [python_job("leaky", f"""
        print("connecting with {SECRET}")
        for i in range(3):
            print("step", i)
    """, env={"DB_PASSWORD": SECRET})])
    first = await start_replica(tmp_path, "a", pg_url, config, slack)
    second = await start_replica(tmp_path, "b", pg_url, config, slack)
    sender = SlackSender(slack, f"{second.base_url}/slack/events")
    try:
        service = first.runtime.service
        run = (await service.trigger("leaky", ADA)).run
        assert (await asyncio.wait_for(service.wait(run.id), 30)).state == "succeeded"
        expected = [f"connecting with {MASK}", "step 0", "step 1", "step 2"]
        token = second.runtime.links.token(run.id)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{second.base_url}/runs/{run.id}/logs?t={token}") as raw:
                assert (raw.status, await raw.text()) == (200, "\n".join(expected) + "\n")
            async with http.get(f"{second.base_url}/runs/{run.id}?t={token}") as page:
                html = await page.text()
                assert page.status == 200
                assert "step 2" in html and MASK in html and SECRET not in html
        status, ack, trigger = await sender.command(f"logs {run.id}")
        assert status == 200, ack
        answer = str((await sender.answer(trigger))["text"])
        assert "step 2" in answer and SECRET not in answer
        assert not (tmp_path / "b" / "logs").exists()
    finally:
        await sender.close()
        await second.stop()
        await first.stop()

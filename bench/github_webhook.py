"""Benchmark: time to answer signed GitHub deliveries, jobbot's App against a bare handler.

2,000 deliveries (pushes and PR comments, mixed) from 50 concurrent clients, first to a bare
aiohttp handler that only verifies the signature, then to jobbot's `/github/webhook` (which
also records the delivery in SQLite and queues the work; the queued work then runs against
the fake GitHub in the same process, competing for the CPU as it would in production).
Rounds alternate so both see the same machine. Prints deliveries/s and p50/p99 per handler
and the ratios. Goal: p99 under 100 ms and no more than 1.5x the bare handler.

    .venv/bin/python -m bench.github_webhook [--deliveries 2000] [--clients 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.spec import parse_app
from core.store import Store
from github_app.signature import sign, verify
from tests.fakes import github_payloads as payloads
from tests.support import github as support
from tests.support.apps import python_job

REPO = "acme/shop"
PULLS = 50
APP_YAML = json.dumps({"app": "shop", "jobs": [python_job("check", "print(1)")]})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def deliveries(count: int) -> list[tuple[str, bytes]]:
    """Half pushes to a feature branch, half `/jobs` comments on 50 PRs: each its own id."""
    push = json.dumps(payloads.push(REPO, "feature", "a" * 40)).encode()
    comments = [json.dumps(payloads.issue_comment(REPO, pr, "/jobs")).encode()
                for pr in range(1, PULLS + 1)]
    return [("push", push) if i % 2 else ("issue_comment", comments[i // 2 % PULLS])
            for i in range(count)]


async def send(url: str, items: list[tuple[str, bytes]], clients: int) -> list[float]:
    latencies: list[float] = []
    queue = list(reversed(items))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while queue:
                event, body = queue.pop()
                headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
                           "X-Hub-Signature-256": sign(support.SECRET, body),
                           "Content-Type": "application/json"}
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        raise RuntimeError(f"answer {response.status}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def bare_handler(request: web.Request) -> web.Response:
    body = await request.read()
    if not verify(support.SECRET, body, request.headers.get("X-Hub-Signature-256")):
        return web.json_response({"error": "bad signature"}, status=401)
    return web.json_response({"status": "accepted"}, status=202)


def report(name: str, latencies: list[float], elapsed: float) -> tuple[float, float, float]:
    rate = len(latencies) / elapsed
    p50, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
    print(f"{name:<10} {len(latencies):>6} deliveries  {rate:8.0f}/s  p50 {p50:6.1f} ms  "
          f"p99 {p99:6.1f} ms")
    return rate, p50, p99


async def run(count: int, clients: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        store = Store(f"sqlite:///{path / 'jobbot.db'}")
        store.migrate()
        app = parse_app(APP_YAML)
        harness, closers = await support.start(path, app, store, workers=8)
        harness.fake.permissions[(REPO, "alice")] = "write"
        for pr in range(1, PULLS + 1):
            harness.fake.add_pull(REPO, pr, "b" * 40)
        harness.fake.add_file(REPO, "a" * 40, "app.yaml", APP_YAML)
        bare_app = web.Application()
        bare_app.router.add_post("/github/webhook", bare_handler)
        bare = TestServer(bare_app, host="127.0.0.1")
        await bare.start_server()
        targets = {"bare": str(bare.make_url("/github/webhook")),
                   "jobbot": str(harness.client.make_url("/github/webhook"))}
        results: dict[str, tuple[list[float], float]] = {"bare": ([], 0.0), "jobbot": ([], 0.0)}
        try:
            # Warm up both (githubkit imports its models on first use), unmeasured.
            for url in targets.values():
                await send(url, deliveries(100), clients)
            await harness.github.queue.join()
            for _ in range(rounds):
                for name, url in targets.items():
                    items = deliveries(count // rounds)
                    started = time.perf_counter()
                    latencies = await send(url, items, clients)
                    elapsed = time.perf_counter() - started
                    so_far, total = results[name]
                    results[name] = (so_far + latencies, total + elapsed)
            print(f"{count} signed deliveries, {clients} concurrent clients, {rounds} rounds")
            bare_rate, _, bare_p99 = report("bare", *results["bare"])
            rate, _, p99 = report("jobbot", *results["jobbot"])
            queued_at = time.perf_counter()
            await harness.github.queue.join()
            drained = time.perf_counter() - queued_at
            handled = len(harness.fake.calls_to("GET", rf"/repos/{REPO}/pulls/\d+"))
            print(f"jobbot/bare: p99 {p99 / bare_p99:.2f}x, throughput "
                  f"{rate / bare_rate:.2f}x; background work for {handled} comments finished "
                  f"{drained:.1f}s after the last answer")
        finally:
            await bare.close()
            await support.stop(harness, closers)
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args.deliveries, args.clients, args.rounds))


if __name__ == "__main__":
    main()




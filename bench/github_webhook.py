"""Benchmark: time to answer signed GitHub deliveries, `jobbot serve` against a bare handler.

Three processes besides this one: the fake GitHub REST API (niced: GitHub's own work is not
jobbot's), `jobbot serve` (local executor, SQLite, the GitHub App on POST /github/webhook) and
a bare aiohttp handler that only verifies the signature, served the same way (AppRunner and
TCPSite on 127.0.0.1, no access log). This process is the client for both: 2,000 deliveries,
pushes and `/jobs` comments on 50 pull requests mixed, from 50 concurrent connections. Rounds
alternate between the two; after each jobbot round the bench waits until jobbot has handled
every delivery (the API calls happen after the answer), so a bare round never shares the
machine with jobbot's leftover work, and prints how long that took. It also prints each
server's CPU time per delivery during the rounds, which varies less from run to run than the
latencies do. Goal: p99 under 100 ms and no more than 1.5x the bare handler.

    .venv/bin/python -m bench.github_webhook [--deliveries 2000] [--clients 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.servers import cpu_seconds, free_port, run_round, stop_all, wait_healthy
from bench.trigger import percentile
from core.store import Store
from github_app.signature import sign, verify
from tests.fakes import github_payloads as payloads
from tests.fakes.github import FakeGitHub, private_key_pem
from tests.support.apps import python_job

REPO = "acme/shop"
PULLS = 50
SECRET = "bench-webhook-secret"
APP_YAML = json.dumps({"app": "shop", "jobs": [python_job("check", "print(1)")]})


# -- the servers run in child processes ---------------------------------------------------


async def listen(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def serve_fake_github(port: int, public_key: str, ready_file: str) -> None:
    os.nice(10)
    fake = FakeGitHub(payloads.APP_ID, public_key)
    fake.permissions[(REPO, "alice")] = "write"
    for pr in range(1, PULLS + 1):
        fake.add_pull(REPO, pr, "b" * 40)
    fake.add_file(REPO, "a" * 40, "app.yaml", APP_YAML)
    fake.url = f"http://127.0.0.1:{port}"
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.to_thread(Path(ready_file).write_text, "ready")
    await asyncio.Event().wait()


async def bare_handler(request: web.Request) -> web.Response:
    body = await request.read()
    if not verify(SECRET.encode(), body, request.headers.get("X-Hub-Signature-256")):
        return web.json_response({"error": "bad signature"}, status=401)
    return web.json_response({"status": "accepted", "message": "accepted"}, status=202)


async def serve_bare(port: int) -> None:
    app = web.Application()
    app.router.add_post("/github/webhook", bare_handler)
    app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))  # type: ignore[arg-type,return-value]
    await listen(app, port)


# -- the clients ----------------------------------------------------------------------------


def deliveries(count: int) -> list[tuple[str, str, bytes]]:
    """Half pushes to a feature branch, half `/jobs` comments on 50 PRs: each its own id."""
    push = json.dumps(payloads.push(REPO, "feature", "a" * 40)).encode()
    comments = [json.dumps(payloads.issue_comment(REPO, pr, "/jobs")).encode()
                for pr in range(1, PULLS + 1)]
    return [("push", str(uuid.uuid4()), push) if i % 2 else
            ("issue_comment", str(uuid.uuid4()), comments[i // 2 % PULLS])
            for i in range(count)]


async def send(url: str, items: list[tuple[str, str, bytes]], clients: int) -> list[float]:
    latencies: list[float] = []
    queue = list(reversed(items))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while queue:
                event, delivery_id, body = queue.pop()
                headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery_id,
                           "X-Hub-Signature-256": sign(SECRET.encode(), body),
                           "Content-Type": "application/json"}
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        raise RuntimeError(f"answer {response.status}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def wait_handled(store: Store, sent: list[str], timeout: float = 300) -> float:
    """Seconds until jobbot has recorded every delivery sent (it writes a delivery's row in
    the first quiet spell after answering) and handled every one it recorded."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while len(store.known_deliveries(sent)) < len(sent) or store.unhandled_delivery_count():
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobbot did not handle its deliveries within {timeout:.0f}s")
        time.sleep(0.1)
    return time.perf_counter() - started


def report(name: str, latencies: list[float], elapsed: float) -> tuple[float, float, float]:
    rate = len(latencies) / elapsed
    p50, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
    print(f"{name:<8} {len(latencies):>6} deliveries  {rate:8.0f}/s  p50 {p50:6.1f} ms  "
          f"p99 {p99:6.1f} ms  max {max(latencies) * 1000:6.1f} ms")
    return rate, p50, p99


def run(count: int, clients: int, rounds: int) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="jobbot-bench-") as tmp:
        work = Path(tmp)
        try:
            private, public = private_key_pem()
            (work / "app.pem").write_text(private)
            (work / "app.pub").write_text(public)
            ready = work / "fake-github-ready"
            fake_port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.github_webhook",
                                           "--role", "fake-github", "--arg", str(fake_port),
                                           "--arg", str(work / "app.pub"), "--arg", str(ready)]))
            while not ready.exists():
                time.sleep(0.05)
            (work / "app.yaml").write_text(APP_YAML)
            jobbot_port, bare_port = free_port(), free_port()
            env = {**os.environ, "JOBBOT_APP_CONFIG": str(work / "app.yaml"),
                   "JOBBOT_DATA_DIR": str(work / ".jobbot"), "JOBBOT_PORT": str(jobbot_port),
                   "JOBBOT_SECRET_KEY": "b" * 32, "GITHUB_APP_ID": str(payloads.APP_ID),
                   "GITHUB_PRIVATE_KEY_PATH": str(work / "app.pem"),
                   "GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_API_URL": f"http://127.0.0.1:{fake_port}"}
            jobbot = subprocess.Popen([sys.executable, "-m", "jobbot", "serve"], env=env,
                                      cwd=work, stderr=subprocess.DEVNULL)
            procs.append(jobbot)
            bare = subprocess.Popen([sys.executable, "-m", "bench.github_webhook", "--role",
                                     "bare", "--arg", str(bare_port)])
            procs.append(bare)
            wait_healthy(jobbot_port, jobbot)
            wait_healthy(bare_port, bare)
            store = Store(f"sqlite:///{work / '.jobbot' / 'jobbot.db'}")
            targets = {"bare": f"http://127.0.0.1:{bare_port}/github/webhook",
                       "jobbot": f"http://127.0.0.1:{jobbot_port}/github/webhook"}
            pids = {"bare": bare.pid, "jobbot": jobbot.pid}
            results: dict[str, tuple[list[float], float]] = {n: ([], 0.0) for n in targets}
            cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
            load_before = Path("/proc/loadavg").read_text().split()[:3]
            # Warm up both (imports on first use, installation token, pools), unmeasured.
            warm_up = deliveries(100)
            for url in targets.values():
                asyncio.run(send(url, warm_up, clients))
            wait_handled(store, [i for _, i, _ in warm_up])
            drains: list[float] = []
            round_p99: dict[str, list[float]] = {}
            comment_ids: list[str] = []
            for _ in range(rounds):
                for name, url in targets.items():
                    items = deliveries(count // rounds)
                    started, cpu_before = time.perf_counter(), cpu_seconds(pids[name])
                    latencies = run_round(send(url, items, clients))
                    elapsed = time.perf_counter() - started
                    cpu[name] += cpu_seconds(pids[name]) - cpu_before
                    so_far, total = results[name]
                    results[name] = (so_far + latencies, total + elapsed)
                    round_p99.setdefault(name, []).append(percentile(latencies, 0.99) * 1000)
                    if name == "jobbot":
                        drains.append(wait_handled(store, [i for _, i, _ in items]))
                        comment_ids += [i for e, i, _ in items if e == "issue_comment"]
            done = sum(1 for i in comment_ids if (row := store.delivery(i)) is not None
                       and row.outcome.startswith("/jobs: done"))
            store.close()
            load_after = Path("/proc/loadavg").read_text().split()[:3]
            print(f"{count} signed deliveries per server, {clients} concurrent clients, "
                  f"{rounds} alternating rounds, {os.cpu_count()} CPUs, load average "
                  f"{' '.join(load_before)} before, {' '.join(load_after)} after")
            bare_rate, bare_p50, bare_p99 = report("bare", *results["bare"])
            rate, p50, p99 = report("jobbot", *results["jobbot"])
            for name, p99s in round_p99.items():
                print(f"  p99 of each round, {name + ':':<7} "
                      + "  ".join(f"{p:6.1f}" for p in p99s) + " ms")
            print(f"jobbot handled {done} of {len(comment_ids)} `/jobs` comments (and the "
                  f"pushes) {' s, '.join(f'{d:.1f}' for d in drains)} s after each round's "
                  f"last answer")
            answered = {name: len(results[name][0]) for name in targets}
            print("CPU per delivery while answering (the server's every thread): "
                  + "   ".join(f"{name} {cpu[name] / answered[name] * 1000:.3f} ms"
                             for name in targets)
                  + f"   ratio {cpu['jobbot'] / cpu['bare']:.2f}x")
            print(f"ratio jobbot/bare: p50 {p50 / bare_p50:.2f}x   p99 {p99 / bare_p99:.2f}x   "
                  f"throughput {rate / bare_rate:.2f}x   (goal: p99 < 100 ms and <= 1.5x)")
        finally:
            stop_all(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--role", choices=["fake-github", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "fake-github":
        asyncio.run(serve_fake_github(int(args.arg[0]), Path(args.arg[1]).read_text(),
                                      args.arg[2]))
    elif args.role == "bare":
        asyncio.run(serve_bare(int(args.arg[0])))
    else:
        run(args.deliveries, args.clients, args.rounds)


if __name__ == "__main__":
    main()

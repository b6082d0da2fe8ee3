"""Benchmark: time to Slack's HTTP answer for signed `/job run` commands, jobbot vs bare Bolt.

Three processes besides this one: the fake Slack Web API, `jobbot serve` (the local executor,
SQLite, the Slack bot on POST /slack/events) and a bare slack-bolt AsyncApp that only acks,
mounted the same way (same aiohttp adapter, same Bolt options). The clients (this process)
send the same signed commands to each from 50 concurrent connections, in alternating rounds
(bare, then jobbot, then until jobbot has finished every run it was asked for), so the
machine's load drifts over both alike. Every jobbot command really creates and runs a run with
the local executor: jobbot records each request in its database before the ack and starts the
runs right after a burst of acks (its backlog gives way to acks; see bot/backlog.py). So that
this deferral is visible, the bench also prints how long after sending each command its run
was created, and how long jobbot took to finish all runs. Goal: p99 < 100 ms, <= 1.5x bare.

A second `jobbot serve` (its own database) is measured in the same rounds with an executor that
really creates, starts and finishes every run (run events, Slack threads, answers) but launches
no process (InstantExecutor below): the local executor starts 1,000 processes on the same two
cores as the servers and the clients, and the two jobbot lines together show what that costs.

    .venv/bin/python -m bench.slack_ack [--commands 1000] [--clients 50] [--rounds 5]
                                        [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.servers import cpu_seconds, free_port, run_round, stop_all, wait_healthy
from bench.trigger import percentile
from core.executors.base import Launch, ReporterBinding
from core.models import Attempt, Run, RunState
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSender

# Commands sent to each server before the measured rounds.
WARM_UP = 200
APP_YAML = """\
app: bench
jobs:
  - name: hello
    image: busybox
    command: ["true"]
"""


# -- the roles run in child processes -----------------------------------------------------


async def serve_fake_slack(port_file: str) -> None:
    fake = FakeSlack()
    url = await fake.start()
    await asyncio.to_thread(Path(port_file).write_text, url)
    await asyncio.Event().wait()


async def serve_bare_bolt(port: int, api_url: str) -> None:
    """A Bolt app that acks `/job` and does nothing else, behind the same aiohttp adapter."""
    from aiohttp import web
    from slack_bolt.async_app import AsyncAck, AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.adapter import to_aiohttp_response, to_bolt_request

    # The same Bolt options as jobbot's app (bot.app.build), so only the listener differs.
    bolt = AsyncApp(client=AsyncWebClient(token=BOT_TOKEN, base_url=api_url),
                    signing_secret=SIGNING_SECRET, process_before_response=True)

    async def ack_only(ack: AsyncAck) -> None:
        await ack()

    bolt.command("/job")(ack_only)

    async def events(request: web.Request) -> web.Response:
        return to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application()
    app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))  # type: ignore[arg-type,return-value]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


class InstantExecutor(ReporterBinding):
    """Starts and finishes each run at once (exit code 0) without launching a process."""

    name = "instant"

    def __init__(self) -> None:
        self._finishing: set[asyncio.Task[None]] = set()

    async def launch(self, launch: Launch) -> None:
        await self.reporter.run_started(launch.run.id)
        task = asyncio.create_task(self.reporter.run_finished(
            launch.run.id, RunState.SUCCEEDED, exit_code=0))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def cancel(self, run: Run, actor: str) -> bool:
        return False

    async def reconcile(self, runs: list[tuple[Run, list[Attempt]]]) -> None:
        for run, _ in runs:
            await self.reporter.run_finished(run.id, RunState.FAILED, reason="bench restarted")

    async def shutdown(self, reason: str) -> None:
        await asyncio.gather(*self._finishing, return_exceptions=True)


def serve_jobbot_instant() -> int:
    """`jobbot serve` with the InstantExecutor (settings from the environment, as `serve`)."""
    from jobbot.server import serve
    from jobbot.settings import Settings
    from jobbot.wiring import build_runtime

    runtime = build_runtime(Settings(), executor=InstantExecutor())
    try:
        return asyncio.run(serve(runtime))
    finally:
        runtime.close()


# -- the clients ----------------------------------------------------------------------------


async def measure(url: str, fake_url: str, commands: int, clients: int,
                  sent: dict[str, float] | None = None) -> list[float]:
    """Seconds from sending each signed command to its HTTP answer (send times into `sent`)."""
    fake = FakeSlack()
    fake.url = fake_url  # only used to build response_url values
    connector = aiohttp.TCPConnector(limit=clients)
    sender = SlackSender(fake, url, session=aiohttp.ClientSession(connector=connector))
    times: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(commands):
        queue.put_nowait(i)

    async def client() -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body, trigger = sender.command_body("run hello")
            headers = sender.headers(body)
            if sent is not None:
                sent[trigger] = time.time()
            start = time.perf_counter()
            status, text = await sender.post(body, headers)
            times.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {text}")

    await asyncio.gather(*(client() for _ in range(clients)))
    await sender.close()
    return times


def wait_drained(data_dir: Path, runs: int, timeout: float = 600) -> None:
    """Until jobbot has recorded `runs` runs, none is queued or running, and all is notified."""
    from core.store import Store

    store = Store(f"sqlite:///{data_dir / 'jobbot.db'}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            known = store.list_runs(app="bench", job="hello", limit=1)
            unfinished = store.list_runs(states=(RunState.QUEUED, RunState.RUNNING), limit=1)
            # ... and the Slack notifications of every run event have been sent.
            notified = (store.cursor("slack") or 0) >= store.last_event_id()
            if known and known[0].number >= runs and not unfinished and notified:
                return
            time.sleep(0.2)
        raise RuntimeError(f"jobbot did not finish {runs} runs within {timeout}s")
    finally:
        store.close()


def creation_lags(data_dir: Path, sent: dict[str, float]) -> list[float]:
    """Seconds from sending each command to the creation of its run (the key is the request's)."""
    from core.store import Store

    store = Store(f"sqlite:///{data_dir / 'jobbot.db'}")
    try:
        lags = []
        for trigger, at in sent.items():
            run = store.run_by_key(f"slack:command:{trigger}")
            if run is None:
                raise RuntimeError(f"no run for acknowledged command {trigger}")
            lags.append(run.created_at.timestamp() - at)
        return lags
    finally:
        store.close()


def report(name: str, times: list[float]) -> tuple[float, float]:
    p50, p99 = statistics.median(times) * 1000, percentile(times, 0.99) * 1000
    print(f"{name:<32} n={len(times):<5} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   "
          f"max {max(times) * 1000:7.1f} ms")
    return p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", metavar="FILE",
                        help="run `jobbot serve` under cProfile and write its stats to FILE")
    parser.add_argument("--role", choices=["fake-slack", "bare", "jobbot-instant"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "fake-slack":
        asyncio.run(serve_fake_slack(args.arg[0]))
        return
    if args.role == "bare":
        asyncio.run(serve_bare_bolt(int(args.arg[0]), args.arg[1]))
        return
    if args.role == "jobbot-instant":
        sys.exit(serve_jobbot_instant())
    run(args.commands, args.clients, args.rounds, args.profile)


def run(commands: int, clients: int, rounds: int, profile: str | None = None) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="jobbot-bench-") as tmp:
        work = Path(tmp)
        try:
            port_file = work / "fake-slack-url"
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.slack_ack", "--role",
                                           "fake-slack", "--arg", str(port_file)]))
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            fake_url = port_file.read_text()
            (work / "app.yaml").write_text(APP_YAML)
            bare_port = free_port()
            local_dir, instant_dir = work / "local" / ".jobbot", work / "instant" / ".jobbot"
            local_port, instant_port = free_port(), free_port()
            env = {**os.environ, "JOBBOT_APP_CONFIG": str(work / "app.yaml"),
                   "JOBBOT_SECRET_KEY": "b" * 32, "SLACK_BOT_TOKEN": BOT_TOKEN,
                   "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": f"{fake_url}/api/"}
            profiler = ["-m", "cProfile", "-o", str(Path(profile).resolve())] if profile else []
            local = subprocess.Popen(
                [sys.executable, *profiler, "-m", "jobbot", "serve"], cwd=work,
                env={**env, "JOBBOT_DATA_DIR": str(local_dir), "JOBBOT_PORT": str(local_port)},
                stderr=subprocess.DEVNULL)
            procs.append(local)
            instant = subprocess.Popen(
                [sys.executable, "-m", "bench.slack_ack", "--role", "jobbot-instant"], cwd=work,
                env={**env, "JOBBOT_DATA_DIR": str(instant_dir),
                     "JOBBOT_PORT": str(instant_port), "PYTHONPATH": str(Path.cwd())},
                stderr=subprocess.DEVNULL)
            procs.append(instant)
            bare = subprocess.Popen([sys.executable, "-m", "bench.slack_ack", "--role", "bare",
                                     "--arg", str(bare_port), "--arg", f"{fake_url}/api/"])
            procs.append(bare)
            for port, proc in ((local_port, local), (instant_port, instant), (bare_port, bare)):
                wait_healthy(port, proc)
            bare_url = f"http://127.0.0.1:{bare_port}/slack/events"
            local_url = f"http://127.0.0.1:{local_port}/slack/events"
            instant_url = f"http://127.0.0.1:{instant_port}/slack/events"
            # Warm-up, unmeasured, at full concurrency: auth.test, pools, and the first burst on
            # fresh connections (a smaller warm-up left that cold burst in the first round's
            # figures, the slowest 1% of every server's answers).
            for url in (bare_url, local_url, instant_url):
                asyncio.run(measure(url, fake_url, WARM_UP, clients))
            wait_drained(local_dir, WARM_UP)
            wait_drained(instant_dir, WARM_UP)
            bare_times: list[float] = []
            local_times: list[float] = []
            instant_times: list[float] = []
            round_p99: dict[str, list[float]] = {"bare": [], "local": [], "instant": []}
            sent: dict[str, float] = {}
            drained = 0.0
            pids = {"bare": bare.pid, "local": local.pid, "instant": instant.pid}
            cpu = dict.fromkeys(pids, 0.0)

            def measured(name: str, url: str, size: int,
                         sent: dict[str, float] | None = None) -> list[float]:
                before = cpu_seconds(pids[name])
                times = run_round(measure(url, fake_url, size, clients, sent))
                cpu[name] += cpu_seconds(pids[name]) - before
                return times

            for round_ in range(rounds):
                size = commands // rounds + (1 if round_ < commands % rounds else 0)
                bare_times += measured("bare", bare_url, size)
                local_times += measured("local", local_url, size, sent)
                started = time.perf_counter()
                wait_drained(local_dir, WARM_UP + len(local_times))
                drained += time.perf_counter() - started
                instant_times += measured("instant", instant_url, size)
                for name, times in (("bare", bare_times), ("local", local_times),
                                    ("instant", instant_times)):
                    round_p99[name].append(percentile(times[-size:], 0.99) * 1000)
                wait_drained(instant_dir, WARM_UP + len(instant_times))
            lags = creation_lags(local_dir, sent)
            print(f"{commands} signed `/job run` commands, {clients} concurrent clients, "
                  f"{rounds} alternating rounds, {os.cpu_count()} CPUs, "
                  f"load average {Path('/proc/loadavg').read_text().split()[0]}")
            b50, b99 = report("bare slack-bolt AsyncApp (ack)", bare_times)
            j50, j99 = report("jobbot serve, local executor", local_times)
            report("  ... command sent -> run created", lags)
            i50, i99 = report("jobbot serve, instant executor", instant_times)
            for name, p99s in round_p99.items():
                print(f"  p99 of each round, {name + ':':<8} "
                      + "  ".join(f"{p:6.1f}" for p in p99s) + " ms")
            print(f"jobbot finished each round's runs (local executor) {drained / rounds:.1f} s "
                  "after its last answer, on average")
            print("CPU per command while answering (the server's every thread): "
                  + "   ".join(f"{name} {cpu[name] / commands * 1000:.3f} ms" for name in cpu))
            print(f"ratio jobbot/bare, local executor:   p50 {j50 / b50:.2f}x   "
                  f"p99 {j99 / b99:.2f}x   (goal: p99 < 100 ms and <= 1.5x)")
            print(f"ratio jobbot/bare, instant executor: p50 {i50 / b50:.2f}x   "
                  f"p99 {i99 / b99:.2f}x")
        finally:
            stop_all(procs)


if __name__ == "__main__":
    main()

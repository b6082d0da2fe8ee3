"""Benchmark: `jobbot serve`'s Slack intake on SQLite and PostgreSQL (answers, overload, feedback).

Answers to signed `/job run` commands against a bare and a naive durable handler, answers under
overload, and how soon a person sees the run's thread.

Per database, this process is the clients and drives five others: the fake Slack Web API
(tests/fakes/slack.py, which records when each call arrives; its records are read over HTTP)
and three servers taking POST /slack/events:

- bare: a slack-bolt AsyncApp whose `/job` listener only acks (Bolt verifies the signature),
  behind slack-bolt's aiohttp adapter;
- naive durable: the same app, whose listener first INSERTs the request (a row with its body)
  and commits, in a worker thread, through a SQLAlchemy engine on the same kind of database
  (SQLite in WAL mode with synchronous=NORMAL, as jobbot opens it);
- jobbot: `jobbot serve`, driven as a black box (HTTP in, the fake Slack out), so nothing is
  injected into it: it runs the local executor it has without Kubernetes. The job runs
  `true`: every command really creates and runs a run and posts its thread, and the
  processes cost little beside the intake.

On PostgreSQL, jobbot and the naive handler each have a database in one throwaway cluster
(tests/support/postgres.py); on SQLite, each its own file.

Three parts, each printed per database, then a summary:

- Answers: the same commands to each server from 50 concurrent connections, in alternating
  rounds (bare, naive, jobbot). After each jobbot round the bench waits until the fake has seen
  the last thread reply of every run it started, so the next round has the machine to itself.
  Per server: p50, p99 and max latency (of every request), answers per second, errors
  (anything but a 2xx, or no answer within Slack's 3 s); jobbot/bare and jobbot/naive ratios.
  Goals: jobbot's p99 under 100 ms, its throughput at least the naive handler's.
- Overload: 1,000 commands from 500 concurrent connections to each server, then the wait
  for jobbot's work, which counts the requests it may have taken without answering in time.
  Goal: no errors from jobbot, p99 under 1 s.
- Feedback: 20 commands a second for 30 s to jobbot, each from its own user; the time from
  sending each to the fake receiving the chat.postMessage of its run's thread parent (found by
  the user it mentions). Goal: p99 under 2 s.

    .venv/bin/python -m bench.slack_ack [--database sqlite|postgres|both] [--commands 1000]
        [--clients 50] [--rounds 5] [--overload-clients 500] [--rate 20] [--seconds 30] [--keep]

A quick smoke run: `--commands 200 --rounds 1 --seconds 5 --warm-up 50`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.servers import (
    Databases,
    Intake,
    NaiveStore,
    Records,
    Request,
    Servers,
    Target,
    add_arguments,
    child_env,
    listen,
    run_bench,
    serve_records,
    start_role,
    stop_all,
    wait_file,
    wait_healthy,
)
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSender
from tests.support.net import free_port

APP_YAML = """\
app: bench
jobs:
  - name: hello
    image: busybox
    command: ["true"]
"""
MODULE = "bench.slack_ack"
MENTION = re.compile(r"<@(U[A-Z0-9]+)>")


# -- the roles run in child processes -----------------------------------------------------


async def serve_fake_slack(port_file: str) -> None:
    fake = FakeSlack()
    url = await fake.start()

    def rows(since: int) -> list[dict[str, Any]]:
        return [{"method": c.method, "at": c.at, "thread": bool(c.params.get("thread_ts")),
                 "text": str(c.params.get("text") or "")[:300]} for c in fake.calls[since:]]

    await serve_records(rows, Path(port_file), url)


async def serve_bolt(port: int, api_url: str, naive_url: str | None) -> None:
    """A Bolt app that acks `/job` and does nothing else (bare), or that first commits the
    request to its database (naive), behind slack-bolt's aiohttp adapter."""
    from aiohttp import web
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
    from slack_bolt.async_app import AsyncAck, AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.web.async_client import AsyncWebClient

    bolt = AsyncApp(client=AsyncWebClient(token=BOT_TOKEN, base_url=api_url),
                    signing_secret=SIGNING_SECRET, process_before_response=True)
    if naive_url is None:
        async def ack_only(ack: AsyncAck) -> None:
            await ack()

        bolt.command("/job")(ack_only)
    else:
        store = NaiveStore(naive_url)

        async def commit_then_ack(ack: AsyncAck, body: dict[str, Any],
                                  request: AsyncBoltRequest) -> None:
            await asyncio.to_thread(store.insert, str(body.get("trigger_id")),
                                    request.raw_body.encode())
            await ack()

        bolt.command("/job")(commit_then_ack)

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(
            await to_bolt_request(request)))

    app = web.Application()
    app.router.add_post("/slack/events", events)
    await listen(app, port)


# -- the bench ----------------------------------------------------------------------------


async def signer(fake_url: str) -> SlackSender:
    """A SlackSender for its signed bodies and headers only (its own session closed at once):
    response_url values point at the fake Slack."""
    fake = FakeSlack()
    fake.url = fake_url
    sender = SlackSender(fake, "")
    await sender.close()
    return sender


class SlackIntake(Intake):
    what = "signed `/job run` commands"
    streamed = "`/job run` commands, each from its own user,"
    seen_what = "the run's Slack thread posted"
    deadline = 3.0  # Slack's wait for an acknowledgement

    def __init__(self) -> None:
        self.sender: SlackSender | None = None

    def start(self, work: Path, dbs: Databases) -> Servers:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            port_file = work / "fake-slack.json"
            procs.append(fake := start_role(MODULE, "fake-slack", str(port_file)))
            urls = json.loads(wait_file(port_file, fake))
            self.sender = asyncio.run(signer(urls["api"]))
            api_url = f"{urls['api']}/api/"
            (work / "app.yaml").write_text(APP_YAML)
            ports = {name: free_port() for name in ("bare", "naive", "jobbot")}
            procs.append(bare := start_role(MODULE, "bare", str(ports["bare"]), api_url))
            procs.append(naive := start_role(MODULE, "naive", str(ports["naive"]), api_url,
                                             dbs.naive))
            log = work / "jobbot.log"
            with log.open("wb") as out:
                procs.append(jobbot := subprocess.Popen(
                    [sys.executable, "-m", "jobbot", "serve"], cwd=work, stdout=out, stderr=out,
                    env=child_env({
                        "JOBBOT_APP_CONFIG": str(work / "app.yaml"),
                        "JOBBOT_DATA_DIR": str(work / ".jobbot"),
                        "JOBBOT_DATABASE_URL": dbs.jobbot,
                        "JOBBOT_PORT": str(ports["jobbot"]), "JOBBOT_SECRET_KEY": "b" * 32,
                        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                        "SLACK_API_URL": api_url})))
            procs_by_name = {"bare": bare, "naive": naive, "jobbot": jobbot}
            for name, proc in procs_by_name.items():
                wait_healthy(ports[name], proc)
        except BaseException:
            stop_all(procs)
            raise
        labels = {"bare": "bare: slack-bolt AsyncApp, ack only",
                  "naive": "naive durable: commit the request, then ack",
                  "jobbot": "jobbot serve"}
        targets = {name: Target(labels[name], f"http://127.0.0.1:{ports[name]}/slack/events",
                                proc) for name, proc in procs_by_name.items()}
        return Servers(Records(urls["records"]), targets, procs, log)

    def _command(self, user: str) -> Request:
        assert self.sender is not None
        body, _ = self.sender.command_body("run hello", user=user)
        return Request("command", body.encode(), self.sender.headers(body))

    def requests(self, count: int) -> list[Request]:
        return [self._command("U0ALICE") for _ in range(count)]

    def feedback(self, index: int) -> tuple[str, Request]:
        user = f"U0F{index:07d}"
        return user, self._command(user)

    def handled(self, row: dict[str, Any]) -> str | None:
        # A run's last thread reply (it succeeded) ends the work of its command.
        return "command" if row["method"] == "chat.postMessage" and row["thread"] else None

    def seen(self, row: dict[str, Any]) -> str | None:
        if row["method"] != "chat.postMessage" or row["thread"]:
            return None
        found = MENTION.search(row["text"])
        return found[1] if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, names=["--commands"], count=1000, rounds=5)
    parser.add_argument("--role", choices=["fake-slack", "bare", "naive"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "fake-slack":
        asyncio.run(serve_fake_slack(args.arg[0]))
    elif args.role == "bare":
        asyncio.run(serve_bolt(int(args.arg[0]), args.arg[1], None))
    elif args.role == "naive":
        asyncio.run(serve_bolt(int(args.arg[0]), args.arg[1], args.arg[2]))
    else:
        run_bench(SlackIntake(), args)


if __name__ == "__main__":
    main()

"""Benchmark: `jobbot serve`'s GitHub intake on SQLite and PostgreSQL (answers, overload, feedback).

Answers to signed webhook deliveries against a bare and a naive durable handler, answers under
overload, and how soon a pull request's check run appears after a `/run` comment.

Per database, this process is the clients and drives five others: the fake GitHub REST API
(tests/fakes/github.py, which records when each call arrives; its records are read over HTTP)
and three servers taking POST /github/webhook, each served by aiohttp on 127.0.0.1:

- bare: a handler that verifies X-Hub-Signature-256 and answers 202;
- naive durable: the same, which first INSERTs the delivery (a row with its payload) and
  commits, in a worker thread, through a SQLAlchemy engine on the same kind of database
  (SQLite in WAL mode with synchronous=NORMAL, as jobbot opens it);
- jobbot: `jobbot serve`, driven as a black box (HTTP in, the fake GitHub out), so nothing is
  injected into it: it runs the local executor it has without Kubernetes. The job runs
  `true`, so a `/run` really creates and runs a run and its check run, and the processes
  cost little beside the intake.

On PostgreSQL, jobbot and the naive handler each have a database in one throwaway cluster
(tests/support/postgres.py); on SQLite, each its own file.

Three parts, each printed per database, then a summary:

- Answers: the same deliveries to each server from 50 concurrent connections, in alternating
  rounds (bare, naive, jobbot): half pushes to a feature branch (jobbot reads app.yaml at the
  sha), half `/jobs` comments on 50 pull requests (jobbot reacts, lists the jobs in its PR
  comment, reacts again), each comment new. After each jobbot round the bench waits until the
  fake has seen the last API call of every delivery's work, so the next round has the machine
  to itself. Per server: p50, p99 and max latency (of every request), answers per second,
  errors (anything but a 2xx, or no answer within GitHub's 10 s); jobbot/bare and jobbot/naive
  ratios. Goals: jobbot's p99 under 100 ms, its throughput at least the naive handler's.
- Overload: 1,000 deliveries from 500 concurrent connections to each server, then the wait
  for jobbot's work, which counts the requests it may have taken without answering in time.
  Goal: no errors from jobbot, p99 under 1 s.
- Feedback: 20 `/run check` comments a second for 30 s to jobbot, each on its own pull request
  (its own head sha); the time from sending each to the fake receiving the POST that creates
  the check run for that sha. Goal: p99 under 2 s.

    .venv/bin/python -m bench.github_webhook [--database sqlite|postgres|both]
        [--deliveries 2000] [--clients 50] [--rounds 2] [--overload-clients 500] [--rate 20]
        [--seconds 30] [--keep]

A quick smoke run: `--commands 200 --rounds 1 --seconds 5 --warm-up 50` (`--commands` is
another name for `--deliveries`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

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
    stream_count,
    wait_file,
    wait_healthy,
)
from tests.fakes import github_payloads as payloads
from tests.fakes.github import FakeGitHub, private_key_pem
from tests.support.net import free_port

MODULE = "bench.github_webhook"
REPO = "acme/shop"
PULLS = 50  # the pull requests of the `/jobs` comments: 1 to 50
FIRST_STREAMED_PULL = 1001  # the stream's pull requests, one per `/run`, from this number on
SECRET = "bench-webhook-secret"
APP_SHA = "a" * 40
APP_YAML = json.dumps({"app": "shop", "jobs": [
    {"name": "check", "image": "busybox", "command": ["true"]}]})
# Stand-ins in payload templates, replaced in the JSON text by each delivery's own values.
COMMENT_ID = 777_000_777
PULL_NUMBER = 987_654


def head_sha(number: int) -> str:
    return f"f{number:039d}"


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


# -- the roles run in child processes -----------------------------------------------------


async def serve_fake_github(public_key: str, pulls: str, port_file: str) -> None:
    fake = FakeGitHub(payloads.APP_ID, public_key)
    fake.permissions[(REPO, "alice")] = "write"
    for number in range(1, PULLS + 1):
        fake.add_pull(REPO, number, "b" * 40)
    for number in range(FIRST_STREAMED_PULL, FIRST_STREAMED_PULL + int(pulls)):
        fake.add_pull(REPO, number, head_sha(number))
    fake.add_file(REPO, APP_SHA, "app.yaml", APP_YAML)
    port = free_port()
    fake.url = f"http://127.0.0.1:{port}"
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    def rows(since: int) -> list[dict[str, Any]]:
        return [{"method": c.method, "path": c.path, "at": c.at,
                 **({k: c.body.get(k) for k in ("content", "head_sha", "status")}
                    if isinstance(c.body, dict) else {})} for c in fake.calls[since:]]

    await serve_records(rows, Path(port_file), fake.url)


async def serve_handler(port: int, naive_url: str | None) -> None:
    """Verify the signature and answer 202 (bare), or first commit the delivery (naive)."""
    store = NaiveStore(naive_url) if naive_url else None

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        if not hmac.compare_digest(sign(body), request.headers.get("X-Hub-Signature-256", "")):
            return web.json_response({"error": "bad signature"}, status=401)
        if store is not None:
            await asyncio.to_thread(store.insert, request.headers.get("X-GitHub-Delivery", ""),
                                    body)
        return web.json_response({"status": "accepted"}, status=202)

    app = web.Application()
    app.router.add_post("/github/webhook", webhook)
    await listen(app, port)


# -- the bench ----------------------------------------------------------------------------


class GitHubIntake(Intake):
    what = "signed deliveries"
    streamed = "`/run check` comments, each on its own pull request,"
    seen_what = "the pull request's check run created"
    deadline = 10.0  # GitHub's wait for an answer

    def __init__(self, pulls: int) -> None:
        self.pulls = pulls  # how many the stream comments on
        self.comment_ids = itertools.count(10_000_000)
        self.push = json.dumps(payloads.push(REPO, "feature", APP_SHA)).encode()
        # One checked payload per pull request; each delivery gets its own comment id.
        self.jobs = [json.dumps(payloads.issue_comment(REPO, pr, "/jobs", comment_id=COMMENT_ID))
                     for pr in range(1, PULLS + 1)]
        self.run = json.dumps(payloads.issue_comment(REPO, PULL_NUMBER, "/run check",
                                                     comment_id=COMMENT_ID))
        self.count = 0

    def start(self, work: Path, dbs: Databases) -> Servers:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            private, public = private_key_pem()
            (work / "app.pem").write_text(private)
            (work / "app.pub").write_text(public)
            port_file = work / "fake-github.json"
            procs.append(fake := start_role(MODULE, "fake-github", str(work / "app.pub"),
                                            str(self.pulls), str(port_file)))
            urls = json.loads(wait_file(port_file, fake))
            (work / "app.yaml").write_text(APP_YAML)
            ports = {name: free_port() for name in ("bare", "naive", "jobbot")}
            procs.append(bare := start_role(MODULE, "bare", str(ports["bare"])))
            procs.append(naive := start_role(MODULE, "naive", str(ports["naive"]), dbs.naive))
            log = work / "jobbot.log"
            with log.open("wb") as out:
                procs.append(jobbot := subprocess.Popen(
                    [sys.executable, "-m", "jobbot", "serve"], cwd=work, stdout=out, stderr=out,
                    env=child_env({
                        "JOBBOT_APP_CONFIG": str(work / "app.yaml"),
                        "JOBBOT_DATA_DIR": str(work / ".jobbot"),
                        "JOBBOT_DATABASE_URL": dbs.jobbot,
                        "JOBBOT_PORT": str(ports["jobbot"]), "JOBBOT_SECRET_KEY": "b" * 32,
                        "GITHUB_APP_ID": str(payloads.APP_ID),
                        "GITHUB_PRIVATE_KEY_PATH": str(work / "app.pem"),
                        "GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_API_URL": urls["api"]})))
            by_name = {"bare": bare, "naive": naive, "jobbot": jobbot}
            for name, proc in by_name.items():
                wait_healthy(ports[name], proc)
        except BaseException:
            stop_all(procs)
            raise
        labels = {"bare": "bare: verify the signature, answer",
                  "naive": "naive durable: commit the delivery, answer",
                  "jobbot": "jobbot serve"}
        targets = {name: Target(labels[name], f"http://127.0.0.1:{ports[name]}/github/webhook",
                                proc) for name, proc in by_name.items()}
        return Servers(Records(urls["records"]), targets, procs, log)

    def _comment(self, template: str, pull: int | None = None) -> bytes:
        text = template.replace(str(COMMENT_ID), str(next(self.comment_ids)))
        if pull is not None:
            text = text.replace(str(PULL_NUMBER), str(pull))
        return text.encode()

    def requests(self, count: int) -> list[Request]:
        made = []
        for _ in range(count):
            self.count += 1
            if self.count % 2:
                made.append(delivery("push", "push", self.push))
            else:
                made.append(delivery("comment", "issue_comment",
                                     self._comment(self.jobs[self.count // 2 % PULLS])))
        return made

    def feedback(self, index: int) -> tuple[str, Request]:
        pull = FIRST_STREAMED_PULL + index
        return head_sha(pull), delivery("run", "issue_comment", self._comment(self.run, pull))

    def handled(self, row: dict[str, Any]) -> str | None:
        # A push's work ends with reading app.yaml at its sha (feature is no build branch);
        # a `/jobs` comment's with the reaction that says it is done.
        if row["method"] == "GET" and row["path"].endswith("/contents/app.yaml"):
            return "push"
        if (row["method"] == "POST" and row["path"].endswith("/reactions")
                and row.get("content") in ("rocket", "confused")):
            return "comment"
        return None

    def seen(self, row: dict[str, Any]) -> str | None:
        if row["method"] == "POST" and row["path"].endswith("/check-runs"):
            return str(row.get("head_sha"))
        return None


def delivery(kind: str, event: str, body: bytes) -> Request:
    return Request(kind, body, {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
                                "X-Hub-Signature-256": sign(body),
                                "Content-Type": "application/json"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, names=["--deliveries", "--commands"], count=2000, rounds=2)
    parser.add_argument("--role", choices=["fake-github", "bare", "naive"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "fake-github":
        asyncio.run(serve_fake_github(Path(args.arg[0]).read_text(), args.arg[1], args.arg[2]))
    elif args.role == "bare":
        asyncio.run(serve_handler(int(args.arg[0]), None))
    elif args.role == "naive":
        asyncio.run(serve_handler(int(args.arg[0]), args.arg[1]))
    else:
        run_bench(GitHubIntake(stream_count(args)), args)


if __name__ == "__main__":
    main()

"""The jobbot server the fuzz tests drive: `jobbot serve`'s app (Slack over HTTP, the GitHub
App, pages behind a web token and Sign in with Slack, /metrics behind a token) on 127.0.0.1,
against the fake Slack and GitHub. It runs in a thread of its own, so the tests are plain
Hypothesis tests that send raw HTTP requests; and the checks every case ends with."""

from __future__ import annotations

import asyncio
import http.client
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy
from pydantic import SecretStr

from bot.app import BOT
from core.policy import Actor
from core.store import Store
from github_app.app import GITHUB
from jobbot.settings import Settings
from tests.fakes.github import FakeGitHub
from tests.fakes.slack import BOT_TOKEN, CLIENT_ID, CLIENT_SECRET, SIGNING_SECRET, FakeSlack
from tests.support import github as github_support
from tests.support.apps import python_job, write_app
from tests.support.server import Served, serve
from web.context import WEB

T = TypeVar("T")
WEB_TOKEN = "fuzz-web-token"
METRICS_TOKEN = "fuzz-metrics-token"
REPO = "acme/shop"
PR = 7
HEAD = "1" * 40
JOBS: list[dict[str, Any]] = [
    python_job("hello", "print('hello')", env={"GREETING": "hi"}),
    python_job("broken", "import sys; print('bad'); sys.exit(3)"),
    python_job("check", "print('checked')", pull_requests=True),
    python_job("risky", "print('risky')", confirm=True),
    python_job("guarded", "print('guarded')", allow={"slack_users": ["U0BOSS"]}),
    python_job("sched", "print('tick')", schedule="0 3 * * *"),
]
JOB_NAMES = [str(job["name"]) for job in JOBS]
# Row counts (and job_state's paused flags) that refused input must leave as they are.
TABLES = ("runs", "attempts", "run_events", "audit_log", "slack_work", "slack_messages",
          "slack_confirmations", "deliveries", "github_repositories", "github_approvals",
          "github_repository_apps", "github_branch_heads", "github_pull_request_comments")

SLACK_READS = {"auth.test", "usergroups.users.list", "conversations.list"}


class LoopThread:
    """An event loop running in a daemon thread; `run` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="jobbot-fuzz",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class LogWatch(logging.Handler):
    """Every WARNING or worse that jobbot logs, from any thread; `tracebacks` finds those that
    carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def mark(self) -> int:
        return len(self.records)

    def tracebacks(self, since: int) -> list[str]:
        found = []
        for record in self.records[since:]:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                message = str(record.msg)
            if record.exc_info or "Traceback" in message:
                shown = self.format(record) if record.exc_info else message
                found.append(f"{record.name} {record.levelname}: {shown}")
        return found


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


@dataclass(repr=False)
class Jobbot:
    """The server under fuzz, the fakes it talks to, and what the tests check with."""

    loop: LoopThread
    served: Served
    slack: FakeSlack
    github: FakeGitHub
    logs: LogWatch
    engine: sqlalchemy.Engine
    host: str
    port: int
    # Finished runs seeded before fuzzing: (id, JOB#N label, a valid link token).
    runs: list[tuple[str, str, str]]
    # The fake GitHub's server, stopped with jobbot.
    closers: list[Any]

    def __repr__(self) -> str:
        return f"<jobbot on {self.host}:{self.port}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # Hypothesis shows this in a failing case, not every field

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str | bytes] | None = None, *,
                host: bytes | None = None, timeout: float = 60.0) -> Response:
        """One raw HTTP/1.1 request on a fresh connection; headers go out byte for byte."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=host is not None,
                            skip_accept_encoding=True)
            if host is not None:
                conn.putheader("Host", host)
            for name, value in (headers or {}).items():
                conn.putheader(name, value.encode() if isinstance(value, str) else value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            answer = conn.getresponse()
            try:
                return Response(answer.status, answer.headers, answer.read())
            except http.client.IncompleteRead as exc:
                raise AssertionError(f"{method} {path}: answered {answer.status}, then the "
                                     "answer was cut off") from exc
        finally:
            conn.close()

    def settle(self) -> None:
        """Until recorded requests are handled, the installations synced, runs are over and
        subscribers caught up."""
        self.loop.run(self._settle())

    async def _settle(self, timeout: float = 60.0) -> None:
        app = self.served.app
        store = self.served.runtime.store
        ends = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < ends:
            await app[BOT].backlog.join()
            await app[GITHUB].intake.join()
            # The App's list of installations is synced in the background (at start-up, and
            # when a delivery names a repository it did not know).
            await app[GITHUB].installations.settled()
            if await asyncio.to_thread(self._quiet, store):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("jobbot did not settle within a minute")

    @staticmethod
    def _quiet(store: Store) -> bool:
        """No run is going and the Slack and GitHub subscribers have seen every run event."""
        last = store.last_event_id()
        return not store.unfinished_runs() and all(
            (store.cursor(name) or 0) >= last for name in ("slack", "github"))

    def snapshot(self) -> dict[str, Any]:
        """What refused input must not change: rows, pauses, calls to Slack and GitHub."""
        with self.engine.connect() as conn:
            counts = conn.execute(sqlalchemy.text("SELECT " + ", ".join(
                f"(SELECT count(*) FROM {table})" for table in TABLES))).one()
            seen: dict[str, Any] = dict(zip(TABLES, counts, strict=True))
            seen["paused"] = sorted(conn.execute(sqlalchemy.text(
                "SELECT app, job, paused FROM job_state")).all())
        # Reads (Bolt's auth.test, a user group lookup, a permission check) change nothing.
        seen["slack calls"] = [c.method for c in self.slack.calls if c.method not in SLACK_READS]
        seen["slack responses"] = sum(len(v) for v in self.slack.responses.values())
        seen["github calls"] = [f"{c.method} {c.path}" for c in self.github.calls
                                if c.method != "GET" and not c.path.endswith("/access_tokens")]
        return seen

    def session_cookie(self) -> str:
        """The browsing cookie a visit with ?token=WEB_TOKEN sets."""
        return self.served.app[WEB].access.session_value() or ""

    def user_cookie(self, user: str = "U0ALICE") -> str:
        """A signed-in Slack user's session cookie."""
        access = self.served.app[WEB].access
        return access.users.dumps({"u": user, "tm": "T0FAKE", "n": user}, 3600)


@dataclass
class Checked:
    """What one fuzz case's checks start from."""

    mark: int
    before: dict[str, Any]


def start_case(jobbot: Jobbot) -> Checked:
    """Let earlier cases' work finish, then note the log and the state."""
    jobbot.settle()
    return Checked(jobbot.logs.mark(), jobbot.snapshot())


def check_case(jobbot: Jobbot, case: Checked, status: int, *, refused: bool,
               denied: bool = False) -> None:
    """The properties of every case: no 5xx, no traceback in the log once the work is done,
    and nothing written, sent or run for a refused request; one `denied` by core policy (a
    person who may not) leaves its line in the audit log, and nothing else."""
    jobbot.settle()
    tracebacks = "\n".join(jobbot.logs.tracebacks(case.mark))
    assert status < 500, f"answered {status}\n{tracebacks}"
    assert not tracebacks, tracebacks
    if refused:
        expected = dict(case.before)
        expected["audit_log"] += 1 if denied else 0
        assert jobbot.snapshot() == expected


async def start(tmp_path: Path, loop: LoopThread, watch: LogWatch) -> Jobbot:
    """The fakes, then jobbot on them, with two finished runs (hello#1 and broken#1)."""
    slack = FakeSlack()
    await slack.start()
    github, github_server = await github_support.start_fake()
    github.permissions.update({(REPO, "alice"): "write", (REPO, "root"): "admin",
                               (REPO, "reader"): "read"})
    github.add_pull(REPO, PR, HEAD)
    workdir = tmp_path / "work"
    config = write_app(workdir, JOBS, app="shop")
    settings = Settings(
        JOBBOT_DATA_DIR=workdir / ".jobbot", JOBBOT_RETRY_DELAY=0.01,
        JOBBOT_PUBLIC_URL="http://jobbot.test", JOBBOT_SECRET_KEY=SecretStr("k" * 32),
        JOBBOT_WEB_TOKEN=SecretStr(WEB_TOKEN), JOBBOT_METRICS_TOKEN=SecretStr(METRICS_TOKEN),
        SLACK_BOT_TOKEN=SecretStr(BOT_TOKEN), SLACK_SIGNING_SECRET=SecretStr(SIGNING_SECRET),
        SLACK_API_URL=slack.api_url, SLACK_CLIENT_ID=CLIENT_ID,
        SLACK_CLIENT_SECRET=SecretStr(CLIENT_SECRET),
        GITHUB_APP_ID="4242", GITHUB_PRIVATE_KEY=SecretStr(github_support.private_key()),
        GITHUB_WEBHOOK_SECRET=SecretStr(github_support.SECRET.decode()),
        GITHUB_API_URL=github.url)
    served = await serve(settings, config)
    service = served.runtime.service
    runs = []
    for job in ("hello", "broken"):
        result = await service.trigger(job, Actor.cli("fuzz"))
        run = await asyncio.wait_for(service.wait(result.run.id, poll=0.05), 30)
        runs.append((run.id, f"{run.job}#{run.number}", served.runtime.links.token(run.id)))
    host, port = served.base_url.removeprefix("http://").split(":")
    engine = sqlalchemy.create_engine(served.runtime.settings.database_url)
    return Jobbot(loop, served, slack, github, watch, engine, host, int(port), runs,
                  [github_server])


async def stop(jobbot: Jobbot) -> None:
    await jobbot.served.stop()
    for closer in jobbot.closers:
        await closer.close()
    await jobbot.slack.stop()

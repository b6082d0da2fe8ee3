"""The intake benchmarks' shared parts: servers in child processes, their databases, the naive
durable store, rounds and streams of signed requests, the fakes' records and the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import sqlalchemy
from aiohttp import web

from tests.support.net import free_port
from tests.support.postgres import Cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
DATABASES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
# Goals (issue 25): answers at 50 clients, overload at 500, feedback under a steady stream.
ANSWER_P99_GOAL = 0.100
OVERLOAD_P99_GOAL = 1.0
FEEDBACK_P99_GOAL = 2.0


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the server in `proc` answers GET /healthz; an exit or a timeout raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1),
        ):
            return
        time.sleep(0.1)
    raise RuntimeError("server did not come up")


T = TypeVar("T")


def run_round(round_: Coroutine[Any, Any, T]) -> T:
    """asyncio.run for a measured round. This process is the client that takes the times: a
    pass of its own garbage collector inside a round (up to 70 ms seen here) would count as the
    server's latency, so it collects before and pauses the collector meanwhile."""
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(round_)
    finally:
        gc.enable()


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system, every thread) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_all(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every one still running, then wait; one that takes over a minute is killed."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def raise_open_files(needed: int) -> None:
    """Lift this process's open-files limit to `needed` (within the hard limit): 500
    concurrent clients hold 500 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# -- child processes ------------------------------------------------------------------------


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with this checkout first on the path (the code under test)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{path}" if path
            else str(REPO_ROOT), **(extra or {})}


def start_role(module: str, role: str, *args: str) -> subprocess.Popen[bytes]:
    """`python -m module --role role --arg ...`: one of the bench's own servers."""
    command = [sys.executable, "-m", module, "--role", role]
    for arg in args:
        command += ["--arg", arg]
    return subprocess.Popen(command, env=child_env(), cwd=REPO_ROOT)


def wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """The text a child writes into `path` once it is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"child exited with {proc.returncode}")
        if path.exists() and (text := path.read_text()):
            return text
        time.sleep(0.05)
    raise RuntimeError(f"child did not write {path}")


async def listen(app: web.Application, port: int) -> None:
    """Serve `app` on 127.0.0.1:port (aiohttp's defaults, no access log) until killed."""
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- databases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Databases:
    """The databases of one section: jobbot's (JOBBOT_DATABASE_URL) and the naive handler's."""

    kind: str
    jobbot: str
    naive: str

    @property
    def label(self) -> str:
        return DATABASES[self.kind]


def database_kinds(choice: str) -> list[str]:
    return list(DATABASES) if choice == "both" else [choice]


@contextlib.contextmanager
def databases(kind: str, work: Path) -> Iterator[Databases]:
    """SQLite files in `work`, or two databases in a throwaway PostgreSQL cluster."""
    if kind == "sqlite":
        yield Databases(kind, f"sqlite:///{work / 'jobbot.db'}", f"sqlite:///{work / 'naive.db'}")
        return
    cluster = Cluster()
    try:
        admin = cluster.start()
        yield Databases(kind, create_database(admin, "jobbot"), create_database(admin, "naive"))
    finally:
        cluster.stop()


def with_driver(url: str) -> str:
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def create_database(admin_url: str, name: str) -> str:
    engine = sqlalchemy.create_engine(with_driver(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        url = engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        engine.dispose()
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


REQUESTS = sqlalchemy.Table(
    "requests", sqlalchemy.MetaData(),
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True, autoincrement=True),
    sqlalchemy.Column("key", sqlalchemy.String(200), nullable=False),
    sqlalchemy.Column("received_at", sqlalchemy.DateTime(timezone=True), nullable=False),
    sqlalchemy.Column("body", sqlalchemy.LargeBinary, nullable=False),
)


class NaiveStore:
    """The naive durable handler's database: one INSERT of the request and one COMMIT each,
    through a SQLAlchemy engine with its default pool, no batching. SQLite is opened with the
    durability jobbot gives it (WAL, synchronous=NORMAL, a busy timeout), so the two differ in
    how they write, not in what a commit promises."""

    def __init__(self, url: str) -> None:
        self.engine = sqlalchemy.create_engine(with_driver(url))
        if self.engine.dialect.name == "sqlite":
            sqlalchemy.event.listen(self.engine, "connect", _sqlite_pragmas)
        REQUESTS.metadata.create_all(self.engine)

    def insert(self, key: str, body: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(REQUESTS.insert().values(key=key, received_at=datetime.now(UTC),
                                                  body=body))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# -- the fakes' records -----------------------------------------------------------------------


async def serve_records(rows: Callable[[int], list[dict[str, Any]]], port_file: Path,
                        api_url: str) -> None:
    """Beside a fake in its process: GET /calls?since=N returns the calls it received from the
    Nth on (as `rows` summarises them, each with its arrival time `at`). Writes the fake's
    URL and this one into `port_file`, as JSON."""
    async def calls(request: web.Request) -> web.Response:
        return web.json_response(rows(int(request.query.get("since", "0"))))

    app = web.Application()
    app.router.add_get("/calls", calls)
    port = free_port()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.to_thread(port_file.write_text, json.dumps(
        {"api": api_url, "records": f"http://127.0.0.1:{port}/calls"}))
    await asyncio.Event().wait()


class Records:
    """What a fake (in its child process) has received so far, fetched as it grows."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rows: list[dict[str, Any]] = []

    def refresh(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}?since={len(self.rows)}", timeout=30) as r:
            self.rows += json.loads(r.read())
        return self.rows


# -- requests, rounds and streams -------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One signed request; `kind` says which work it asks for (what marks it handled)."""

    kind: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Sample:
    """The answers of one round against one server."""

    latencies: list[float] = field(default_factory=list)  # every request, answered or failed
    errors: Counter[str] = field(default_factory=Counter)  # what failed, by kind
    answered: Counter[str] = field(default_factory=Counter)  # 2xx answers, by request kind
    # No answer (a timeout, a broken connection): the server may have taken these, by kind.
    unanswered: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0


async def _send(session: aiohttp.ClientSession, url: str, request: Request,
                sample: Sample) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=request.body, headers=request.headers) as response:
            await response.read()
            if response.status < 300:
                sample.answered[request.kind] += 1
            else:
                sample.errors[f"HTTP {response.status}"] += 1
    except TimeoutError:
        sample.errors["no answer in time"] += 1
        sample.unanswered[request.kind] += 1
    except aiohttp.ClientError as exc:
        sample.errors[type(exc).__name__] += 1
        sample.unanswered[request.kind] += 1
    sample.latencies.append(time.perf_counter() - started)


def _session(clients: int, deadline: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients),
                                 timeout=aiohttp.ClientTimeout(total=deadline))


async def burst(url: str, requests: Sequence[Request], clients: int, deadline: float) -> Sample:
    """`clients` concurrent connections send `requests` as fast as they are answered; a
    request not answered within `deadline` (Slack's or GitHub's wait) is an error."""
    sample = Sample()
    queue = list(reversed(requests))
    async with _session(clients, deadline) as session:

        async def client() -> None:
            while queue:
                await _send(session, url, queue.pop(), sample)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        sample.elapsed = time.perf_counter() - started
    return sample


async def stream(url: str, make: Callable[[int], tuple[str, Request]], count: int,
                 rate: float, deadline: float) -> tuple[dict[str, float], Sample]:
    """`count` requests at `rate` a second, each sent on time whatever the answers before it
    (a request is made by `make` just before it is sent); returns when each was sent
    (time.time(), by the key `make` gave it) and the answers."""
    sample = Sample()
    sent: dict[str, float] = {}
    tasks: list[asyncio.Task[None]] = []
    async with _session(0, deadline) as session:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index in range(count):
            await asyncio.sleep(max(0.0, started + index / rate - loop.time()))
            key, request = make(index)
            sent[key] = time.time()
            tasks.append(asyncio.create_task(_send(session, url, request, sample)))
        await asyncio.gather(*tasks)
        sample.elapsed = loop.time() - started
    return sent, sample


# -- figures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Latency percentiles (seconds), answers per second and errors of some rounds."""

    count: int
    p50: float
    p99: float
    max: float
    rate: float
    errors: Counter[str]

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Figures:
        latencies = [t for s in samples for t in s.latencies]
        answered = sum(sum(s.answered.values()) for s in samples)
        elapsed = sum(s.elapsed for s in samples)
        errors: Counter[str] = Counter()
        for sample in samples:
            errors += sample.errors
        return cls(len(latencies), statistics.median(latencies), percentile(latencies, 0.99),
                   max(latencies), answered / elapsed if elapsed else 0.0, errors)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def row(self, name: str) -> str:
        return (f"  {name:<44} {ms(self.p50):>8} {ms(self.p99):>8} {ms(self.max):>8} "
                f"{self.rate:>8.0f} {self.error_count:>7}" + self.error_kinds())

    def error_kinds(self) -> str:
        if not self.errors:
            return ""
        return "  (" + ", ".join(f"{n} {k}" for k, n in self.errors.most_common()) + ")"


TABLE_HEAD = (f"  {'server':<44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'answ/s':>8} "
              f"{'errors':>7}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def took(seconds: float) -> str:
    """A duration in ms, or "never" for what did not happen."""
    return "never" if math.isinf(seconds) else f"{seconds * 1000:.1f} ms"


def met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


# -- the bench ------------------------------------------------------------------------------


@dataclass
class Target:
    """A server under test: its line in the tables, where to send, its process."""

    label: str
    url: str
    proc: subprocess.Popen[bytes]


@dataclass
class Servers:
    """One section's processes: the fake API (with its records), bare, naive and jobbot."""

    records: Records
    targets: dict[str, Target]  # "bare", "naive", "jobbot"
    procs: list[subprocess.Popen[bytes]]
    jobbot_log: Path


class Intake(ABC):
    """One front end's bench: its servers, its requests, and what in the fake's records says
    a request was handled (drained) or first seen by a person (feedback)."""

    what: str  # e.g. "signed `/job run` commands"
    streamed: str  # what the feedback stream sends, e.g. "`/run check` comments"
    seen_what: str  # e.g. "the run's Slack thread posted"
    deadline: float  # seconds the platform waits for an answer

    @abstractmethod
    def start(self, work: Path, dbs: Databases) -> Servers: ...

    @abstractmethod
    def requests(self, count: int) -> list[Request]:
        """The requests of a round (the same kinds for every server)."""

    @abstractmethod
    def feedback(self, index: int) -> tuple[str, Request]:
        """The `index`th request of the steady stream, and the key `seen` finds it by."""

    @abstractmethod
    def handled(self, row: dict[str, Any]) -> str | None:
        """The kind of request whose work this record of the fake ends, if any."""

    @abstractmethod
    def seen(self, row: dict[str, Any]) -> str | None:
        """The key of the stream's request that this record shows to a person, if any."""


def add_arguments(parser: argparse.ArgumentParser, *, names: Sequence[str], count: int,
                  rounds: int) -> None:
    """The options both benches take; `names` are those of the request count."""
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(*names, dest="count", type=int, default=count,
                        help="requests per server in the answer rounds, in all")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--warm-up", type=int, default=200,
                        help="unmeasured requests to each server first")
    parser.add_argument("--overload-clients", type=int, default=500,
                        help="concurrent clients of the overload round (twice as many requests)")
    parser.add_argument("--rate", type=float, default=20, help="feedback: requests a second")
    parser.add_argument("--seconds", type=float, default=30, help="feedback: for how long")
    parser.add_argument("--grace", type=float, default=60,
                        help="feedback: how long after the last request to wait for the rest")
    parser.add_argument("--drain-timeout", type=float, default=600,
                        help="how long to wait for jobbot to finish a round's work")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (jobbot's logs and SQLite files)")


def run_bench(intake: Intake, args: argparse.Namespace) -> None:
    """Run the bench in a fresh working directory, removed afterwards unless --keep."""
    work = Path(tempfile.mkdtemp(prefix="jobbot-bench-"))
    try:
        IntakeBench(intake, args).run(work)
    finally:
        if args.keep:
            print(f"working directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def stream_count(args: argparse.Namespace) -> int:
    """How many requests the feedback stream sends."""
    return max(1, round(float(args.rate) * float(args.seconds)))


@dataclass
class Section:
    """The figures of one database, for the summary at the end."""

    label: str
    answers: dict[str, Figures]
    overload: dict[str, Figures]
    lags: list[float]
    never: int


class IntakeBench:
    """Answers, overload and feedback against one Intake, per database."""

    def __init__(self, intake: Intake, args: argparse.Namespace) -> None:
        self.intake = intake
        self.args = args
        # Per section: jobbot's 2xx answers and its requests without an answer, by kind (what
        # its work must catch up with), and the requests whose work the fake saw end.
        self.jobbot_answered: Counter[str] = Counter()
        self.jobbot_unanswered: Counter[str] = Counter()
        self.done: Counter[str] = Counter()
        self.counted = 0  # records of the fake counted into `done`

    def run(self, work: Path) -> None:
        raise_open_files(self.args.overload_clients * 2 + 1024)
        sections = []
        for kind in database_kinds(self.args.database):
            section_dir = work / kind
            section_dir.mkdir()
            with databases(kind, section_dir) as dbs:
                sections.append(self.section(section_dir, dbs))
        summary(sections)

    def section(self, work: Path, dbs: Databases) -> Section:
        args = self.args
        servers = self.intake.start(work, dbs)
        self.jobbot_answered, self.jobbot_unanswered = Counter(), Counter()
        self.done, self.counted = Counter(), 0
        try:
            targets = servers.targets
            for name in targets:  # unmeasured: connections, pools, first-use imports
                self.measure(servers, name, self.intake.requests(args.warm_up), args.clients)
            round_sizes = [args.count // args.rounds + (1 if i < args.count % args.rounds else 0)
                           for i in range(args.rounds)]
            answers: dict[str, list[Sample]] = {name: [] for name in targets}
            drains: list[float] = []
            for size in round_sizes:
                for name in targets:
                    answers[name].append(self.measure(servers, name, self.intake.requests(size),
                                                      args.clients, drains))
            overload: dict[str, Figures] = {}
            overload_drain: list[float] = []
            for name in targets:
                overload[name] = Figures.of([self.measure(
                    servers, name, self.intake.requests(args.overload_clients * 2),
                    args.overload_clients, overload_drain)])
            lags, never, stream_answers = self.feedback(servers)
        except BaseException:
            print(f"jobbot's log ({servers.jobbot_log}), last lines:\n"
                  f"{log_tail(servers.jobbot_log)}", file=sys.stderr)
            raise
        finally:
            for proc in reversed(servers.procs):  # jobbot first, while its fake still answers
                stop_all([proc])
        figures = {name: Figures.of(samples) for name, samples in answers.items()}
        self.report(dbs, targets, figures, answers, drains, overload, overload_drain,
                    stream_answers, lags, never)
        return Section(dbs.label, figures, overload, lags, never)

    def measure(self, servers: Servers, name: str, requests: list[Request], clients: int,
                drains: list[float] | None = None) -> Sample:
        """One burst against one server; after jobbot's, wait until its work is done so the
        next server's round does not share the machine with it."""
        target = servers.targets[name]
        if target.proc.poll() is not None:
            raise RuntimeError(f"{target.label} exited with {target.proc.returncode}")
        sample = run_round(burst(target.url, requests, clients, self.intake.deadline))
        if name == "jobbot":
            self.jobbot_answered += sample.answered
            self.jobbot_unanswered += sample.unanswered
            took = self.drain(servers)
            if drains is not None:
                drains.append(took)
        return sample

    def drain(self, servers: Servers, quiet: float = 2.0) -> float:
        """Seconds from the end of a jobbot round to the last call its work made to the fake:
        waits until the fake has seen the end of the work of every request jobbot answered,
        and of every one it may have taken without answering (or, for those, until the fake
        has heard nothing for `quiet` seconds)."""
        started = changed = time.monotonic()
        deadline = started + self.args.drain_timeout
        answered, maybe = self.jobbot_answered, self.jobbot_answered + self.jobbot_unanswered
        count = -1
        while True:
            rows = servers.records.refresh()
            now = time.monotonic()
            if len(rows) != count:
                count, changed = len(rows), now
            self.done.update(kind for row in rows[self.counted:]
                             if (kind := self.intake.handled(row)))
            self.counted = len(rows)
            if all(self.done[k] >= n for k, n in answered.items()):
                everything = all(self.done[k] >= n for k, n in maybe.items())
                if now - changed >= (0.5 if everything else quiet):
                    return changed - started
            if servers.targets["jobbot"].proc.poll() is not None:
                raise RuntimeError("jobbot exited")
            if now > deadline:
                missing = {k: n - self.done[k] for k, n in answered.items() if self.done[k] < n}
                print(f"warning: jobbot had not finished its work {self.args.drain_timeout:.0f} s"
                      f" after the round (missing: {missing})", file=sys.stderr)
                return now - started
            time.sleep(0.1)

    def feedback(self, servers: Servers) -> tuple[list[float], int, Sample]:
        """The steady stream to jobbot; each request's time from sent to first seen (inf:
        not seen within the grace period after the last), how many never were, the answers."""
        args = self.args
        count = stream_count(args)
        sent, sample = run_round(stream(servers.targets["jobbot"].url, self.intake.feedback,
                                        count, args.rate, self.intake.deadline))
        first: dict[str, float] = {}
        until = time.monotonic() + args.grace
        scanned = 0
        while len(first) < len(sent) and time.monotonic() < until:
            time.sleep(0.5)
            rows = servers.records.refresh()
            for row in rows[scanned:]:
                key = self.intake.seen(row)
                if key in sent and key not in first:
                    first[key] = float(row["at"])
            scanned = len(rows)
        lags = [first[k] - at if k in first else math.inf for k, at in sent.items()]
        return lags, len(sent) - len(first), sample

    def report(self, dbs: Databases, targets: dict[str, Target], figures: dict[str, Figures],
               answers: dict[str, list[Sample]], drains: list[float],
               overload: dict[str, Figures], overload_drain: list[float],
               stream_answers: Sample, lags: list[float], never: int) -> None:
        args = self.args
        bare, naive, jobbot = figures["bare"], figures["naive"], figures["jobbot"]
        print(f"\n== {dbs.label}: {os.cpu_count()} CPUs, load average {load_average()} ==")
        print(f"Answers: {args.count} {self.intake.what} per server, {args.clients} concurrent "
              f"clients, {args.rounds} alternating rounds")
        print(TABLE_HEAD)
        for name, target in targets.items():
            print(figures[name].row(target.label))
        for name, samples in answers.items():
            print(f"  p99 of each round, {name + ':':<7} " + "  ".join(
                ms(percentile(s.latencies, 0.99)) for s in samples) + " ms")
        print(f"  jobbot/bare:  p99 {ratio(jobbot.p99, bare.p99)}   "
              f"throughput {ratio(jobbot.rate, bare.rate)}")
        print(f"  jobbot/naive: p99 {ratio(jobbot.p99, naive.p99)}   "
              f"throughput {ratio(jobbot.rate, naive.rate)}")
        print(f"  goal: jobbot p99 < {ANSWER_P99_GOAL * 1000:.0f} ms: "
              f"{met(jobbot.p99 < ANSWER_P99_GOAL)} ({took(jobbot.p99)});  jobbot throughput "
              f">= naive's: {met(jobbot.rate >= naive.rate)} ({ratio(jobbot.rate, naive.rate)})")
        print("  jobbot's work for each round was done "
              + ", ".join(f"{d:.1f}" for d in drains) + " s after the round")
        print(f"Overload: {args.overload_clients * 2} {self.intake.what} per server, "
              f"{args.overload_clients} concurrent clients")
        print(TABLE_HEAD)
        for name, target in targets.items():
            print(overload[name].row(target.label))
        loaded = overload["jobbot"]
        print(f"  goal: jobbot no errors and p99 < {OVERLOAD_P99_GOAL:.0f} s: "
              f"{met(loaded.error_count == 0 and loaded.p99 < OVERLOAD_P99_GOAL)}")
        print(f"  jobbot's work for it was done {overload_drain[0]:.1f} s after the round")
        print(f"Feedback: {len(lags)} {self.intake.streamed} to jobbot, {args.rate:g} a second for "
              f"{len(lags) / args.rate:g} s; time from each sent to {self.intake.seen_what}")
        answered = Figures.of([stream_answers])
        print(f"  {'answers':<12} p50 {took(answered.p50):>10}   p99 {took(answered.p99):>10}"
              f"   max {took(answered.max):>10}   errors {answered.error_count}"
              + answered.error_kinds())
        p99 = percentile(lags, 0.99)
        print(f"  {'first seen':<12} p50 {took(statistics.median(lags)):>10}   "
              f"p99 {took(p99):>10}   max {took(max(lags)):>10}   never appeared: {never} of "
              f"{len(lags)} (waited {args.grace:g} s after the last)")
        print(f"  goal: p99 < {FEEDBACK_P99_GOAL:.0f} s: {met(p99 < FEEDBACK_P99_GOAL)}")
        sys.stdout.flush()


def summary(sections: list[Section]) -> None:
    if not sections:
        return
    print("\n== Summary (jobbot serve) ==")
    print(f"  {'':<44}" + "".join(f"{s.label:>16}" for s in sections))
    lines: list[tuple[str, Callable[[Section], str]]] = [
        ("answers p99 (goal < 100 ms)", lambda s: took(s.answers["jobbot"].p99)),
        ("answers p99, jobbot/bare", lambda s: ratio(s.answers["jobbot"].p99,
                                                     s.answers["bare"].p99)),
        ("answers p99, jobbot/naive", lambda s: ratio(s.answers["jobbot"].p99,
                                                      s.answers["naive"].p99)),
        ("throughput, jobbot/bare", lambda s: ratio(s.answers["jobbot"].rate,
                                                    s.answers["bare"].rate)),
        ("throughput, jobbot/naive (goal >= 1)", lambda s: ratio(s.answers["jobbot"].rate,
                                                                 s.answers["naive"].rate)),
        ("answer errors", lambda s: str(s.answers["jobbot"].error_count)),
        ("overload errors (goal 0)", lambda s: str(s.overload["jobbot"].error_count)),
        ("overload p99 (goal < 1 s)", lambda s: took(s.overload["jobbot"].p99)),
        ("feedback p99 (goal < 2 s)", lambda s: took(percentile(s.lags, 0.99))),
        ("feedback never appeared", lambda s: f"{s.never} of {len(s.lags)}"),
    ]
    for name, value in lines:
        print(f"  {name:<44}" + "".join(f"{value(s):>16}" for s in sections))

"""Benchmark: the cron scheduler with 10,000 jobs on virtual time, against APScheduler 3.x.

Two scenarios, each for jobbot's scheduler (without a database, on SQLite, on PostgreSQL)
and for APScheduler 3.x (memory job store, the same 10,000 CronTriggers, `H` expanded to the
values croniter hashes them to) measured in the same run, then jobbot's history pruning:

- a simulated day of a mix (every-minute, hourly, daily and `H` schedules in five time
  zones): CPU seconds of this process per simulated hour; PostgreSQL's own CPU is printed
  apart (read from /proc when the bench starts its own server);
- 10,000 slots due in the same minute: slots recorded per second, and the delay from a slot's
  time to its run being recorded (p50, p99). Goal: all within 5 s;
- history pruning at steady state (10,000 jobs with 40 finished runs each, as many as
  kept), which the day never reaches: CPU seconds of a prune that reads every job, and of
  one that reads the tenth of them with a run finished since the last prune (and deletes
  each one's oldest).

The executor only records launches (as bench/trigger.py does): the figures are the
scheduler's and the store's own cost.

    .venv/bin/python -m bench.scheduler [--jobs 10000] [--hours 24] [--rounds 3]
        [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy
from croniter import croniter

from bench.trigger import RecordingExecutor, percentile
from core.catalog import Catalog
from core.cron import expand
from core.executors.base import Launch
from core.logs import FileLogs
from core.models import JobState, Run, RunState
from core.run_ids import new_run_id
from core.scheduler import Scheduler
from core.service import JobService
from core.spec import AppSpec, load_app
from core.store import Created, NewRun, Store
from tests.support.clock import VirtualClock
from tests.support.postgres import Cluster

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Asia/Kolkata"]
# A day without a daylight-saving change anywhere in ZONES.
DAY = datetime(2026, 11, 20, tzinfo=UTC)


def mix(index: int) -> tuple[str, str]:
    """The schedule and zone of job `index`: 1% every minute, 39% hourly, 30% daily,
    15% `H * * * *`, 15% `H H * * *`."""
    share = index % 100
    zone = ZONES[index % len(ZONES)]
    if share < 1:
        return "* * * * *", zone
    if share < 40:
        return "0 * * * *", zone
    if share < 70:
        return "0 0 * * *", zone
    if share < 85:
        return "H * * * *", zone
    return "H H * * *", zone


def burst(index: int) -> tuple[str, str]:
    """Every job at the top of the hour, in zones whose offset is whole hours."""
    return "0 * * * *", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"][index % 4]


def write_jobs(directory: Path, n: int, shape: Any) -> AppSpec:
    jobs = []
    for i in range(n):
        expression, zone = shape(i)
        jobs.append({"name": f"job-{i}", "image": "busybox", "command": ["true"],
                     "schedule": expression, "timezone": zone,
                     # No history pruning in the measured window: runs never finish here.
                     "history": {"succeeded": 20, "failed": 20}})
    path = directory / "app.yaml"
    path.write_text(json.dumps({"app": "bench", "jobs": jobs}))
    return load_app(path)


class TimedExecutor(RecordingExecutor):
    """Records when each run was handed over (after its row was committed)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def launch(self, launch: Launch) -> None:
        self.times.append(time.perf_counter())
        self.launched += 1


class MemoryStore(Store):
    """The scheduler's store calls answered in memory: its planning cost alone."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"sqlite:///{path}")  # never written to
        self.recorded = 0

    def create_runs(self, news: Sequence[NewRun], audit: bool = True,
                    schedule_states: Sequence[tuple[str, str, str, datetime]] = ()
                    ) -> list[Created]:
        self.recorded += len(news)
        return [Created(Run.model_construct(id=new_run_id(), app=n.app, job=n.job, number=1,
                            state=n.state.value, source=n.source, actor=n.actor,
                            scheduled_for=n.scheduled_for, idempotency_key=n.idempotency_key,
                            created_at=n.scheduled_for or DAY, origin={}, overrides={}),
                        True, []) for n in news]

    def schedule_states(self) -> dict[tuple[str, str], JobState]:
        return {}

    def save_schedule_states(self, states: Sequence[tuple[str, str, str, datetime]]) -> None:
        pass

    def paused_jobs(self) -> dict[tuple[str, str], str | None]:
        return {}

    def prune_history(self, limits: dict[tuple[str, str], tuple[int, int, int]],
                      touched_after: int | None = None) -> list[str]:
        return []

    def history_mark(self) -> int:
        return 0


class VirtualJobbot:
    """jobbot's scheduler on virtual time from `since`, moved forward a slice at a time."""

    def __init__(self, app: AppSpec, store: Store, logs: Path,
                 since: datetime = DAY - timedelta(seconds=1)) -> None:
        self.executor = TimedExecutor()
        service = JobService(Catalog([app]), store, self.executor, FileLogs(logs))
        self.clock = VirtualClock(since)
        self.scheduler = Scheduler(service, self.clock)
        self.store = store

    async def start(self) -> None:
        await self.scheduler.tick()  # first sight of 10,000 schedules: not the steady state
        # Statistics of the 10,000 new job_state rows; without them, the query for paused
        # jobs that every round makes reads the whole table (0.7 ms) instead of its index.
        analyze(self.store)

    async def advance(self, end: datetime) -> float:
        """Tick exactly when slots fall due, up to `end`; returns the CPU seconds used."""
        cpu = time.process_time()
        while (due := self.scheduler.next_due()) is not None and due < end:
            self.clock.set(due)
            await self.scheduler.tick()
        return time.process_time() - cpu

    @property
    def fired(self) -> int:
        return self.executor.launched


async def jobbot_burst(app: AppSpec, store: Store, logs: Path) -> tuple[float, list[float]]:
    """Seconds to record 10,000 slots due at once, and each one's delay after its time."""
    jobbot = VirtualJobbot(app, store, logs, since=DAY + timedelta(minutes=30))
    await jobbot.start()
    jobbot.clock.set(DAY + timedelta(hours=1))  # the slot's time: the tick starts on it
    start = time.perf_counter()
    await jobbot.scheduler.tick()
    elapsed = time.perf_counter() - start
    return elapsed, [t - start for t in jobbot.executor.times]


def analyze(store: Store) -> None:
    """On PostgreSQL, gather the planner's statistics now, as autovacuum does within a minute
    of rows coming in (SQLite plans without them)."""
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:
            conn.execute(sqlalchemy.text("ANALYZE"))


def pruning(store: Store, n: int, per_job: int, server: ServerCpu | None
            ) -> tuple[tuple[float, float], tuple[float, float]]:
    """History pruning at steady state: `per_job` finished runs of each of `n` jobs, as many
    as kept. CPU seconds (this process, the PostgreSQL server) of a prune that looks at every
    job (the scheduler's first; nothing to delete), and of one after a tenth of the jobs
    finished a run (as in ten minutes of the day's mix: the prunes that follow), which
    deletes the oldest run of each of them."""
    def slots(jobs: range, minutes: range) -> list[NewRun]:
        return [NewRun(app="bench", job=f"job-{i}", source="schedule", actor="schedule",
                       scheduled_for=DAY + timedelta(minutes=m),
                       idempotency_key=f"prune:{i}:{m}") for m in minutes for i in jobs]

    for start in range(0, per_job, 10):
        store.create_runs(slots(range(n), range(start, min(start + 10, per_job))), audit=False)
    with store.engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE runs SET state = 'succeeded'"))
    analyze(store)
    limits = {("bench", f"job-{i}"): (per_job,) * 3 for i in range(n)}

    def cpu(touched_after: int | None, deletes: int) -> tuple[float, float]:
        own, served = time.process_time(), server.seconds() if server else 0.0
        assert len(store.prune_history(limits, touched_after)) == deletes
        return time.process_time() - own, (server.seconds() - served if server else 0.0)

    every = cpu(None, 0)
    mark = store.history_mark()
    finished = range(0, n, 10)
    for created in store.create_runs(slots(finished, range(per_job, per_job + 1)),
                                     audit=False):
        store.transition(created.run.id, RunState.SUCCEEDED)
    return every, cpu(mark, len(finished))


# -- APScheduler 3.x on the same virtual time ---------------------------------------------


class _Virtual:
    now = DAY


def _virtual_datetime() -> type[datetime]:
    class VirtualDateTime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return _Virtual.now.astimezone(tz) if tz else _Virtual.now.replace(tzinfo=None)

    return VirtualDateTime


def concrete(expression: str, job_name: str) -> str:
    """The expression croniter computes for the job, `H` replaced by its hashed values."""
    text = expand(expression)
    if "H" not in text:
        return text
    fields = croniter(text, DAY.replace(tzinfo=None), hash_id=job_name.encode()).expanded
    return " ".join(",".join(str(v) for v in f) for f in fields)


@contextlib.contextmanager
def apscheduler_on_virtual_time() -> Iterator[Any]:
    import apscheduler.schedulers.base as base
    from apscheduler.executors.base import BaseExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.base import BaseScheduler

    class Recording(BaseExecutor):  # type: ignore[misc]
        """Counts submissions and records when each was handed over; runs nothing."""

        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
            self.times.append(time.perf_counter())
            self._run_job_success(job.id, [])

    class VirtualScheduler(BaseScheduler):  # type: ignore[misc]
        def shutdown(self, wait: bool = True) -> None:
            super().shutdown(wait)

        def wakeup(self) -> None:
            pass

        def _create_default_executor(self) -> Any:
            return Recording()

    real = base.datetime
    base.datetime = _virtual_datetime()
    try:
        scheduler = VirtualScheduler(jobstores={"default": MemoryJobStore()}, timezone=UTC)
        yield scheduler
    finally:
        base.datetime = real


def _noop() -> None:
    pass


def apscheduler_jobs(scheduler: Any, app: AppSpec) -> None:
    from apscheduler.triggers.cron import CronTrigger

    for job in app.jobs:
        trigger = CronTrigger.from_crontab(concrete(job.schedule[0], job.name),
                                           timezone=ZoneInfo(job.timezone))
        scheduler.add_job(_noop, trigger, id=job.name, coalesce=True, misfire_grace_time=None,
                          max_instances=1000)


class VirtualApscheduler:
    """APScheduler 3.x on the same virtual time, moved forward the same way (one instance at
    a time: the virtual clock is the module's)."""

    def __init__(self, app: AppSpec, since: datetime = DAY - timedelta(seconds=1)) -> None:
        self._stack = contextlib.ExitStack()
        self.scheduler = self._stack.enter_context(apscheduler_on_virtual_time())
        _Virtual.now = since
        apscheduler_jobs(self.scheduler, app)
        self.scheduler.start()
        self.executor = self.scheduler._lookup_executor("default")

    def advance(self, end: datetime) -> float:
        cpu = time.process_time()
        while _Virtual.now < end:
            wait = self.scheduler._process_jobs()
            if wait is None:
                break
            _Virtual.now = min(_Virtual.now + timedelta(seconds=wait), end)
        return time.process_time() - cpu

    @property
    def fired(self) -> int:
        return len(self.executor.times)

    def close(self) -> None:
        self.scheduler.shutdown(wait=False)
        self._stack.close()


def apscheduler_burst(app: AppSpec) -> tuple[float, list[float]]:
    baseline = VirtualApscheduler(app, since=DAY + timedelta(minutes=30))
    try:
        _Virtual.now = DAY + timedelta(hours=1)
        start = time.perf_counter()
        baseline.scheduler._process_jobs()
        elapsed = time.perf_counter() - start
        return elapsed, [t - start for t in baseline.executor.times]
    finally:
        baseline.close()


async def interleaved_day(app: AppSpec, stores: dict[str, Store], hours: int, logs: Path,
                          server: ServerCpu | None
                          ) -> tuple[dict[str, float], float, dict[str, int]]:
    """APScheduler and jobbot on each store through the same simulated day, one simulated
    hour each in turn, so that all of them meet the same machine: this machine's speed
    drifts by tens of percent over minutes, which a whole day of one then the other turned
    into ratios that changed from run to run. Returns CPU seconds per contender, the
    PostgreSQL server's CPU seconds, and the slots each one fired."""
    days = {label: VirtualJobbot(app, store, logs) for label, store in stores.items()}
    for day in days.values():
        await day.start()
    baseline = VirtualApscheduler(app)
    used = dict.fromkeys([BASELINE, *days], 0.0)
    server_used = 0.0
    try:
        for hour in range(1, hours + 1):
            end = DAY + timedelta(hours=hour)
            used[BASELINE] += baseline.advance(end)
            for label, day in days.items():
                before = server.seconds() if server and label == POSTGRES else 0.0
                used[label] += await day.advance(end)
                if server and label == POSTGRES:
                    server_used += server.seconds() - before
        fired = {BASELINE: baseline.fired} | {label: d.fired for label, d in days.items()}
    finally:
        baseline.close()
        for store in stores.values():
            store.close()
    return used, server_used, fired


# -- report -------------------------------------------------------------------------------


class ServerCpu:
    """CPU seconds used by a local PostgreSQL server (postmaster, its live backends, and the
    backends that exited, counted in the postmaster's cutime/cstime), read from /proc."""

    def __init__(self, data_dir: Path) -> None:
        self.pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        self.tick = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _fields(pid: int | str) -> list[str]:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2:].split()  # after "pid (comm) "

    def seconds(self) -> float:
        own = self._fields(self.pid)
        total = sum(int(v) for v in own[11:15])  # utime stime cutime cstime
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = self._fields(entry.name)
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile: its time is in the postmaster's cutime now
            if int(fields[1]) == self.pid:
                total += int(fields[11]) + int(fields[12])
        return total / self.tick


def show_burst(label: str, elapsed: list[float], delays: list[list[float]]) -> None:
    """Medians over the rounds of the elapsed time and of each round's delay percentiles."""
    n = len(delays[0])
    took = statistics.median(elapsed)
    print(f"  {label:<26} {n:6d} slots in {took:6.2f} s = {n / took:8.0f} slots/s   "
          f"delay p50 {statistics.median(statistics.median(d) for d in delays):6.3f} s   "
          f"p99 {statistics.median(percentile(d, 0.99) for d in delays):6.3f} s   "
          f"max {statistics.median(max(d) for d in delays):6.3f} s   "
          f"(rounds: {', '.join(f'{e:.2f}' for e in elapsed)} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--hours", type=int, default=24, help="simulated hours of the mix")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each running APScheduler and jobbot one after the other")
    parser.add_argument("--database-url", help="PostgreSQL to use (default: a throwaway one, "
                        "whose own CPU is then measured too)")
    args = parser.parse_args()
    cluster = None
    pg_url = args.database_url
    server = None
    if pg_url is None:
        cluster = Cluster()
        pg_url = cluster.start()
        server = ServerCpu(cluster.data)
    try:
        print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
        run(args.jobs, args.hours, args.rounds, pg_url, server)
        print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    finally:
        if cluster is not None:
            cluster.stop()


def fresh_postgres(admin_url: str, name: str) -> str:
    engine = sqlalchemy.create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = engine.url.set(database=name).render_as_string(hide_password=False)
    engine.dispose()
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


NO_DB, SQLITE, POSTGRES = "jobbot, no database", "jobbot, SQLite", "jobbot, PostgreSQL"
BASELINE = "APScheduler 3.x (memory)"


def run(n: int, hours: int, rounds: int, pg_url: str, server: ServerCpu | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "mix").mkdir()
        (root / "burst").mkdir()
        day_app = write_jobs(root / "mix", n, mix)
        burst_app = write_jobs(root / "burst", n, burst)

        def stores(tag: str) -> Iterator[tuple[str, Store]]:
            yield NO_DB, MemoryStore(root / f"{tag}-unused.db")
            for name, url in ((SQLITE, f"sqlite:///{root / tag}.db"),
                              (POSTGRES, fresh_postgres(pg_url, f"bench_{tag}"))):
                store = Store(url)
                store.migrate()
                yield name, store

        cpu: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        server_cpu: list[float] = []
        fired: dict[str, int] = {}
        for index in range(rounds):
            used, server_used, fired = asyncio.run(interleaved_day(
                day_app, dict(stores(f"day{index}")), hours, root / "logs", server))
            for label, seconds in used.items():
                cpu.setdefault(label, []).append(seconds / hours)
                if label != BASELINE:
                    ratios.setdefault(label, []).append(seconds / used[BASELINE])
            if server is not None:
                server_cpu.append(server_used / hours)
        print(f"simulated {hours} h of {n} jobs (1% every minute, 39% hourly, 30% daily, 30% H; "
              f"{len(ZONES)} zones), {rounds} rounds, each running the schedulers in turn an "
              "hour at a time: CPU seconds of this process per simulated hour (median; "
              "ratio = median of each round's ratio)")
        print(f"  {BASELINE:<26} {statistics.median(cpu[BASELINE]):7.3f} s/h   "
              f"{fired[BASELINE]} fired   (rounds: "
              f"{', '.join(f'{c:.3f}' for c in cpu[BASELINE])})")
        for label in (NO_DB, SQLITE, POSTGRES):
            print(f"  {label:<26} {statistics.median(cpu[label]):7.3f} s/h   {fired[label]} fired"
                  f"   ratio to APScheduler {statistics.median(ratios[label]):5.2f}x (goal <= 1x)"
                  f"   (rounds: {', '.join(f'{c:.3f}' for c in cpu[label])})")
        if server_cpu:
            own = statistics.median(server_cpu)
            both = statistics.median(c + s for c, s in zip(cpu[POSTGRES], server_cpu,
                                                            strict=True))
            print(f"  PostgreSQL server's own CPU (not in the figure above): {own:.3f} s/h; "
                  f"jobbot + server {both:.3f} s/h = "
                  f"{both / statistics.median(cpu[BASELINE]):.2f}x APScheduler")
        else:
            print("  PostgreSQL server's own CPU: not measured (--database-url given)")

        elapsed: dict[str, list[float]] = {}
        delays: dict[str, list[list[float]]] = {}
        for index in range(rounds):
            took, waited = apscheduler_burst(burst_app)
            elapsed.setdefault(BASELINE, []).append(took)
            delays.setdefault(BASELINE, []).append(waited)
            for label, store in stores(f"burst{index}"):
                took, waited = asyncio.run(jobbot_burst(burst_app, store, root / "logs"))
                elapsed.setdefault(label, []).append(took)
                delays.setdefault(label, []).append(waited)
                store.close()
        print(f"{n} slots due in the same minute: recorded per second, delay slot time -> "
              f"run recorded (goal: all within 5 s), median of {rounds} alternating rounds")
        for label in (BASELINE, NO_DB, SQLITE, POSTGRES):
            show_burst(label, elapsed[label], delays[label])

        per_job = 40
        print(f"history pruning, {n} jobs with {per_job} finished runs each, as many as "
              "kept: CPU seconds of a prune that looks at every job (the first) and of one "
              "after a tenth of them finished a run (every ten minutes after; it deletes "
              "their oldest)")
        for label, store in stores("prune"):
            if label == NO_DB:
                continue
            every, tenth = pruning(store, n, per_job, server if label == POSTGRES else None)
            store.close()
            extra = (f"   PostgreSQL server {every[1]:.3f} s and {tenth[1]:.3f} s"
                     if label == POSTGRES and server else "")
            print(f"  {label:<26} every job {every[0]:6.3f} s   a tenth {tenth[0]:6.3f} s{extra}")


if __name__ == "__main__":
    main()

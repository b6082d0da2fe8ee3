"""Benchmark: runs of jobs sharing one lock, requested through three replicas on PostgreSQL.

Three replica processes, each a JobService with its own store (engine and connection pool),
local executor and lease, as `jobbot serve` builds them, share one PostgreSQL database
(a throwaway cluster, as the tests start, unless --database-url is given). Each requests its
share of the runs of two jobs naming the lock `db-prod` (`/bin/true`, each run asked with its
own value, so no request joins another), interleaved with the others' requests, and serves
until every run is over. The figures come from the run records:

- whether two runs ever held the lock at once: the started_at/finished_at intervals of the
  runs, in start order, must not overlap;
- whether first-come order held: the start order must be the order of request (the tickets
  handed out as the runs were recorded, which is also their created_at order);
- the hand-over time, p50 and p99, from one run's finish to the next run's start, over the
  hand-overs where the next run was already waiting (goal: p99 under 1 s);
- how many runs each replica launched (the replica that ends the holder launches the next);
- a baseline measured in the same run: request -> start of runs of a job with no lock, one
  at a time, and the ratio of the hand-over to it.

    .venv/bin/python -m bench.locks [--runs 1000] [--replicas 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.scheduler import fresh_postgres
from bench.trigger import percentile
from core.catalog import Catalog
from core.events import Changes
from core.executors.local import LocalExecutor
from core.logs import logs_for
from core.models import Run
from core.policy import Actor
from core.procs import ProcessId
from core.secrets import LocalSecrets
from core.service import JobService
from core.spec import load_app
from core.store import Store
from tests.support.postgres import Cluster

LOCK = "db-prod"
JOBS = ("migrate", "seed")
# The baseline: runs of a job with no lock, each requested once the one before it ended, so
# each starts as soon as it can; their request -> start time is what a hand-over compares to.
FREE_JOB = "free"
BASELINE_RUNS = 30


def write_app(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "app.yaml"
    jobs: list[dict[str, Any]] = [
        {"name": name, "image": "busybox", "command": ["/bin/true"], "env": {"N": ""},
         "lock": LOCK} for name in JOBS]
    jobs.append({"name": FREE_JOB, "image": "busybox", "command": ["/bin/true"]})
    path.write_text(json.dumps({"app": "bench", "jobs": jobs}))
    return path


def replica(index: int, replicas: int, runs: int, url: str, config: str, data: str,
            start: Any) -> None:
    """One replica process: request runs index, index + replicas, ... and serve until every
    run of the benchmark is over."""
    asyncio.run(_replica(index, replicas, runs, url, Path(config), Path(data), start))


async def _replica(index: int, replicas: int, runs: int, url: str, config: Path, data: Path,
                   start: Any) -> None:
    store = Store(url)
    logs = logs_for(store, data / f"logs{index}")
    owner = ProcessId.current()
    executor = LocalExecutor(logs, LocalSecrets(data / "secrets"), owner=owner,
                             retry_delay=0.01, cancel_poll=0.5)
    service = JobService(Catalog([load_app(config)]), store, executor, logs, owner=owner,
                         changes=Changes())
    await service.replica.register()
    beat = asyncio.create_task(service.replica.run())
    actor = Actor.cli(f"replica-{index}")
    await asyncio.to_thread(start.wait)
    for number in range(index, runs, replicas):
        await service.trigger(JOBS[number % len(JOBS)], actor, overrides={"N": str(number)})
        await asyncio.sleep(0)
    while True:  # until every replica's runs are over: the last holder may be another's
        if not await asyncio.to_thread(_unfinished, store):
            break
        await asyncio.sleep(0.2)
    if index == 0:
        for _ in range(BASELINE_RUNS):
            free = await service.trigger(FREE_JOB, actor)
            await service.wait(free.run.id, poll=0.05)
    beat.cancel()
    await service.shutdown()
    store.close()


def _unfinished(store: Store) -> int:
    return len(store.unfinished_runs())


def figures(all_runs: list[Run]) -> None:
    runs = [r for r in all_runs if r.job != FREE_JOB]
    baseline = [(r.started_at - r.created_at).total_seconds() for r in all_runs
                if r.job == FREE_JOB and r.started_at is not None]
    started = sorted(runs, key=lambda r: (r.started_at is None, r.started_at))
    never = [r for r in runs if r.started_at is None or r.finished_at is None]
    overlaps = sum(1 for a, b in itertools.pairwise(started)
                   if a.finished_at and b.started_at and b.started_at < a.finished_at)
    by_ticket = [r.id for r in sorted(runs, key=lambda r: r.lock_ticket or 0)]
    by_created = [r.id for r in sorted(runs, key=lambda r: (r.created_at, r.lock_ticket or 0))]
    order = [r.id for r in started]
    out_of_order = sum(1 for a, b in zip(order, by_ticket, strict=True) if a != b)
    handovers = [(b.started_at - a.finished_at).total_seconds()
                 for a, b in itertools.pairwise(started)
                 if a.finished_at and b.started_at and b.created_at < a.finished_at]
    states = Counter(r.state for r in runs)
    print(f"runs: {len(runs)}  states: {dict(states)}  never started or not finished: "
          f"{len(never)}")
    print(f"two runs holding the lock at once: {overlaps or 'never'} "
          "(started_at/finished_at intervals in start order)")
    print(f"first-come order held: {'yes' if not out_of_order else 'no'} (start order = "
          f"request order by ticket; {out_of_order} runs out of place; created_at order "
          f"{'agrees' if by_created == by_ticket else 'differs'})")
    if handovers:
        print(f"hand-over, finish -> next start, over {len(handovers)} hand-overs: "
              f"p50 {statistics.median(handovers) * 1000:7.1f} ms   "
              f"p99 {percentile(handovers, 0.99) * 1000:7.1f} ms   "
              f"max {max(handovers) * 1000:7.1f} ms   (goal p99 < 1000 ms)")
    if baseline:
        print(f"baseline, a run of a job with no lock, request -> start, over {len(baseline)} "
              f"runs: p50 {statistics.median(baseline) * 1000:7.1f} ms   "
              f"p99 {percentile(baseline, 0.99) * 1000:7.1f} ms")
    if handovers and baseline:
        ratio = statistics.median(handovers) / statistics.median(baseline)
        print(f"hand-over / baseline, p50: {ratio:.2f}x")
    launched = Counter(r.owner for r in runs)
    print("runs launched per replica: " + ", ".join(
        f"{owner}: {count}" for owner, count in sorted(launched.items(), key=str)))


def read_runs(url: str) -> list[Run]:
    store = Store(url)
    try:
        return store.list_runs(app="bench", limit=10**7)
    finally:
        store.close()


def run(runs: int, replicas: int, url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = write_app(root / "app")
        Store(url).migrate()
        spawn = multiprocessing.get_context("spawn")
        start = spawn.Event()
        processes = [spawn.Process(target=replica, args=(
            i, replicas, runs, url, str(config), str(root / "data"), start))
            for i in range(replicas)]
        for process in processes:
            process.start()
        time.sleep(2.0)  # each replica imports jobbot and opens its store before the start
        began = time.perf_counter()
        start.set()
        for process in processes:
            process.join()
        took = time.perf_counter() - began
        codes = [p.exitcode for p in processes]
        print(f"{runs} runs through {replicas} replicas in {took:.1f} s "
              f"({runs / took:.0f} runs/s); replica exit codes {codes}")
        figures(read_runs(url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--database-url", help="PostgreSQL to use (default: a throwaway one)")
    args = parser.parse_args()
    cluster = None
    admin = args.database_url
    if admin is None:
        cluster = Cluster()
        admin = cluster.start()
    try:
        print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
        run(args.runs, args.replicas, fresh_postgres(admin, "jobbot_bench_locks"))
        print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()

"""Benchmark: JobService.trigger against a bare SQLModel insert, on SQLite and PostgreSQL.

The executor is replaced by one that only records launches, so the figures are the service's
and the store's own cost. Prints runs/s and p50/p99 latency per backend and the ratio to the
bare insert measured in the same run. Goal: the service adds no more than 2x.

    .venv/bin/python -m bench.trigger [--runs 2000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from sqlmodel import Session

from core.catalog import Catalog
from core.executors.base import Launch, Reporter
from core.logs import FileLogs
from core.models import Run, RunState, utcnow
from core.policy import Actor
from core.run_ids import new_run_id
from core.service import JobService
from core.spec import parse_app
from core.store import Store
from tests.support.postgres import Cluster

APP = parse_app("app: bench\njobs:\n  - {name: noop, image: x, command: ['true']}\n")


class RecordingExecutor:
    """Accepts launches and does nothing else: the benchmark measures the service and store."""

    name = "bench"

    def __init__(self) -> None:
        self.launched = 0

    def bind(self, reporter: Reporter) -> None:
        pass

    async def launch(self, launch: Launch) -> None:
        self.launched += 1

    async def cancel(self, run: Run, actor: str) -> bool:
        return True

    def drives(self, run_id: str) -> bool:
        return False

    def followed(self) -> list[str]:
        return []

    async def release(self, run_id: str) -> None:
        pass

    async def reconcile(self, runs: object) -> None:
        pass

    def is_ready(self) -> bool:
        return True

    async def shutdown(self, reason: str) -> None:
        pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bare_inserts(store: Store, n: int, tag: str) -> list[float]:
    """One committed INSERT of an equivalent run row per trigger: the floor for any service."""
    latencies = []
    for number in range(1, n + 1):
        start = time.perf_counter()
        with Session(store.engine) as session:
            session.add(Run(id=new_run_id(), app="bench", job=f"bare-{tag}", number=number,
                            state=RunState.QUEUED.value, source="cli", actor="cli:bench",
                            overrides={"X": "1"}, origin={}, idempotency_key=f"bare-{tag}-{number}",
                            executor="bench", created_at=utcnow()))
            session.commit()
        latencies.append(time.perf_counter() - start)
    return latencies


async def service_triggers(store: Store, n: int, logs: Path, tag: str) -> list[float]:
    executor = RecordingExecutor()
    service = JobService(Catalog([APP]), store, executor, FileLogs(logs))
    actor = Actor.cli("bench")
    latencies = []
    for i in range(n):
        start = time.perf_counter()
        await service.trigger("noop", actor, overrides={"X": "1"}, idempotency_key=f"svc-{tag}-{i}")
        latencies.append(time.perf_counter() - start)
    assert executor.launched == n
    return latencies


def report(label: str, latencies: list[float]) -> tuple[float, float]:
    total = sum(latencies)
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(f"  {label:<22} {len(latencies) / total:8.0f} runs/s   p50 {p50 * 1000:6.2f} ms   "
          f"p99 {p99 * 1000:6.2f} ms")
    return p50, len(latencies) / total


def bench(url: str, name: str, n: int, rounds: int = 10) -> None:
    """Alternate the two in rounds, so a change in machine load hits both alike."""
    store = Store(url)
    store.migrate()
    bare: list[float] = []
    service: list[float] = []
    with tempfile.TemporaryDirectory() as logs:
        bare_inserts(store, 50, "warm")
        asyncio.run(service_triggers(store, 50, Path(logs), "warm"))
        for round_ in range(rounds):
            bare += bare_inserts(store, n // rounds, f"r{round_}")
            service += asyncio.run(service_triggers(store, n // rounds, Path(logs), f"r{round_}"))
    print(f"{name}: {len(service)} triggers, in {rounds} alternating rounds")
    bare_p50, bare_rate = report("bare SQLModel insert", bare)
    svc_p50, svc_rate = report("JobService.trigger", service)
    print(f"  ratio: p50 latency {svc_p50 / bare_p50:.2f}x, throughput {bare_rate / svc_rate:.2f}x "
          "(goal: <= 2x)")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--database-url", default=os.environ.get("JOBBOT_BENCH_DATABASE_URL"),
                        help="PostgreSQL URL (default: a throwaway local cluster)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench(f"sqlite:///{tmp}/bench.db", "SQLite", args.runs)
    if args.database_url:
        bench(args.database_url, "PostgreSQL", args.runs)
        return
    cluster = Cluster()
    try:
        bench(cluster.start(), "PostgreSQL", args.runs)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()

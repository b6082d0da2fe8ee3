"""One whole chaos run, shared by the suite and bench/chaos.py: start the cluster, drive the
requests and kills, let the runs settle, check every invariant, stop everything."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from core.store import Store
from tests.chaos.checks import Report, check, settle
from tests.chaos.cluster import ChaosCluster
from tests.chaos.plan import Plan
from tests.chaos.traffic import drive


async def run_chaos(plan: Plan, workdir: Path) -> Report:
    """The report of one run of `plan`; replica logs stay in `workdir`."""
    cluster = ChaosCluster(plan, workdir)
    try:
        began = time.monotonic()
        await cluster.start()
        started = time.monotonic()
        traffic = await drive(cluster)
        driven = time.monotonic()
        store = Store(cluster.database_url)
        try:
            await settle(cluster, traffic, store)
            report = await check(cluster, traffic, store)
            report.timeline.insert(0, f"started in {started - began:.0f} s, chaos for "
                                      f"{driven - started:.0f} s, settled in "
                                      f"{time.monotonic() - driven:.0f} s")
            return report
        finally:
            await asyncio.to_thread(store.close)
    finally:
        await cluster.stop()

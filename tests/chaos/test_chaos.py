"""Three `jobbot serve` replicas on one PostgreSQL under a stream of Slack commands, GitHub
deliveries and cron slots, while replicas are killed with SIGKILL and come back: nothing
answered is lost or done twice, every run ends, its Slack thread and log are whole."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.plan import from_env
from tests.chaos.session import run_chaos


async def test_replicas_killed_at_random_lose_and_repeat_nothing(tmp_path: Path) -> None:
    plan = from_env()
    print(f"chaos plan: {plan}")  # the seed, for a replay (-s shows it; a failure repeats it)
    report = await run_chaos(plan, tmp_path)
    print(report.text())
    # The harness did what the plan says: requests reached jobbot, replicas were killed.
    assert report.answered > 0, report.text()
    assert report.kills > 0 or plan.kills == 0, report.text()
    assert report.ok, f"{report.text()}\nreplica logs: {tmp_path}"

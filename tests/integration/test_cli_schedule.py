"""`jobbot schedule` prints fire times as the scheduler fires them; `jobbot runs` shows skips."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import OperationalError

from core.scheduler import Scheduler
from core.spec import load_app
from core.store import Store
from tests.integration.test_cli import jobbot, spawn, wait_for
from tests.support.apps import make_service, python_job, write_app
from tests.support.clock import VirtualClock
from tests.support.net import free_port

JOBS = [
    python_job("nightly", "pass", schedule="30 2 * * *", timezone="Europe/Berlin"),
    python_job("hourly", "pass", schedule="@hourly", timezone="America/New_York",
               starting_deadline="10m"),
    python_job("adhoc", "pass"),
]


def test_schedule_prints_dst_correct_fire_times(tmp_path: Path) -> None:
    write_app(tmp_path, JOBS)
    spring = jobbot(tmp_path, "schedule", "nightly", "--from", "2026-03-28T00:00:00+01:00",
                    "--count", "3")
    assert spring.returncode == 0, spring.stderr
    assert spring.stdout.splitlines() == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    autumn = jobbot(tmp_path, "schedule", "nightly", "--from", "2026-10-25T00:00:00")
    assert autumn.stdout.splitlines() == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00",
        "2026-10-28T02:30:00+01:00", "2026-10-29T02:30:00+01:00"]
    hourly = jobbot(tmp_path, "schedule", "hourly", "--from", "2026-11-01T00:30:00-04:00",
                    "-n", "3")
    assert hourly.stdout.splitlines() == [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]
    now = jobbot(tmp_path, "schedule", "hourly")
    assert len(now.stdout.splitlines()) == 5
    assert datetime.fromisoformat(now.stdout.splitlines()[0]) > datetime.now(UTC)


def test_schedule_refuses_bad_input(tmp_path: Path) -> None:
    write_app(tmp_path, JOBS)
    none = jobbot(tmp_path, "schedule", "adhoc")
    assert (none.returncode, none.stderr.strip()) == (2, "jobbot: adhoc has no schedule")
    bad = jobbot(tmp_path, "schedule", "nightly", "--from", "tomorrow")
    assert bad.returncode == 2
    assert "--from 'tomorrow' is not an ISO 8601 time" in bad.stderr
    zero = jobbot(tmp_path, "schedule", "nightly", "--count", "0")
    assert zero.returncode == 2
    assert "--count must be a whole number from 1 to 10000, not '0'" in zero.stderr
    assert not (tmp_path / ".jobbot").exists()  # nothing written


def test_runs_shows_skipped_slots_with_their_reasons(tmp_path: Path) -> None:
    path = write_app(tmp_path, JOBS)
    store = Store(f"sqlite:///{tmp_path / '.jobbot' / 'jobbot.db'}")
    store.migrate()
    service = make_service(load_app(path), store, tmp_path / ".jobbot")
    start = datetime(2026, 11, 20, 10, 0, 30, tzinfo=UTC)

    async def outage() -> None:
        clock = VirtualClock(start)
        await Scheduler(service, clock).tick()
        clock.set(start + timedelta(hours=3, minutes=30))
        await Scheduler(service, clock).tick()  # restarted 3.5 hours later
        await service.shutdown("test over")

    asyncio.run(outage())
    store.close()
    runs = jobbot(tmp_path, "runs", "hourly")
    assert runs.returncode == 0, runs.stderr
    lines = runs.stdout.splitlines()
    assert "REASON" in lines[0]
    skipped = [line for line in lines if "skipped" in line]
    assert len(skipped) == 3
    assert sum("missed: no jobbot scheduler was running at this time" in line
               for line in skipped) == 2
    assert sum("missed: 1830s late, beyond starting_deadline 600s" in line
               for line in skipped) == 1


def test_serve_runs_the_scheduler_and_stops_it_cleanly(tmp_path: Path) -> None:
    write_app(tmp_path, JOBS)
    port = free_port()
    server = spawn(tmp_path, "serve", env={"JOBBOT_PORT": str(port)})
    database = tmp_path / ".jobbot" / "jobbot.db"

    def schedules_seen() -> bool:
        if not database.exists():
            return False
        store = Store(f"sqlite:///{database}")
        try:
            return set(store.schedule_states()) == {("demo", "nightly"), ("demo", "hourly")}
        except OperationalError:
            return False  # not migrated yet
        finally:
            store.close()

    try:
        wait_for(schedules_seen)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    _, stderr = server.communicate(timeout=10)
    assert "scheduler round failed" not in stderr

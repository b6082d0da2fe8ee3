"""A scheduler in its own OS process on virtual time, driven line by line over stdin.

    python -m tests.support.scheduler_process APP_YAML DATABASE_URL START DATA_DIR

Commands (one per line): `tick ISO8601` moves the virtual clock there and runs one round,
answering `ticked N` (slots this process recorded); `restart` replaces the scheduler by a new
one with nothing in memory (`restarted`); `quit` stops the runs and exits (`bye`). The
process prints `ready` once it can take commands. Several of these, given the same instants
at the same time, race on the same slots of one database.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path

from core.scheduler import Scheduler
from core.spec import load_app
from core.store import Store
from tests.support.apps import make_service
from tests.support.clock import VirtualClock


def answer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def serve(app_path: Path, url: str, start: datetime, data_dir: Path) -> None:
    store = Store(url)
    service = make_service(load_app(app_path), store, data_dir)
    clock = VirtualClock(start)
    scheduler = Scheduler(service, clock)
    answer("ready")
    try:
        while True:
            # Read in a thread: the event loop keeps driving the runs this process launched.
            command = (await asyncio.to_thread(sys.stdin.readline)).split()
            if not command or command[0] == "quit":
                break
            if command[0] == "tick":
                clock.set(datetime.fromisoformat(command[1]))
                answer(f"ticked {await scheduler.tick()}")
            elif command[0] == "restart":
                scheduler = Scheduler(service, clock)
                answer("restarted")
            else:
                answer(f"unknown command {command[0]!r}")
    finally:
        await service.shutdown("scheduler process stopped")
        store.close()
    answer("bye")


def main(argv: list[str]) -> None:
    app_path, url, start, data_dir = argv
    asyncio.run(serve(Path(app_path), url, datetime.fromisoformat(start), Path(data_dir)))


if __name__ == "__main__":
    main(sys.argv[1:])

"""A test that hangs fails within minutes, showing where it waits, instead of holding CI.

Awaiting something that never comes leaves the event loop idle: nothing times out, and CI
would stop only at its 90-minute limit, with no clue. After HANG_AFTER seconds the guard
prints every asyncio task's stack and every thread's, then ends the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

# The slowest test takes well under a minute; a session fixture (the e2e cluster) can take a
# few more in the first test that uses it.
HANG_AFTER = 600.0

_running = ""
_release_output: Callable[[], str] = str


def _dump_and_exit(signum: int, frame: FrameType | None) -> None:
    # A signal handler runs in the main thread, inside the event loop if one is running.
    captured = _release_output()  # pytest holds stderr; what the test printed comes first
    out = sys.stderr
    print(f"{captured}\n=== {_running} has run for {HANG_AFTER:.0f} s: where it waits",
          file=out)
    with contextlib.suppress(RuntimeError):
        for task in asyncio.all_tasks(asyncio.get_running_loop()):
            print(f"--- task {task.get_name()}: {task.get_coro()!r}", file=out)
            task.print_stack(file=out)
    faulthandler.dump_traceback(file=out, all_threads=True)
    out.flush()
    os._exit(3)


@contextlib.contextmanager
def watch(test: str, release_output: Callable[[], str]) -> Iterator[None]:
    """Run one test under the guard; `release_output` gives stderr back (from pytest's
    capture) and returns what the test printed."""
    global _running, _release_output
    _running, _release_output = test, release_output
    signal.signal(signal.SIGUSR1, _dump_and_exit)
    timer = threading.Timer(HANG_AFTER, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()

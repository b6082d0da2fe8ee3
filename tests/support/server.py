"""`jobbot serve`'s app (jobbot.server.make_app) on a free port of 127.0.0.1, for tests; and
`jobbot serve` in a process of its own, started and killed like a container's."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web

from jobbot.server import OUTBOX, make_app
from jobbot.settings import Settings
from jobbot.wiring import Runtime, build_runtime
from tests.support.net import free_port


@dataclass
class Served:
    """A running server: its wired core, its aiohttp app and where it listens."""

    runtime: Runtime
    app: web.Application
    base_url: str
    stop: Callable[[], Awaitable[None]]


async def serve(settings: Settings, config: Path) -> Served:
    """Build the runtime from `settings` and `config`, serve make_app's routes and run the
    run-event outbox, as `jobbot serve` does (without the scheduler)."""
    runtime = build_runtime(settings, config)
    app = make_app(runtime)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    outbox = asyncio.create_task(app[OUTBOX].run())

    async def stop() -> None:
        outbox.cancel()
        await asyncio.gather(outbox, return_exceptions=True)
        await runtime.service.shutdown("test over")
        await runner.cleanup()
        runtime.close()

    return Served(runtime, app, f"http://127.0.0.1:{port}", stop)


class ServeProcess:
    """`jobbot serve` in a process of its own, started and killed like a container's; what it
    logs goes to `log` (a file), if given."""

    def __init__(self, workdir: Path, env: dict[str, str], *, log: Path | None = None,
                 ready_within: float = 30.0) -> None:
        self.ready_within = ready_within
        self.workdir = workdir
        self.port = free_port()
        self.env = {**os.environ, **env, "JOBBOT_PORT": str(self.port)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self.log is not None and self._out is None:
            self._out = open(self.log, "ab")  # noqa: SIM115  (closed in stop/kill)
        out = self._out if self._out is not None else subprocess.DEVNULL
        return subprocess.Popen([sys.executable, "-m", "jobbot", "serve"], cwd=self.workdir,
                                env=self.env, stdout=out, stderr=out)

    async def start(self) -> None:
        self.proc = await asyncio.to_thread(self._spawn)
        deadline = time.monotonic() + self.ready_within
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("jobbot serve did not become ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self._close_log()

    def _close_log(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def wait_until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll the blocking `check` (in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(check)
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")

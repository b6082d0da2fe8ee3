"""`jobbot serve`'s app (jobbot.server.make_app) on a free port of 127.0.0.1, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from jobbot.server import OUTBOX, make_app
from jobbot.settings import Settings
from jobbot.wiring import Runtime, build_runtime


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

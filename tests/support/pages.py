"""Serve the pages (web/) of a test service on 127.0.0.1, as jobbot's server mounts them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from core.links import Links
from core.service import JobService
from tests.support.net import free_port
from web import routes

KEY = b"test-signing-key-0123456789abcdef"
WEB_TOKEN = "shared-browse-token"

# A job that prints a few lines, then waits until the test creates the gate file.
GATED = """
import os, sys, time
gate = sys.argv[1] if len(sys.argv) > 1 else os.environ["GATE"]
print("\\x1b[1;32mstarting\\x1b[0m <b>bold?</b>", flush=True)
print("token is", os.environ.get("API_TOKEN") or "none", flush=True)
n = 0
while not os.path.exists(gate):
    n += 1
    print("waiting", n, flush=True)
    time.sleep(0.2)
print("done", flush=True)
"""


def make_app(service: JobService, links: Links, *, web_token: str | None = WEB_TOKEN,
             **settings: Any) -> web.Application:
    """The pages as jobbot mounts them; `settings` are further WebSettings fields."""
    app = web.Application()
    routes.setup(app, service, links, routes.WebSettings(web_token=web_token, **settings))
    return app


@asynccontextmanager
async def serving(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """The app on a real port (`port`, else a free one); yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = port or free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def gate_path(tmp_path: Path) -> Path:
    return tmp_path / "gate"

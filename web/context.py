"""What every page handler reads from the app: the service, access checks and templates."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from aiohttp import web

from core.service import JobService
from web import present
from web.access import Access
from web.live import LiveTail

# Pages are never cached (they show live state) and never leak their signed link onwards.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "style-src-attr 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
HTML = "text/html; charset=utf-8"
_HELPERS = {"icon": present.icon, "state_word": present.state_word,
            "duration": present.duration, "timestamp": present.timestamp}


@dataclass(frozen=True)
class WebContext:
    service: JobService
    access: Access
    templates: jinja2.Environment
    live: LiveTail
    # Handlers streaming live logs; stopped on shutdown so the server need not wait for viewers.
    streams: set[asyncio.Task[object]] = field(default_factory=set)

    async def stop_streams(self, app: web.Application) -> None:
        for task in list(self.streams):
            task.cancel()

    def render(self, name: str, values: Mapping[str, Any], *, status: int = 200) -> web.Response:
        body = self.templates.get_template(name).render(**_HELPERS, **values)
        return web.Response(text=body, status=status, content_type="text/html",
                            charset="utf-8", headers=HEADERS)

    def error(self, status: int, title: str, message: str) -> web.Response:
        return self.render("error.html", {"status": status, "title": title,
                                          "message": message}, status=status)

    def stream(self, name: str, values: Mapping[str, Any]) -> jinja2.environment.TemplateStream:
        return self.templates.get_template(name).stream(**_HELPERS, **values)


WEB = web.AppKey("jobbot_web", WebContext)

"""What every page handler reads from the app: the service, access checks and templates."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from core.service import JobService
from web import present
from web.access import Access
from web.live import LiveTail
from web.oidc import SlackDirectory, SlackSignIn

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
    # Sign in with Slack (None: off), and the bot's answers about the workspace.
    signin: SlackSignIn | None = None
    directory: SlackDirectory | None = None
    # JOBBOT_METRICS_TOKEN: the bearer token /metrics asks for; without it /metrics answers
    # only if JOBBOT_METRICS_OPEN is set.
    metrics_token: str | None = None
    metrics_open: bool = False
    # Handlers streaming live logs; stopped on shutdown so the server need not wait for viewers.
    streams: set[asyncio.Task[object]] = field(default_factory=set)

    async def stop_streams(self, app: web.Application) -> None:
        for task in list(self.streams):
            task.cancel()

    def account(self, request: web.Request, here: str) -> dict[str, Any]:
        """The header's "Sign in with Slack" link or "signed in as", for templates."""
        viewer = self.access.viewer(request)
        return {"viewer": viewer, "signin_url": None if viewer is not None or self.signin is None
                else "/auth/slack?" + urlencode({"next": here})}

    def render(self, name: str, values: Mapping[str, Any], *, status: int = 200) -> web.Response:
        body = self.templates.get_template(name).render(**_HELPERS, **values)
        return web.Response(text=body, status=status, content_type="text/html",
                            charset="utf-8", headers=HEADERS)

    def error(self, status: int, title: str, message: str, *,
              account: dict[str, Any] | None = None) -> web.Response:
        values = {"status": status, "title": title, "message": message}
        return self.render("error.html", {**values, "account": account} if account else values,
                           status=status)

    def stream(self, name: str, values: Mapping[str, Any]) -> jinja2.environment.TemplateStream:
        return self.templates.get_template(name).stream(**_HELPERS, **values)


WEB = web.AppKey("jobbot_web", WebContext)

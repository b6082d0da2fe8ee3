"""The pages' routes, mounted on jobbot's aiohttp app with one call to `setup`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
from aiohttp import web

from core.links import Links
from core.service import JobService
from web import actions, jobs, metrics, runs, signin
from web.access import Access
from web.context import WEB, WebContext
from web.live import LiveTail
from web.oidc import SlackDirectory, SlackSignIn

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class WebSettings:
    """What the pages need from jobbot's settings, passed in so web/ never imports jobbot."""

    web_token: str | None = None
    # The operator a local `jobbot serve` acts for when web_token is the one it printed.
    local_operator: str | None = None
    secure_cookies: bool = False
    # Sign in with Slack: the app's OAuth client, and the bot's view of the workspace (its
    # team and user groups); sign-in needs both.
    slack_signin: SlackSignIn | None = None
    slack_directory: SlackDirectory | None = None
    metrics_token: str | None = None
    metrics_open: bool = False


def setup(app: web.Application, service: JobService, links: Links,
          settings: WebSettings | None = None) -> None:
    """Add the run pages, job list, raw logs, actions, /metrics and the stylesheet to `app`."""
    settings = settings or WebSettings()
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False,
    )
    signing_in = settings.slack_signin if settings.slack_directory is not None else None
    context = WebContext(service, Access(links, settings.web_token, settings.secure_cookies,
                                                settings.local_operator),
                         templates, LiveTail(service), signin=signing_in,
                         directory=settings.slack_directory,
                         metrics_token=settings.metrics_token, metrics_open=settings.metrics_open)
    app[WEB] = context
    app.on_shutdown.append(context.stop_streams)
    app.router.add_get("/runs/{id}", runs.run_page)
    app.router.add_get("/runs/{id}/logs", runs.run_logs)
    app.router.add_post("/runs/{id}/cancel", actions.cancel)
    app.router.add_post("/runs/{id}/rerun", actions.rerun)
    app.router.add_post("/runs/{id}/approve", actions.approve)
    app.router.add_post("/runs/{id}/deny", actions.deny)
    app.router.add_get("/", jobs.home)
    app.router.add_get("/jobs", jobs.jobs_page)
    app.router.add_get("/jobs/{name}", jobs.job_page)
    app.router.add_post("/jobs/{name}/run", actions.run_now)
    app.router.add_get("/metrics", metrics.metrics)
    app.router.add_get("/auth/slack", signin.start)
    app.router.add_get(signin.CALLBACK_PATH, signin.callback)
    app.router.add_post("/auth/signout", signin.sign_out)
    app.router.add_get("/static/{name}", _static)


# The pages' stylesheet and script, by name: a request names one of these files or gets 404
# (aiohttp's directory route looked any name up on the disk, and a name too long for it was
# a 500).
_STATIC = {path.name: path for path in (_HERE / "static").iterdir() if path.is_file()}


async def _static(request: web.Request) -> web.StreamResponse:
    path = _STATIC.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound(text="no such file")
    return web.FileResponse(path)

"""The job list (schedules in words, next run, recent runs) and one job's paged history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from markupsafe import Markup

from core.errors import BadInput, NotFound
from core.models import Run
from core.numbers import INT32_MAX, bounded_int
from core.service import JobSummary
from web import actions, present
from web.context import WEB, WebContext
from web.schedule_words import describe, next_fire

RECENT = 20
PAGE = 50


@dataclass(frozen=True)
class JobRow:
    name: str
    description: str
    paused: bool
    schedule: list[str]
    next_run: datetime | None
    recent: list[Run]
    rate: float | None
    chart: Markup


async def home(request: web.Request) -> web.Response:
    """GET /: the job list. `/?token=` (the link a local `jobbot serve` prints) signs this
    browser in first, then the token leaves the address bar."""
    ctx = request.app[WEB]
    given = ctx.access.token_given(request)
    if given is False:
        return ctx.error(403, "This link is not valid", ctx.access.wrong_token())
    response = web.HTTPSeeOther("/jobs")
    if given:
        ctx.access.sign_in(response)
    raise response


def _signed_in(ctx: WebContext, request: web.Request) -> web.Response | None:
    """None if the viewer may browse; else the answer (a redirect that sets the cookie, or 403)."""
    given = ctx.access.token_given(request)
    if given is False:
        return ctx.error(403, "This link is not valid", ctx.access.wrong_token())
    if given:
        response = web.HTTPSeeOther(request.rel_url.with_query(
            {k: v for k, v in request.query.items() if k != "token"}))
        ctx.access.sign_in(response)
        raise response
    if ctx.access.is_browser(request):
        return None
    account = ctx.account(request, request.path_qs)
    if ctx.signin is not None:
        return ctx.error(403, "Sign in", "Sign in with Slack to browse jobs.", account=account)
    if ctx.access.local_operator:
        return ctx.error(403, "Sign in", "Open the link `jobbot serve` printed in its terminal "
                         "when it started (http://…/?token=…); a new one is made at every "
                         "start.")
    if not ctx.access.web_token:
        return ctx.error(403, "Browsing is off",
                         "Set JOBBOT_WEB_TOKEN or Sign in with Slack (SLACK_CLIENT_ID) to "
                         "browse jobs; run pages open from their links.")
    return ctx.error(403, "Sign in", "Open this page once with ?token=<JOBBOT_WEB_TOKEN>.")


def _next_run(job: JobSummary) -> datetime | None:
    if job.paused or not job.schedule:
        return None
    return next_fire(job.schedule, job.timezone, job.name)


async def jobs_page(request: web.Request) -> web.Response:
    ctx = request.app[WEB]
    refused = _signed_in(ctx, request)
    if refused is not None:
        return refused
    rows = []
    for job in await ctx.service.jobs():
        recent = await ctx.service.history(f"{job.app}/{job.name}", limit=RECENT)
        rows.append(JobRow(
            job.name, job.description, job.paused,
            [describe(expr, job.timezone) for expr in job.schedule], _next_run(job),
            list(reversed(recent)), present.success_rate(recent),
            Markup(present.duration_chart(recent)),
        ))
    return ctx.render("jobs.html", {"rows": rows, "token": ctx.access.links.token,
                                    "account": ctx.account(request, request.path_qs)})


async def job_page(request: web.Request) -> web.Response:
    ctx = request.app[WEB]
    refused = _signed_in(ctx, request)
    if refused is not None:
        return refused
    name = request.match_info["name"]
    before_text = request.query.get("before")
    try:
        before = (None if before_text is None
                  else bounded_int(before_text, 1, INT32_MAX, name="before (a run number)"))
    except BadInput as exc:
        return ctx.error(400, "Bad page", str(exc))
    try:
        job = await ctx.service.job_summary(name)
        runs = await ctx.service.history(name, limit=PAGE, before_number=before)
        spec = ctx.service.catalog.resolve(name).job
    except NotFound as exc:
        return ctx.error(404, "No such job", str(exc))
    except BadInput as exc:
        return ctx.error(400, "Not a job", str(exc))
    values: dict[str, Any] = {
        "offer": await actions.run_offered(ctx, request, spec),
        "job": job, "runs": runs, "token": ctx.access.links.token,
        "schedule": [describe(expr, job.timezone) for expr in job.schedule],
        "next_run": _next_run(job),
        "older": runs[-1].number if len(runs) == PAGE and runs[-1].number > 1 else None,
        "account": ctx.account(request, request.path_qs),
    }
    return ctx.render("job.html", values)

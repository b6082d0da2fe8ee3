"""Cancel and rerun from the run page: who is signed in, a same-site post, and core policy."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from core.errors import BadInput, Conflict, NotFound, PermissionDenied
from core.models import Run
from core.policy import Action, Actor, decide
from core.spec import JobSpec
from web.context import WEB, WebContext

logger = logging.getLogger(__name__)


async def actor_for(ctx: WebContext, request: web.Request, job: JobSpec) -> Actor:
    """The page's actor, with the job's Slack user groups they belong to (asked only if needed)."""
    actor = ctx.access.actor(request)
    wanted = job.allow.slack_usergroups
    if (not wanted or ctx.directory is None or not actor.slack_user
            or actor.slack_user in job.allow.slack_users):
        return actor
    found = await ctx.directory.groups_of(actor.slack_user, wanted)
    return dataclasses.replace(actor, slack_usergroups=actor.slack_usergroups | found)


@dataclass(frozen=True)
class Offer:
    """The buttons this person may press on a run's page, or why not."""

    cancel: bool = False
    rerun: bool = False
    refusal: str = ""


async def offered(ctx: WebContext, request: web.Request, run: Run) -> Offer:
    """Cancel while the run goes, rerun once it is over, if core policy lets this person.

    Only a hint for the page: the service decides again (and audits) when they are pressed."""
    if ctx.access.viewer(request) is None:
        return Offer()
    try:
        job = ctx.service.catalog.resolve(f"{run.app}/{run.job}").job
    except NotFound:
        return Offer(refusal=f"{run.job} is no longer in app.yaml")
    actor = await actor_for(ctx, request, job)
    final = run.run_state.is_final
    decision = decide(job, Action.RUN if final else Action.CANCEL, actor)
    return Offer(cancel=decision.allowed and not final, rerun=decision.allowed and final,
                 refusal=decision.reason)


# The rerun form's parameter fields: `p:NAME`.
FIELD_PREFIX = "p:"


def parameter_fields(form: Mapping[str, Any]) -> dict[str, str]:
    """The values a rerun form changes, by name: fields left empty keep the run's value (a
    secret is never put back into the page, so an empty one keeps it)."""
    return {name[len(FIELD_PREFIX):]: value for name, value in form.items()
            if name.startswith(FIELD_PREFIX) and isinstance(value, str) and value != ""}


async def cancel(request: web.Request) -> web.Response:
    return await _act(request, "cancel")


async def rerun(request: web.Request) -> web.Response:
    return await _act(request, "rerun")


async def _act(request: web.Request, action: str) -> web.Response:
    ctx = request.app[WEB]
    run_id = request.match_info["id"]
    if not ctx.access.same_origin(request):
        return ctx.error(403, "Refused", "This form must be sent from jobbot's own page.")
    try:
        form = await request.post()
    except (ValueError, LookupError) as exc:  # a malformed body, or a charset Python lacks
        return ctx.error(400, "Bad form", f"This form could not be read ({type(exc).__name__}).")
    token = form.get("t")
    if not isinstance(token, str) or not ctx.access.links.verify(run_id, token):
        return ctx.error(403, "This link is not valid", "Open the run again from its link.")
    try:
        run = await ctx.service.get_run(run_id)
        actor = ctx.access.actor(request)
        try:
            job = ctx.service.catalog.resolve(f"{run.app}/{run.job}").job
            actor = await actor_for(ctx, request, job)
        except NotFound:
            pass  # the service answers precisely below
        if action == "cancel":
            await ctx.service.cancel(run_id, actor)
            target = run_id
        else:
            result = await ctx.service.rerun(run_id, actor, changes=parameter_fields(form))
            target = result.run.id
    except PermissionDenied as exc:
        logger.info("page %s refused: %s", action, exc, extra={"run_id": run_id})
        return ctx.error(403, f"You may not {action} this run", str(exc))
    except NotFound as exc:
        return ctx.error(404, "No such run", str(exc))
    except (Conflict, BadInput) as exc:
        return ctx.error(409 if isinstance(exc, Conflict) else 400, f"Could not {action}",
                         str(exc))
    logger.info("page %s of run %s by %s", action, run_id, actor.id, extra={"run_id": run_id})
    raise web.HTTPSeeOther(f"/runs/{target}?t={ctx.access.links.token(target)}")

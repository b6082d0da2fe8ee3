"""Cancel and rerun from the run page: the signed link, a same-site post, and core policy."""

from __future__ import annotations

import logging

from aiohttp import web

from core.errors import BadInput, Conflict, NotFound, PermissionDenied
from core.models import Source
from core.policy import Actor
from web.access import same_origin
from web.context import WEB

logger = logging.getLogger(__name__)


def page_actor(request: web.Request) -> Actor:
    """Who acts from a page. A signed link says which run, not who clicked it, so this actor
    has no Slack or GitHub identity and core policy refuses it (no web sign-in exists yet)."""
    return Actor(id="web:link-holder", source=Source.WEB, display="someone with the run link")


async def cancel(request: web.Request) -> web.Response:
    return await _act(request, "cancel")


async def rerun(request: web.Request) -> web.Response:
    return await _act(request, "rerun")


async def _act(request: web.Request, action: str) -> web.Response:
    ctx = request.app[WEB]
    run_id = request.match_info["id"]
    if not same_origin(request):
        return ctx.error(403, "Refused", "This form must be sent from jobbot's own page.")
    form = await request.post()
    token = form.get("t")
    if not isinstance(token, str) or not ctx.access.links.verify(run_id, token):
        return ctx.error(403, "This link is not valid", "Open the run again from its link.")
    actor = page_actor(request)
    try:
        if action == "cancel":
            await ctx.service.cancel(run_id, actor)
            target = run_id
        else:
            result = await ctx.service.rerun(run_id, actor)
            target = result.run.id
    except PermissionDenied as exc:
        logger.info("page %s refused: %s", action, exc, extra={"run_id": run_id})
        return ctx.error(403, f"You may not {action} this run", str(exc))
    except NotFound as exc:
        return ctx.error(404, "No such run", str(exc))
    except (Conflict, BadInput) as exc:
        return ctx.error(409 if isinstance(exc, Conflict) else 400, f"Could not {action}",
                         str(exc))
    logger.info("page %s of run %s", action, run_id, extra={"run_id": run_id})
    raise web.HTTPSeeOther(f"/runs/{target}?t={ctx.access.links.token(target)}")

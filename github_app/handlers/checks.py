"""check_run rerequested / requested_action and check_suite rerequested: run again, only runs
of the repository's own app."""

from __future__ import annotations

from typing import Any

from core.errors import BadInput, NotFound
from core.models import Run
from core.policy import Actor
from core.spec import AppSpec
from github_app import keys
from github_app.context import Context
from github_app.routing import Delivery, Router

router = Router()


def _origin(run: Run, delivery: Delivery) -> dict[str, Any]:
    # The new run gets a new check run: GitHub does not reset the old one on "Re-run".
    origin = {k: v for k, v in run.origin.items() if k != "check_run_id"}
    return {**origin, "delivery": delivery.id}


def _ours(run: Run, app: AppSpec, repository: str) -> bool:
    return run.app == app.app and run.origin.get("repository") == repository


async def rerun(ctx: Context, delivery: Delivery, actor: Actor, run: Run, key: str) -> str:
    # Per job: a replay of the same request finds this rerun, whichever run is latest by then.
    key = f"{key}:{run.app}/{run.job}"
    if run.executor == "build":
        app = ctx.service.catalog.app(run.app)
        outcome = await ctx.build(app, run.job, delivery.repository, run.sha or "",
                                  run.ref or "", actor, key, _origin(run, delivery))
        return f"rebuilt {run.job}: {outcome.state.value}"
    result = await ctx.service.rerun(run.id, actor, idempotency_key=key,
                                     origin=_origin(run, delivery))
    if not result.created:
        return f"{run.label} was already rerun for this request as {result.run.label}"
    return f"reran {run.label} as {result.run.label}"


@router.register("check_run", "rerequested", "requested_action")
async def on_check_run(delivery: Delivery, ctx: Context) -> str:
    if delivery.action == "requested_action" and (
            delivery.get("requested_action", "identifier") != "rerun"):
        return "ignored: unknown action"
    run_id = delivery.get("check_run", "external_id")
    if not isinstance(run_id, str) or not run_id:
        return "ignored: not a jobbot check run"
    try:
        run = await ctx.service.get_run(run_id)
    except NotFound:
        return f"ignored: no run {run_id}"
    repository = delivery.repository
    api = ctx.api(delivery)
    try:
        app = await ctx.repository_app(api, delivery)
    except BadInput as exc:
        return f"refused: {exc}"
    if not _ours(run, app, repository):
        return (f"refused: {run.label} is not a run of {repository}'s app {app.app}: its check "
                f"runs rerun only that app's runs")
    actor = await ctx.actor(api, repository, delivery.sender)
    return await rerun(ctx, delivery, actor, run, keys.check_run(delivery))


@router.register("check_suite", "rerequested")
async def on_check_suite(delivery: Delivery, ctx: Context) -> str:
    repository = delivery.repository
    sha = delivery.text("check_suite", "head_sha")
    api = ctx.api(delivery)
    try:
        app = await ctx.repository_app(api, delivery)
    except BadInput as exc:
        return f"refused: {exc}"
    latest: dict[tuple[str, str], Run] = {}
    for run in await ctx.db(ctx.service.store.runs_for_sha, sha):
        if _ours(run, app, repository):
            latest.setdefault((run.app, run.job), run)  # newest first
    if not latest:
        return f"ignored: no runs of app {app.app} in this suite"
    actor = await ctx.actor(api, repository, delivery.sender)
    key = keys.check_suite(delivery)
    done = [await rerun(ctx, delivery, actor, run, key) for run in latest.values()]
    return "; ".join(done)

"""pull_request: run `pull_requests: true` jobs for trusted heads; closing cancels the PR's runs."""

from __future__ import annotations

import logging

from core.errors import Conflict
from core.models import Source
from core.policy import Actor
from github_app.context import Context, PullRequest
from github_app.handlers.comments import start_pull_request_jobs
from github_app.routing import Delivery, Router

logger = logging.getLogger(__name__)
router = Router()


@router.register("pull_request", "opened", "synchronize", "reopened")
async def on_head(delivery: Delivery, ctx: Context) -> str:
    repository = delivery.repository
    pr = PullRequest.from_payload(repository, delivery)
    app = ctx.repo_app(repository)
    if app is None or not any(job.pull_requests for job in app.jobs):
        return "ignored: no job runs on pull requests"
    api = ctx.api(delivery)
    if not await ctx.approved(pr):
        await ctx.refresh_pr_comment(api, repository, pr.number, [
            f"This pull request comes from a fork: nothing runs until someone with write access "
            f"comments `/ok-to-test` (for {pr.head_sha[:7]}; a new push needs a new approval)."])
        return f"fork head {pr.head_sha[:7]} waits for /ok-to-test"
    # The author's own permission decides, asked of GitHub now (not author_association).
    actor = await ctx.actor(api, repository, pr.author)
    started = await start_pull_request_jobs(ctx, delivery, pr, actor)
    if started:
        await ctx.refresh_pr_comment(api, repository, pr.number)
    return "started " + (", ".join(started) or "nothing")


@router.register("pull_request", "closed")
async def on_closed(delivery: Delivery, ctx: Context) -> str:
    repository = delivery.repository
    number = delivery.number("pull_request", "number")
    # Closing is jobbot's own rule for stopping work, whoever closes: act with its authority.
    actor = Actor(id="github:pull-request-closed", source=Source.GITHUB,
                  display=f"{delivery.sender} (closed #{number})", github_permission="admin")
    cancelled = []
    for run in await ctx.pr_runs(repository, number):
        if run.run_state.is_final:
            continue
        try:
            await ctx.service.cancel(run.id, actor)
            cancelled.append(run.label)
        except Conflict:
            continue  # it finished meanwhile
    return "cancelled " + (", ".join(cancelled) or "nothing")

"""pull_request: record each head and when it became head; run `pull_requests: true` jobs for
trusted heads; closing cancels the PR's runs."""

from __future__ import annotations

import logging

from core.errors import BadInput, Conflict
from core.models import Source
from core.policy import Actor
from github_app import heads, keys
from github_app.context import Context, PullRequest
from github_app.pull_jobs import start_pull_request_jobs
from github_app.routing import Delivery, Router

logger = logging.getLogger(__name__)
router = Router()


@router.register("pull_request", "opened", "synchronize", "reopened")
async def on_head(delivery: Delivery, ctx: Context) -> str:
    repository = delivery.repository
    pr = PullRequest.from_payload(repository, delivery)
    head = heads.became_head(delivery)
    if head is not None:  # for /ok-to-test: which head a comment's author saw
        await ctx.db(ctx.service.store.record_pull_request_head, repository, pr.number,
                     head.sha, head.since)
    api = ctx.api(delivery)
    try:
        app = await ctx.repository_app(api, delivery)
    except BadInput as exc:
        return f"ignored: {exc}"
    if not any(job.pull_requests for job in app.jobs):
        return "ignored: no job runs on pull requests"
    if not await ctx.approved(pr):
        await ctx.refresh_pr_comment(api, repository, pr.number, [
            f"This pull request comes from a fork: nothing runs until someone with write access "
            f"comments `/ok-to-test` (for {pr.head_sha[:7]}; a new push needs a new approval)."])
        return f"fork head {pr.head_sha[:7]} waits for /ok-to-test"
    # The author's own permission decides, asked of GitHub now (not author_association).
    actor = await ctx.actor(api, repository, pr.author)
    started = await start_pull_request_jobs(ctx, delivery, pr, app, actor,
                                            keys.pull_request(delivery))
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

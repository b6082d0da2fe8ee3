"""The jobs a trusted pull request head runs (`pull_requests: true`): started by pull_request
events and by `/ok-to-test`."""

from __future__ import annotations

import logging

from core.catalog import JobRef
from core.errors import BadInput, PermissionDenied
from core.policy import Actor
from core.spec import AppSpec
from github_app.context import Context, PullRequest
from github_app.routing import Delivery

logger = logging.getLogger(__name__)


async def start_pull_request_jobs(ctx: Context, delivery: Delivery, pr: PullRequest,
                                  app: AppSpec, actor: Actor, key: str) -> list[str]:
    """Run the repository app's jobs marked `pull_requests: true` against the head (the
    caller has checked it is trusted); `key` identifies what asked (the event or comment)."""
    started = []
    for job in app.jobs:
        if not job.pull_requests:
            continue
        target = JobRef(app, job)
        try:
            result = await ctx.start(target, actor, repository=pr.repository, sha=pr.head_sha,
                                     ref=pr.head_ref, key=f"{key}:{target.key}",
                                     origin=pr.origin(delivery.installation_id, delivery.id))
        except (BadInput, PermissionDenied) as exc:
            logger.info("delivery %s: %s not started: %s", delivery.id, job.name, exc,
                        extra={"delivery_id": delivery.id})
            continue
        started.append(result.run.label)
    return started

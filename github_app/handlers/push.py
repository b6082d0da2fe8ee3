"""push: read app.yaml at the pushed sha, build, then run the jobs that follow the image.

GitHub's branch rules decided who may push, so the jobs that follow a build run whoever
pushed (a person, a bot, a merge queue); only a job whose `allow:` writes out
`github_permission` asks that of the sender, and a refusal is recorded as a skipped run, so
it shows on the commit's check run and in the job's Slack channel.
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import BadInput, ConfigError, Conflict, PermissionDenied
from core.models import RunState, Source
from core.policy import Actor
from core.spec import AppSpec, JobSpec, parse_app
from github_app import keys, render
from github_app.api import GitHubApiError, InstallationApi
from github_app.context import APP_FILE, Context
from github_app.routing import Delivery, Router

logger = logging.getLogger(__name__)
router = Router()
_ZERO_SHA = "0" * 40


def pushed_branch(delivery: Delivery) -> tuple[str, str] | None:
    """(branch, sha) of a push to a branch, or None for tags and deleted branches."""
    ref = delivery.get("ref")
    sha = delivery.get("after")
    if not isinstance(ref, str) or not ref.startswith("refs/heads/") or not isinstance(sha, str):
        return None
    if delivery.get("deleted") is True or sha == _ZERO_SHA:
        return None
    return ref.removeprefix("refs/heads/"), sha


def branch_head(delivery: Delivery) -> tuple[str, str, str] | None:
    """(repository, branch, sha) of a push to a branch: recorded as the delivery is answered,
    so work of older pushes to the branch, queued or under way, sees it is stale."""
    pushed = pushed_branch(delivery)
    repository = delivery.get("repository", "full_name")
    if pushed and isinstance(repository, str):
        return repository, pushed[0], pushed[1]
    return None


@router.register("push")
async def on_push(delivery: Delivery, ctx: Context) -> str:
    pushed = pushed_branch(delivery)
    if pushed is None:
        return "ignored: not a push to a branch"
    branch, sha = pushed
    repository = delivery.repository
    api = ctx.api(delivery)
    text = await api.file(repository, APP_FILE, sha)
    if text is None:
        return f"ignored: no {APP_FILE} at {sha[:7]}"
    try:
        app = parse_app(text, f"{repository}@{sha[:7]}:{APP_FILE}")
    except ConfigError as exc:
        await api.create_check_run(repository, {
            "name": f"jobbot: {APP_FILE}", "head_sha": sha, "status": "completed",
            "conclusion": "failure", "output": render.config_error_output(
                [str(p) for p in exc.problems])})
        return f"{APP_FILE} at {sha[:7]} is invalid ({len(exc.problems)} problems)"
    builds = [b for b in app.builds if branch in b.branches]
    if branch != delivery.get("repository", "default_branch") and not builds:
        return f"ignored: {branch} is not a build branch"
    claimed_by = await ctx.define_app(repository, app, sha, text)
    if claimed_by is not None:
        await api.create_check_run(repository, {
            "name": f"jobbot: {APP_FILE}", "head_sha": sha, "status": "completed",
            "conclusion": "failure", "output": render.app_claimed_output(app.app, claimed_by)})
        return f"refused: app {app.app} is defined by {claimed_by}"
    await _supersede(ctx, repository, branch, sha)
    if not builds:
        return f"registered app {app.app}; no build for {branch}"
    names = {b.name for b in builds}
    actor = await _pusher(api, repository, delivery.sender,
                          [j for j in app.jobs if j.image_from_build in names
                           and j.run_on_image_change != "never"])
    origin = {"repository": repository, "installation_id": delivery.installation_id,
              "branch": branch, "delivery": delivery.id}
    done = []
    for build in builds:
        done.append(await _build_and_deploy(ctx, delivery, app, build.name, branch, sha,
                                            actor, origin))
    return "; ".join(done)


async def _pusher(api: InstallationApi, repository: str, login: str,
                  jobs: list[JobSpec]) -> Actor:
    """Who pushed. Their permission is asked only when a job that follows the build restricts
    pushes; GitHub knows none for most bots (404): they have none."""
    permission = None
    if any(job.allow.restricts_pushes for job in jobs):
        try:
            permission = await api.permission(repository, login)
        except GitHubApiError as exc:
            logger.info("no permission of %s on %s: %s", login, repository, exc)
            permission = "none"
    return Actor(id=f"github:{login}", source=Source.GITHUB, display=login,
                 github_login=login, github_permission=permission, pushed=True)


async def _stale(ctx: Context, repository: str, branch: str, sha: str) -> bool:
    # The head is stored with each push's delivery row (so it holds for every replica and
    # across restarts): on PostgreSQL before the answer, on SQLite before its work starts.
    head = await ctx.db(ctx.service.store.branch_head, repository, branch)
    return head is not None and head != sha


async def _build_and_deploy(ctx: Context, delivery: Delivery, app: AppSpec, build: str,
                            branch: str, sha: str, actor: Actor, origin: dict[str, Any]) -> str:
    repository = delivery.repository
    if await _stale(ctx, repository, branch, sha):
        return f"{build}: superseded by a newer push to {branch}"
    # Keyed by the push (repository, ref, sha), not the delivery id: a replay reuses its runs.
    key = keys.push(delivery)
    outcome = await ctx.build(app, build, repository, sha, f"refs/heads/{branch}", actor,
                              f"{key}:{build}", origin)
    if outcome.state is not RunState.SUCCEEDED:
        return f"{build}: {outcome.state.value}"
    if await _stale(ctx, repository, branch, sha):
        return f"{build}: built, but superseded before deploying"
    started, refused = [], []
    for job in app.jobs:
        if job.image_from_build != build or job.run_on_image_change == "never":
            continue
        target = ctx.service.catalog.resolve(f"{app.app}/{job.name}")
        try:
            result = await ctx.start(target, actor, repository=repository, sha=sha,
                                     ref=f"refs/heads/{branch}", image=outcome.image,
                                     key=f"{key}:{target.key}", origin=origin)
        except PermissionDenied as exc:
            skipped = await ctx.service.record_refused(
                target, actor, reason=str(exc), ref=f"refs/heads/{branch}", sha=sha,
                image=outcome.image, idempotency_key=f"{key}:{target.key}", origin=origin)
            refused.append(skipped.run.label)
            continue
        except BadInput as exc:
            logger.warning("delivery %s: %s not started: %s", delivery.id, job.name, exc,
                           extra={"delivery_id": delivery.id})
            continue
        started.append(result.run.label)
    said = f"{build}: succeeded; started " + (", ".join(started) or "nothing")
    return said + (f"; refused {', '.join(refused)}" if refused else "")


async def _supersede(ctx: Context, repository: str, branch: str, sha: str) -> None:
    """Cancel still-queued runs of older pushes to the same branch."""
    actor = Actor(id="github:superseded", source=Source.GITHUB,
                  display=f"a newer push ({sha[:7]})", github_permission="admin")
    for run in await ctx.db(ctx.service.store.unfinished_runs):
        if (run.state == RunState.QUEUED.value and run.sha != sha
                and run.origin.get("repository") == repository
                and run.origin.get("branch") == branch and run.executor != "build"):
            try:
                await ctx.service.cancel(run.id, actor)
            except Conflict:
                continue

"""issue_comment: the PR commands `/run`, `/rerun`, `/cancel`, `/jobs`, `/ok-to-test`."""

from __future__ import annotations

import logging

from core.errors import BadInput, Conflict, JobbotError, PermissionDenied
from core.models import Run, RunState
from core.policy import GITHUB_PERMISSIONS, Actor
from github_app import commands, render
from github_app.api import InstallationApi
from github_app.context import Context, PullRequest
from github_app.routing import Delivery, Router

logger = logging.getLogger(__name__)
router = Router()


def _is_bot(delivery: Delivery) -> bool:
    login = str(delivery.get("comment", "user", "login") or "")
    return (delivery.get("comment", "user", "type") == "Bot" or login.endswith("[bot]")
            or delivery.get("comment", "performed_via_github_app") is not None
            or render.RUNS_MARKER in str(delivery.get("comment", "body") or ""))


@router.register("issue_comment", "created")
async def on_comment(delivery: Delivery, ctx: Context) -> str:
    if delivery.get("issue", "pull_request") is None:
        return "ignored: not a pull request"
    if _is_bot(delivery):
        return "ignored: comment by a bot"
    command = commands.parse(str(delivery.get("comment", "body") or ""))
    if command is None:
        return "ignored: no command"
    repository = delivery.repository
    number = delivery.number("issue", "number")
    comment_id = delivery.number("comment", "id")
    api = ctx.api(delivery)
    if not command.known:
        posted = await ctx.help_once(api, repository, number, command.name)
        return f"unknown command /{command.name}" + ("; help posted" if posted else "")
    await api.react(repository, comment_id, "eyes")
    try:
        note = await _execute(delivery, ctx, api, command, repository, number)
        ok = True
    except (BadInput, PermissionDenied, Conflict) as exc:
        note, ok = f"@{delivery.sender}: /{command.name}: {exc}", False
    await ctx.refresh_pr_comment(api, repository, number, [note] if note else None)
    await api.react(repository, comment_id, "rocket" if ok else "confused")
    return f"/{command.name}: {'done' if ok else 'refused'}" + (f": {note}" if note else "")


async def _execute(delivery: Delivery, ctx: Context, api: InstallationApi,
                   command: commands.Command, repository: str, number: int) -> str:
    if command.problem:
        raise BadInput(command.problem)
    if command.name == "jobs":
        # Read-only and not about the head: neither the permission nor the PR is asked for.
        return await _jobs(ctx, repository)
    login = delivery.sender
    actor = await ctx.actor(api, repository, login)
    pr = PullRequest.from_api(repository, await api.pull(repository, number))
    origin = pr.origin(delivery.installation_id, delivery.id)
    key = f"github:{delivery.id}"
    if command.name == "ok-to-test":
        return await _ok_to_test(delivery, ctx, actor, pr)
    if command.name == "cancel":
        return await _cancel(ctx, actor, pr, command.job)
    if not await ctx.approved(pr):
        raise PermissionDenied(f"this pull request comes from a fork: someone with write access "
                               f"must comment /ok-to-test for {pr.head_sha[:7]} first")
    if command.name == "run":
        assert command.job is not None
        target = ctx.resolve(repository, command.job)
        result = await ctx.start(target, actor, repository=repository, sha=pr.head_sha,
                                 ref=pr.head_ref, key=f"{key}:{target.key}", origin=origin,
                                 overrides=command.overrides)
        return f"@{login} started {result.run.label}"
    return await _rerun(ctx, actor, pr, command.job, key, origin)


async def _jobs(ctx: Context, repository: str) -> str:
    app = ctx.repo_app(repository)
    if app is None:
        raise BadInput("jobbot does not know this repository's app yet (push an app.yaml)")
    rows = []
    for job in app.jobs:
        summary = await ctx.service.job_summary(f"{app.app}/{job.name}")
        rows.append((job.name, job.description, summary.last_run))
    return "jobs of app " + app.app + ":\n\n" + render.jobs_comment(rows)


async def _ok_to_test(delivery: Delivery, ctx: Context, actor: Actor, pr: PullRequest) -> str:
    permission = actor.github_permission or "none"
    if permission not in GITHUB_PERMISSIONS or (
            GITHUB_PERMISSIONS.index(permission) < GITHUB_PERMISSIONS.index("write")):
        raise PermissionDenied(f"/ok-to-test needs write permission (you have {permission})")
    await ctx.db(ctx.service.store.approve_sha, pr.repository, pr.head_sha, pr.number,
                 actor.name)
    started = await start_pull_request_jobs(ctx, delivery, pr, actor)
    return (f"{actor.name} approved {pr.head_sha[:7]} for testing"
            + (f"; started {', '.join(started)}" if started else ""))


async def _cancel(ctx: Context, actor: Actor, pr: PullRequest, job: str | None) -> str:
    live = [r for r in await ctx.pr_runs(pr.repository, pr.number) if not r.run_state.is_final]
    if job is not None:
        target = ctx.resolve(pr.repository, job)
        live = [r for r in live if (r.app, r.job) == (target.app.app, target.job.name)]
    if not live:
        raise Conflict("nothing of this pull request is running" + (f" for {job}" if job else ""))
    cancelled = []
    for run in live:
        await ctx.service.cancel(run.id, actor)
        cancelled.append(run.label)
    return f"{actor.name} cancelled {', '.join(cancelled)}"


async def _rerun(ctx: Context, actor: Actor, pr: PullRequest, job: str | None, key: str,
                 origin: dict[str, object]) -> str:
    runs = await ctx.pr_runs(pr.repository, pr.number)
    picked: list[Run]
    if job is None:
        latest: dict[tuple[str, str], Run] = {}
        for run in runs:  # newest first: keep each job's latest run of the head sha
            if run.sha == pr.head_sha and run.executor != "build":
                latest.setdefault((run.app, run.job), run)
        picked = [r for r in latest.values()
                  if r.run_state in (RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED)]
        if not picked:
            raise Conflict(f"no failed runs of {pr.head_sha[:7]} to rerun")
    else:
        target = ctx.resolve(pr.repository, job)
        mine = [r for r in runs if (r.app, r.job) == (target.app.app, target.job.name)]
        if not mine:
            raise Conflict(f"{target.job.name} has not run on this pull request: use /run")
        picked = mine[:1]
    started = []
    for run in picked:
        result = await ctx.service.rerun(run.id, actor, idempotency_key=f"{key}:{run.id}",
                                         origin=dict(origin))
        started.append(result.run.label)
    return f"{actor.name} reran {', '.join(started)}"


async def start_pull_request_jobs(ctx: Context, delivery: Delivery, pr: PullRequest,
                                  actor: Actor) -> list[str]:
    """Run the jobs marked `pull_requests: true` against the head (a trusted head only)."""
    app = ctx.repo_app(pr.repository)
    if app is None:
        return []
    started = []
    for job in app.jobs:
        if not job.pull_requests:
            continue
        target = ctx.resolve(pr.repository, f"{app.app}/{job.name}")
        try:
            result = await ctx.start(target, actor, repository=pr.repository, sha=pr.head_sha,
                                     ref=pr.head_ref, key=f"github:{delivery.id}:{target.key}",
                                     origin=pr.origin(delivery.installation_id, delivery.id))
        except (BadInput, PermissionDenied) as exc:
            logger.info("delivery %s: %s not started: %s", delivery.id, job.name, exc,
                        extra={"delivery_id": delivery.id})
            continue
        except JobbotError:
            raise
        started.append(result.run.label)
    return started

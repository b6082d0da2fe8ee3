"""issue_comment: the PR commands `/run`, `/rerun`, `/cancel`, `/approve`, `/deny`, `/jobs`,
`/ok-to-test`."""

from __future__ import annotations

import asyncio
import logging

from core.catalog import JobRef
from core.errors import BadInput, Conflict, JobbotError, PermissionDenied
from core.locks import line_text
from core.models import Run, RunState
from core.parameters import secret_names
from core.policy import GITHUB_PERMISSIONS, Actor
from core.run_ids import is_run_id
from core.spec import AppSpec
from github_app import commands, heads, keys, markdown, render
from github_app.api import InstallationApi
from github_app.context import Context, PullRequest
from github_app.pull_jobs import start_pull_request_jobs
from github_app.routing import Delivery, Router

logger = logging.getLogger(__name__)
router = Router()
# Commands that name a job of the repository's app.
_NAMING_A_JOB = ("run", "rerun", "cancel")


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
    # 👀 (taken) goes beside the work, never in front of it.
    taken = asyncio.create_task(_react(delivery, api, comment_id, "eyes"))
    try:
        note = await _execute(delivery, ctx, api, command, repository, number)
        ok = True
    except (BadInput, PermissionDenied, Conflict) as exc:
        note, ok = f"@{delivery.sender}: /{command.name}: {exc}", False
    finally:
        await taken
    await ctx.refresh_pr_comment(api, repository, number, [note] if note else None)
    await _react(delivery, api, comment_id, "rocket" if ok else "confused")
    return f"/{command.name}: {'done' if ok else 'refused'}" + (f": {note}" if note else "")


async def _react(delivery: Delivery, api: InstallationApi, comment_id: int,
                 content: str) -> None:
    """A reaction is a decoration: when GitHub refuses it (the comment is gone, the App lacks
    the permission) or cannot be reached, it is logged and the command's work goes on."""
    try:
        await api.react(delivery.repository, comment_id, content)
    except JobbotError as exc:  # GitHubApiError, or TemporaryFailure: neither is retried
        logger.warning("delivery %s: no %s reaction on comment %s: %s", delivery.id, content,
                       comment_id, exc, extra={"delivery_id": delivery.id})


async def _execute(delivery: Delivery, ctx: Context, api: InstallationApi,
                   command: commands.Command, repository: str, number: int) -> str:
    if command.problem:
        raise BadInput(command.problem)
    # Only the repository's own app is reached: a name of another app is refused before
    # anyone's permission is asked.
    app = await ctx.repository_app(api, delivery)
    if command.name == "jobs":
        # Read-only and not about the head: neither the permission nor the PR is asked for.
        return await _jobs(ctx, app)
    target = (Context.job_of(app, repository, command.job)
              if command.job is not None and command.name in _NAMING_A_JOB else None)
    login = delivery.sender
    actor = await ctx.actor(api, repository, login)
    pr = PullRequest.from_api(repository, await api.pull(repository, number))
    origin = pr.origin(delivery.installation_id, delivery.id)
    # Keyed by the comment, not the delivery id (unsigned): a replay starts nothing new.
    key = keys.comment(delivery)
    if command.name == "ok-to-test":
        return await _ok_to_test(delivery, ctx, actor, pr, app, command, key)
    if command.name == "cancel":
        return await _cancel(ctx, actor, pr, app, target)
    if command.name in ("approve", "deny"):
        return await _decide(ctx, actor, pr, app, command)
    if not await ctx.approved(pr):
        raise PermissionDenied(f"this pull request comes from a fork: someone with write access "
                               f"must comment /ok-to-test for {pr.head_sha[:7]} first")
    if command.name == "run":
        assert target is not None
        secret = sorted(secret_names(target.job) & command.overrides.keys())
        if secret:
            # Everyone who can read the pull request reads its comments.
            raise BadInput(f"{', '.join(secret)} of {target.job.name} is secret, and a "
                           "comment is public: give it from Slack or the CLI instead")
        result = await ctx.start(target, actor, repository=repository, sha=pr.head_sha,
                                 ref=pr.head_ref, key=f"{key}:{target.key}", origin=origin,
                                 overrides=command.overrides)
        if result.joined:
            return (f"@{login} joined {result.run.label}, waiting for {result.run.lock}: the "
                    "same request is already in line")
        if not result.created:
            return f"@{login}: this comment already started {result.run.label}"
        place = await ctx.service.line_place(result.run)
        if place is not None:
            where = line_text(place, person=lambda run: markdown.text(run.actor))
            return f"@{login} queued {result.run.label}: {where}"
        return f"@{login} started {result.run.label}"
    return await _rerun(ctx, actor, pr, app, target, key, origin)


async def _jobs(ctx: Context, app: AppSpec) -> str:
    rows = []
    for job in app.jobs:
        summary = await ctx.service.job_summary(f"{app.app}/{job.name}")
        rows.append((job.name, job.description, summary.last_run))
    return "jobs of app " + app.app + ":\n\n" + render.jobs_comment(rows)


async def _ok_to_test(delivery: Delivery, ctx: Context, actor: Actor, pr: PullRequest,
                      app: AppSpec, command: commands.Command, key: str) -> str:
    """Vouch for one head sha: the one named, or the head when the comment was written (not
    when it is handled: a push in between is not what the maintainer saw)."""
    permission = actor.github_permission or "none"
    if permission not in GITHUB_PERMISSIONS or (
            GITHUB_PERMISSIONS.index(permission) < GITHUB_PERMISSIONS.index("write")):
        raise PermissionDenied(f"/ok-to-test needs write permission (you have {permission})")
    rows = await ctx.db(ctx.service.store.pull_request_heads, pr.repository, pr.number)
    known = [heads.Head(row.sha, row.since) for row in rows]
    if command.args:
        sha = heads.named_head(command.args[0], known, pr.head_sha)
    else:
        written = heads.timestamp(delivery.get("comment", "created_at"))
        sha = heads.head_when_written(known, pr.head_sha, written)
    await ctx.db(ctx.service.store.approve_sha, pr.repository, sha, pr.number, actor.name)
    if sha != pr.head_sha:
        return (f"{actor.name} approved {sha[:7]} for testing; the head is now "
                f"{pr.head_sha[:7]}, which needs its own /ok-to-test")
    started = await start_pull_request_jobs(ctx, delivery, pr, app, actor, key)
    return (f"{actor.name} approved {sha[:7]} for testing"
            + (f"; started {', '.join(started)}" if started else ""))


async def _cancel(ctx: Context, actor: Actor, pr: PullRequest, app: AppSpec,
                  target: JobRef | None) -> str:
    live = [r for r in await ctx.pr_runs(pr.repository, pr.number)
            if not r.run_state.is_final and r.app == app.app]
    if target is not None:
        live = [r for r in live if r.job == target.job.name]
    if not live:
        raise Conflict("nothing of this pull request is running"
                       + (f" for {target.job.name}" if target else ""))
    cancelled = []
    for run in live:
        await ctx.service.cancel(run.id, actor)
        cancelled.append(run.label)
    return f"{actor.name} cancelled {', '.join(cancelled)}"


async def _decide(ctx: Context, actor: Actor, pr: PullRequest, app: AppSpec,
                  command: commands.Command) -> str:
    """`/approve` or `/deny` the run of this pull request waiting for approval: the one
    there is, or the one of the job (or the run) named when several wait."""
    waiting = [r for r in await ctx.pr_runs(pr.repository, pr.number)
               if r.run_state is RunState.NEEDS_APPROVAL and r.app == app.app]
    named = command.job
    if named is not None:
        if "#" in named or is_run_id(named):
            run = await ctx.service.get_run(named if "/" in named or is_run_id(named)
                                            else f"{app.app}/{named}")
            waiting = [r for r in waiting if r.id == run.id]
        else:
            target = Context.job_of(app, pr.repository, named)
            waiting = [r for r in waiting if r.job == target.job.name]
    if not waiting:
        raise Conflict("nothing of this pull request waits for approval"
                       + (f" for {named}" if named else ""))
    if len(waiting) > 1:
        labels = ", ".join(r.label for r in waiting)
        raise BadInput(f"several runs wait for approval ({labels}): say which, e.g. "
                       f"/{command.name} {waiting[0].job}#{waiting[0].number}")
    run = waiting[0]
    if command.name == "deny":
        await ctx.service.deny(run.id, actor)
        return f"{actor.name} denied {run.label}: it will not run"
    result = await ctx.service.approve(run.id, actor)
    if result.outcome == "released":
        return (f"{actor.name} approved {run.label} ({len(result.approved)} of "
                f"{result.required}): it starts")
    return (f"{actor.name} approved {run.label}: {len(result.approved)} of "
            f"{result.required} approvals")


async def _rerun(ctx: Context, actor: Actor, pr: PullRequest, app: AppSpec,
                 target: JobRef | None, key: str, origin: dict[str, object]) -> str:
    runs = [r for r in await ctx.pr_runs(pr.repository, pr.number) if r.app == app.app]
    picked: list[Run]
    if target is None:
        latest: dict[str, Run] = {}
        for run in runs:  # newest first: keep each job's latest run of the head sha
            if run.sha == pr.head_sha and run.executor != "build":
                latest.setdefault(run.job, run)
        picked = [r for r in latest.values()
                  if r.run_state in (RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED,
                                     RunState.DENIED, RunState.EXPIRED)]
        if not picked:
            raise Conflict(f"no failed runs of {pr.head_sha[:7]} to rerun")
    else:
        mine = [r for r in runs if r.job == target.job.name]
        if not mine:
            raise Conflict(f"{target.job.name} has not run on this pull request: use /run")
        picked = mine[:1]
    started = []
    for run in picked:
        # Per job, not per run: a replay finds this rerun as the job's latest run.
        result = await ctx.service.rerun(run.id, actor,
                                         idempotency_key=f"{key}:{run.app}/{run.job}",
                                         origin=dict(origin))
        started.append(result.run.label)
    return f"{actor.name} reran {', '.join(started)}"

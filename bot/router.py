"""The `/job` command router: parse -> JobService -> render, shared by Slack and `jobbot chat`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot import render
from bot.commands import USAGE, Command, parse
from bot.render import Reply
from core.errors import BadInput, Conflict, JobbotError, PermissionDenied
from core.links import Links
from core.masking import Masker, is_sensitive_key
from core.models import Run, SlackConfirmation, Source, utcnow
from core.policy import Action, Actor, decide, needs_confirmation
from core.service import JobService
from core.spec import JobSpec
from core.store import Store

logger = logging.getLogger(__name__)
CONFIRM_TTL = 5 * 60.0


class GroupResolver(Protocol):
    async def groups_of(self, user: str, groups: tuple[str, ...]) -> frozenset[str]: ...


@dataclass(frozen=True)
class Request:
    """A command as it arrived: its text, who sent it, from where, and its idempotency key."""

    text: str
    actor: Actor
    idempotency_key: str | None = None
    origin: dict[str, Any] = field(default_factory=dict)
    # `jobbot chat --yes`: the operator has already confirmed.
    confirmed: bool = False


@dataclass(frozen=True)
class Pending:
    """A run waiting for its requester to press Run."""

    id: str
    requester: str
    command: Command
    actor: Actor
    origin: dict[str, Any]
    expires: datetime


class Confirmations:
    """Runs of `confirm: true` jobs waiting for a yes, kept in the database (any replica, and a
    restarted one, can honour the click) and expiring after a few minutes."""

    def __init__(self, store: Store, ttl: float = CONFIRM_TTL,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.ttl = ttl
        self._clock = clock

    async def add(self, command: Command, actor: Actor, origin: dict[str, Any]) -> Pending:
        requester = actor.slack_user or actor.id
        pending = Pending(secrets.token_urlsafe(12), requester, command, actor, origin,
                          self._clock() + timedelta(seconds=self.ttl))
        row = SlackConfirmation(
            id=pending.id, requester=requester[:64],
            command={"job": command.job, "overrides": command.overrides, "ref": command.ref},
            actor=_actor_fields(actor), origin=origin, expires_at=pending.expires)
        await asyncio.to_thread(self.store.add_confirmation, row)
        return pending

    async def take(self, pending_id: str, user: str, *, answer: str = "confirmed",
                   key: str | None = None) -> Pending:
        """The pending run, answered; only its requester may answer it, once, and in time.

        The same `key` (the click's, replayed after a restart) gets the same pending run again.
        """
        key = key or secrets.token_hex(8)
        row = await asyncio.to_thread(self.store.answer_confirmation, pending_id[:32], user,
                                      answer, key, self._clock())
        if row is None:
            raise Conflict("this confirmation has expired or was answered already; "
                           "send the command again")
        if row.requester != user:
            raise PermissionDenied(f"only <@{row.requester}>, who asked, can confirm this")
        if row.answer != answer or row.answer_key != key:
            raise Conflict("this confirmation has expired or was answered already; "
                           "send the command again")
        command = Command("run", job=row.command.get("job"),
                          overrides=dict(row.command.get("overrides") or {}),
                          ref=row.command.get("ref"))
        return Pending(row.id, row.requester, command, _actor_from(row.actor), dict(row.origin),
                       row.expires_at)


def _actor_fields(actor: Actor) -> dict[str, Any]:
    fields = dataclasses.asdict(actor)
    fields["source"] = actor.source.value
    fields["slack_usergroups"] = sorted(actor.slack_usergroups)
    return fields


def _actor_from(fields: dict[str, Any]) -> Actor:
    values = dict(fields)
    values["source"] = Source(values["source"])
    values["slack_usergroups"] = frozenset(values.get("slack_usergroups") or ())
    return Actor(**values)


class Router:
    """Answers `/job` commands for one actor at a time; every command lands in the audit log."""

    def __init__(self, service: JobService, links: Links, *,
                 groups: GroupResolver | None = None,
                 confirmations: Confirmations | None = None) -> None:
        self.service = service
        self.links = links
        self.groups = groups
        self.confirmations = confirmations or Confirmations(service.store)

    async def handle(self, request: Request) -> Reply:
        described = request.text.strip()[:200]
        try:
            command = parse(request.text)
            described = command.describe()
            answer = await self._dispatch(command, request)
            result = "ok"
        except PermissionDenied as exc:
            answer, result = render.error(str(exc)), "denied"
        except (BadInput, Conflict) as exc:
            answer, result = render.error(str(exc)), "rejected"
        except JobbotError as exc:
            logger.warning("command %r failed: %s", described, exc)
            answer, result = render.error(str(exc)), "failed"
        where = request.origin.get("slack_channel")
        detail = f"in {where}" if where else None
        await self.service.audit(request.actor, "command", f"/job {described}"[:255], result,
                                 detail)
        return answer

    async def confirm(self, pending_id: str, user: str, idempotency_key: str) -> Reply:
        """The requester pressed Run on a confirmation."""
        pending = await self.confirmations.take(pending_id, user, key=idempotency_key)
        actor = pending.actor
        try:
            answer = await self._trigger(pending.command, actor, idempotency_key, pending.origin)
            result = "ok"
        except PermissionDenied as exc:
            answer, result = render.error(str(exc)), "denied"
        except JobbotError as exc:
            answer, result = render.error(str(exc)), "rejected"
        await self.service.audit(actor, "confirm", f"/job {pending.command.describe()}"[:255],
                                 result)
        return answer

    async def decline(self, pending_id: str, actor: Actor, key: str) -> Reply:
        """The requester pressed Cancel on a confirmation: nothing runs."""
        pending = await self.confirmations.take(pending_id, actor.slack_user or "",
                                                answer="declined", key=key)
        await self.service.audit(actor, "confirm", f"/job {pending.command.describe()}"[:255],
                                 "declined")
        return render.plain(f"not run: {pending.command.describe()}")

    async def rerun(self, run_id: str, actor: Actor, idempotency_key: str,
                    origin: dict[str, Any]) -> Reply:
        """The Rerun button: same job, ref and overrides; `confirm: true` jobs still ask."""
        try:
            answer = await self._rerun(run_id, Request("", actor, idempotency_key, origin))
            outcome = "ok"
        except PermissionDenied as exc:
            answer, outcome = render.error(str(exc)), "denied"
        except JobbotError as exc:
            answer, outcome = render.error(str(exc)), "rejected"
        where = origin.get("slack_channel")
        await self.service.audit(actor, "rerun", run_id, outcome, f"in {where}" if where else None)
        return answer

    # -- commands -------------------------------------------------------------------------

    async def _dispatch(self, command: Command, request: Request) -> Reply:
        name = command.name
        if name == "help":
            return help_reply(command.topic)
        if name == "list":
            return render.job_list(await self.service.jobs())
        if name == "status":
            return await self._status(command)
        if name == "history":
            assert command.job is not None
            target = self.service.catalog.resolve(command.job)
            runs = await self.service.history(target.key, limit=15)
            return render.run_list(f"History of {target.key}", runs, self.links)
        if name == "logs":
            return await self._logs(command)
        if name == "run":
            return await self._run(command, request)
        if name == "cancel":
            return await self._cancel(command, request.actor)
        if name == "rerun":
            assert command.run is not None
            return await self._rerun(command.run, request)
        return await self._pause(command, request.actor, pause=name == "pause")

    async def _run(self, command: Command, request: Request, *,
                   rerun_of: Run | None = None) -> Reply:
        assert command.job is not None
        target = self.service.catalog.resolve(command.job)
        actor = await self.actor_for(target.job, request.actor)
        if needs_confirmation(target.job, actor) and not request.confirmed:
            decision = decide(target.job, Action.RUN, actor)
            if not decision.allowed:
                raise PermissionDenied(decision.reason)
            # Refused overrides are refused now, not after a click.
            await self.service.check_overrides(target, command.overrides, rerun_of=rerun_of)
            pending = await self.confirmations.add(command, actor, request.origin)
            return render.confirmation(target.key, command.describe(), pending.id,
                                       max(1, round(self.confirmations.ttl / 60)))
        return await self._trigger(command, actor, request.idempotency_key, request.origin)

    async def _trigger(self, command: Command, actor: Actor, key: str | None,
                       origin: dict[str, Any]) -> Reply:
        assert command.job is not None
        result = await self.service.trigger(command.job, actor, ref=command.ref,
                                            overrides=command.overrides, idempotency_key=key,
                                            origin=origin)
        others = [f"#{r.number} ({r.state})" for r in result.active]
        return render.started(result.run, result.created, self.links, others)

    async def _rerun(self, run: str, request: Request) -> Reply:
        """A run's job again, with its ref and overrides (`/job rerun RUN` and the button)."""
        old = await self.service.get_run(run)
        target = self.service.catalog.resolve(f"{old.app}/{old.job}")
        actor = await self.actor_for(target.job, request.actor)
        if needs_confirmation(target.job, actor) and not request.confirmed:
            command = Command("run", job=target.key, overrides=dict(old.overrides), ref=old.ref)
            return await self._run(command, dataclasses.replace(request, actor=actor),
                                   rerun_of=old)
        result = await self.service.rerun(old.id, actor, idempotency_key=request.idempotency_key,
                                          origin=request.origin)
        return render.started(result.run, result.created, self.links)

    async def _cancel(self, command: Command, actor: Actor) -> Reply:
        assert command.run is not None
        run = await self.service.get_run(command.run)
        target = self.service.catalog.resolve(f"{run.app}/{run.job}")
        requested = await self.service.cancel(run.id, await self.actor_for(target.job, actor))
        text = f":black_square_for_stop: cancel requested for {render.run_title(requested)}"
        return render.reply(text, [render.section(text)])

    async def _pause(self, command: Command, actor: Actor, *, pause: bool) -> Reply:
        assert command.job is not None
        target = self.service.catalog.resolve(command.job)
        actor = await self.actor_for(target.job, actor)
        act = self.service.pause if pause else self.service.resume
        changed = await act(target.key, actor)
        word = "paused" if pause else "resumed"
        return render.plain(f"{target.key} {word}" if changed
                            else f"{target.key} was already {word}")

    async def _status(self, command: Command) -> Reply:
        if command.run:
            detail = await self.service.detail(command.run)
            return render.run_status(detail.run, detail.attempts, self.links)
        if command.job:
            return render.job_status(await self.service.job_summary(command.job), self.links)
        runs = [r for r in await self.service.runs(limit=50) if not r.run_state.is_final]
        return render.run_list("Active runs", runs, self.links)

    async def _logs(self, command: Command) -> Reply:
        assert command.run is not None
        run = await self.service.get_run(command.run)
        lines = await last_lines(self.service, run.id, command.tail)
        masker = masker_for(self.service, run.app, run.job, run.overrides)
        return render.log_tail(run, [masker.mask(line) for line in lines])

    async def actor_for(self, job: JobSpec, actor: Actor) -> Actor:
        """The actor with the job's Slack user groups they belong to (asked only when needed)."""
        wanted = job.allow.slack_usergroups
        if not wanted or self.groups is None or not actor.slack_user:
            return actor
        if actor.slack_user in job.allow.slack_users:
            return actor
        found = await self.groups.groups_of(actor.slack_user, wanted)
        return dataclasses.replace(actor, slack_usergroups=actor.slack_usergroups | found)


def help_reply(topic: str | None) -> Reply:
    if topic:
        line, what = USAGE[topic]
        text = f"`/job {line}`: {what}"
    else:
        text = "*/job commands*\n" + "\n".join(f"`/job {line}`: {what}"
                                               for line, what in USAGE.values())
    return render.reply(text, [render.section(text)])


async def last_lines(service: JobService, run_id: str, count: int) -> list[str]:
    """The last `count` lines of a run's log, across its attempts."""
    lines: list[str] = []
    async for _attempt, line in service.logs(run_id):
        lines.append(line)
        if len(lines) > count:
            del lines[0]
    return lines


def masker_for(service: JobService, app: str, job: str, overrides: dict[str, str]) -> Masker:
    """Masks sensitive env and override values again before anything reaches Slack."""
    env: dict[str, str] = {}
    try:
        env.update(service.catalog.resolve(f"{app}/{job}").job.env)
    except JobbotError:
        logger.info("job %s/%s is no longer defined; masking overrides only", app, job)
    env.update(overrides)
    return Masker(v for k, v in env.items() if is_sensitive_key(k))

"""The `/job` command router: parse -> JobService -> render, shared by Slack and `jobbot chat`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot import render
from bot.commands import USAGE, Command, parse, without_values
from bot.render import Reply
from core.errors import BadInput, Conflict, JobbotError, PermissionDenied
from core.links import Links
from core.masking import Masker, is_sensitive_key
from core.models import Run, SlackConfirmation, Source, utcnow
from core.parameters import ParameterErrors, check_parameters, secret_names
from core.policy import Action, Actor, decide, needs_confirmation
from core.sealing import Sealer, Unsealable
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
                 clock: Callable[[], datetime] = utcnow, sealer: Sealer | None = None) -> None:
        self.store = store
        self.ttl = ttl
        self._clock = clock
        self._sealer = sealer or Sealer()

    async def add(self, command: Command, actor: Actor, origin: dict[str, Any],
                  hidden: frozenset[str] = frozenset()) -> Pending:
        """Keep `command` until its requester answers; the values of the `hidden` names
        (secret parameters) are kept sealed."""
        requester = actor.slack_user or actor.id
        pending = Pending(secrets.token_urlsafe(12), requester, command, actor, origin,
                          self._clock() + timedelta(seconds=self.ttl))
        plain = {k: v for k, v in command.overrides.items() if k not in hidden}
        sealed = self._sealer.seal({k: v for k, v in command.overrides.items() if k in hidden})
        row = SlackConfirmation(
            id=pending.id, requester=requester[:64],
            command={"job": command.job, "overrides": plain, "sealed": sealed,
                     "ref": command.ref},
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
        try:
            opened = self._sealer.open(dict(row.command.get("sealed") or {}))
        except Unsealable:
            raise Conflict("this confirmation was sealed with another JOBBOT_SECRET_KEY; "
                           "send the command again") from None
        command = Command("run", job=row.command.get("job"),
                          overrides={**(row.command.get("overrides") or {}), **opened},
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
        self.confirmations = confirmations or Confirmations(service.store,
                                                            sealer=service.sealer)

    def hidden(self, job: str | None, given: Iterable[str] = ()) -> frozenset[str]:
        """The names of the secret parameters of `job`; of the `given` names, every one when
        `job` names no single job (a typo, or a name in several apps): which are secret
        cannot be known, so none is recorded or audited in the clear."""
        if job is None:
            return frozenset()
        try:
            return secret_names(self.service.catalog.resolve(job).job)
        except JobbotError:
            return frozenset(given)

    async def handle(self, request: Request, command: Command | None = None) -> Reply:
        """Answer `request` (or the `command` it stands for, when it came from a form)."""
        described = without_values(request.text.strip())[:200]
        try:
            command = command or parse(request.text)
            described = command.describe(self.hidden(command.job, command.overrides))
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

    async def refused(self, text: str, actor: Actor, origin: dict[str, Any]) -> None:
        """A command that could not be parsed (answered already): audited, values masked."""
        where = origin.get("slack_channel")
        await self.service.audit(actor, "command", f"/job {without_values(text.strip())[:200]}"
                                 [:255], "rejected", f"in {where}" if where else None)

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
        described = pending.command.describe(self.hidden(pending.command.job))
        await self.service.audit(actor, "confirm", f"/job {described}"[:255], result)
        return answer

    async def decline(self, pending_id: str, actor: Actor, key: str) -> Reply:
        """The requester pressed Cancel on a confirmation: nothing runs."""
        pending = await self.confirmations.take(pending_id, actor.slack_user or "",
                                                answer="declined", key=key)
        described = pending.command.describe(self.hidden(pending.command.job))
        await self.service.audit(actor, "confirm", f"/job {described}"[:255], "declined")
        return render.plain(f"not run: {described}")

    async def rerun(self, run_id: str, actor: Actor, idempotency_key: str,
                    origin: dict[str, Any], *, changes: dict[str, str] | None = None) -> Reply:
        """The Rerun button: same job, ref and overrides; `confirm: true` jobs still ask.
        `changes` (a submitted Rerun with changes form) replace values of the run."""
        try:
            answer = await self._rerun(run_id, Request("", actor, idempotency_key, origin),
                                       changes)
            outcome = "ok"
        except PermissionDenied as exc:
            answer, outcome = render.error(str(exc)), "denied"
        except JobbotError as exc:
            answer, outcome = render.error(str(exc)), "rejected"
        where = origin.get("slack_channel")
        await self.service.audit(actor, "rerun", run_id, outcome, f"in {where}" if where else None)
        return answer

    async def decide(self, run_id: str, actor: Actor, *, approve: bool) -> Reply:
        """The Approve or Deny button of a run waiting for approval (audited by the service)."""
        try:
            run = await self.service.get_run(run_id)
            target = self.service.catalog.resolve(f"{run.app}/{run.job}")
            actor = await self.approver_for(target.job, actor)
            decide = self.service.approve if approve else self.service.deny
            result = await decide(run.id, actor)
        except JobbotError as exc:
            return render.error(str(exc))
        return render.decided(result, self.links)

    async def approver_for(self, job: JobSpec, actor: Actor) -> Actor:
        """The actor with the Slack user groups of the job's `approval.from` (and `allow:`,
        which decides when `from` names nobody) they belong to."""
        wanted = tuple(job.approval.from_.slack_usergroups) if job.approval else ()
        wanted += tuple(g for g in job.allow.slack_usergroups if g not in wanted)
        if not wanted or self.groups is None or not actor.slack_user:
            return actor
        found = await self.groups.groups_of(actor.slack_user, wanted)
        return dataclasses.replace(actor, slack_usergroups=actor.slack_usergroups | found)

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
        form = self._form_for(command, target.key, target.job, request)
        if form is not None or (needs_confirmation(target.job, actor) and not request.confirmed):
            decision = decide(target.job, Action.RUN, actor)
            if not decision.allowed:
                raise PermissionDenied(decision.reason)
        if form is not None:
            return form
        if needs_confirmation(target.job, actor) and not request.confirmed:
            # Refused values are refused now, not after a click.
            await self.service.check_parameters(target, command.overrides, rerun_of=rerun_of)
            hidden = secret_names(target.job)
            pending = await self.confirmations.add(command, actor, request.origin, hidden)
            return render.confirmation(target.key, command.describe(hidden), pending.id,
                                       max(1, round(self.confirmations.ttl / 60)))
        return await self._trigger(command, actor, request.idempotency_key, request.origin)

    def _form_for(self, command: Command, key: str, job: JobSpec,
                  request: Request) -> Reply | None:
        """The form to ask for the job's parameters, with `--form` or when a required one is
        missing (and the request came from Slack, which can show it); else None."""
        if command.form and not job.parameters:
            raise BadInput(f"{key} has no parameters to fill in: run it without --form")
        missing = [p.name for p in job.parameters
                   if p.required and p.default is None and p.name not in command.overrides]
        if not (command.form or missing) or request.actor.source is not Source.SLACK:
            return None
        hidden = secret_names(job)
        values = {p.name: p.default for p in job.parameters if p.default is not None}
        values.update((k, v) for k, v in command.overrides.items() if k not in hidden)
        form = render.Form(key, job.parameters, values, ref=command.ref,
                           channel=request.origin.get("slack_channel"))
        return render.form_reply(form, missing)

    async def submit(self, form: dict[str, Any], values: dict[str, str], actor: Actor,
                     key: str) -> Reply:
        """A submitted form (checked before its ack): a run as the command would start it
        (policy, confirmation), or a rerun with these changes."""
        origin = {"slack_channel": actor.slack_channel, "slack_user": actor.slack_user}
        rerun_of = form.get("rerun_of")
        if isinstance(rerun_of, str) and rerun_of:
            return await self.rerun(rerun_of, actor, key, origin, changes=values)
        ref = form.get("ref") if isinstance(form.get("ref"), str) else None
        command = Command("run", job=str(form.get("job") or ""), overrides=values, ref=ref)
        return await self.handle(Request(f"run {command.job}", actor, key, origin), command)

    def check_form(self, form: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
        """Why a submitted form cannot start a run, by parameter name (empty if it can): the
        job's parameters checked in memory, so the answer fits in the submission's ack."""
        try:
            job = self.service.catalog.resolve(str(form.get("job") or "")).job
        except JobbotError as exc:
            return {"": str(exc)}
        kept = set(form.get("kept") or ())
        try:
            check_parameters(job, values)
        except ParameterErrors as exc:
            # A secret left empty on a rerun keeps the run's value.
            return {k: v for k, v in exc.errors.items() if k not in kept}
        return {}

    async def rerun_form(self, run_id: str, actor: Actor) -> Reply:
        """The Rerun with changes button: the job's form, filled in from the run."""
        try:
            run = await self.service.get_run(run_id)
            target = self.service.catalog.resolve(f"{run.app}/{run.job}")
            actor = await self.actor_for(target.job, actor)
            decision = decide(target.job, Action.RUN, actor)
            if not decision.allowed:
                raise PermissionDenied(decision.reason)
        except JobbotError as exc:
            await self.service.audit(actor, "rerun", run_id, "rejected", str(exc)[:255])
            return render.error(str(exc))
        names = {p.name for p in target.job.parameters}
        # A secret-looking value is not put back into the form either: empty keeps it.
        values = {k: v for k, v in run.overrides.items()
                  if k in names and not is_sensitive_key(k)}
        kept = tuple(k for k in [*run.secret_parameters, *run.overrides]
                     if k in names and k not in values)
        form = render.Form(target.key, target.job.parameters, values, ref=run.ref,
                           rerun_of=run.id, rerun_label=run.label, kept=kept,
                           channel=actor.slack_channel)
        return render.form_reply(form)

    async def _trigger(self, command: Command, actor: Actor, key: str | None,
                       origin: dict[str, Any]) -> Reply:
        assert command.job is not None
        result = await self.service.trigger(command.job, actor, ref=command.ref,
                                            overrides=command.overrides, idempotency_key=key,
                                            origin=origin)
        others = [f"#{r.number} ({r.state})" for r in result.active]
        return render.started(result.run, result.created, self.links, others,
                              joined=result.joined,
                              line=await self.service.line_place(result.run))

    async def _rerun(self, run: str, request: Request,
                     changes: dict[str, str] | None = None) -> Reply:
        """A run's job again, with its ref and values (`/job rerun RUN`, the buttons)."""
        old = await self.service.get_run(run)
        target = self.service.catalog.resolve(f"{old.app}/{old.job}")
        actor = await self.actor_for(target.job, request.actor)
        if needs_confirmation(target.job, actor) and not request.confirmed:
            values = self.service.run_values(old, changes)
            command = Command("run", job=target.key, overrides=values, ref=old.ref)
            return await self._run(command, dataclasses.replace(request, actor=actor),
                                   rerun_of=old)
        result = await self.service.rerun(old.id, actor, idempotency_key=request.idempotency_key,
                                          origin=request.origin, changes=changes)
        return render.started(result.run, result.created, self.links, joined=result.joined,
                              line=await self.service.line_place(result.run))

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
            return render.run_status(detail.run, detail.attempts, self.links,
                                     await self.service.line_place(detail.run))
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

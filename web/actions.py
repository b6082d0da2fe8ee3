"""Run now, cancel, rerun, approve and deny from the pages: who is signed in, a same-site
post, core policy, a confirmation for `confirm: true` jobs, and the overrides rule."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from core.catalog import JobRef
from core.errors import BadInput, Conflict, NotFound, PermissionDenied
from core.masking import MASK, is_sensitive_key, mask_mapping
from core.models import Run, RunState
from core.parameters import secret_names
from core.policy import Action, Actor, decide, may_approve, needs_confirmation
from core.sealing import Unsealable
from core.spec import JobSpec, ParameterSpec
from web.context import WEB, WebContext

logger = logging.getLogger(__name__)


async def actor_for(ctx: WebContext, request: web.Request, job: JobSpec) -> Actor:
    """The page's actor, with the job's Slack user groups they belong to (asked only if needed)."""
    actor = ctx.access.actor(request)
    wanted = job.allow.slack_usergroups
    if (not wanted or ctx.directory is None or not actor.slack_user
            or actor.slack_user in job.allow.slack_users):
        return actor
    found = await ctx.directory.groups_of(actor.slack_user, wanted)
    return dataclasses.replace(actor, slack_usergroups=actor.slack_usergroups | found)


async def approver_for(ctx: WebContext, request: web.Request, job: JobSpec) -> Actor:
    """The page's actor, with the Slack user groups of the job's `approval.from` (and of its
    `allow:`, which decides when `from` names nobody) they belong to."""
    actor = await actor_for(ctx, request, job)
    wanted = job.approval.from_.slack_usergroups if job.approval else ()
    if not wanted or ctx.directory is None or not actor.slack_user:
        return actor
    found = await ctx.directory.groups_of(actor.slack_user, wanted)
    return dataclasses.replace(actor, slack_usergroups=actor.slack_usergroups | found)


@dataclass(frozen=True)
class Offer:
    """The buttons this person may press on a run's page, or why not."""

    cancel: bool = False
    rerun: bool = False
    refusal: str = ""
    # Approve and Deny, on a run waiting for approval that this person may decide.
    approve: bool = False


async def offered(ctx: WebContext, request: web.Request, run: Run) -> Offer:
    """Cancel while the run goes, rerun once it is over, if core policy lets this person.

    Only a hint for the page: the service decides again (and audits) when they are pressed."""
    if not ctx.access.identified(request):
        return Offer()
    try:
        job = ctx.service.catalog.resolve(f"{run.app}/{run.job}").job
    except NotFound:
        return Offer(refusal=f"{run.job} is no longer in app.yaml")
    actor = await actor_for(ctx, request, job)
    final = run.run_state.is_final
    decision = decide(job, Action.RUN if final else Action.CANCEL, actor)
    approve = False
    if run.run_state is RunState.NEEDS_APPROVAL and job.approval is not None:
        approver = await approver_for(ctx, request, job)
        approve = may_approve(job, approver).allowed and (
            job.approval.allow_self or approver.id != run.actor)
    return Offer(cancel=decision.allowed and not final, rerun=decision.allowed and final,
                 refusal=decision.reason, approve=approve)


# A form's fields: `p:NAME` for a parameter, `env:NAME` for a key of the job's `env`, and
# `sealed:NAME` for a secret parameter carried through a confirmation page (sealed, never in
# the clear).
_PARAMETER_FIELD = "p:"
_ENV_FIELD = "env:"
_SEALED_FIELD = "sealed:"
# A Run now form's key: made by the page, so a form sent twice starts one run.
_FORM_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True)
class RunOffer:
    """The Run now form of a job's page: may this person run it, a field per parameter
    (placeholders show defaults, a secret's masked) and per key of its `env` (masked when the
    name looks secret), and a fresh key."""

    allowed: bool
    refusal: str
    parameters: list[tuple[ParameterSpec, str, str]]
    fields: list[tuple[str, str]]
    key: str


async def run_offered(ctx: WebContext, request: web.Request, job: JobSpec) -> RunOffer:
    """Run now if core policy lets this person run `job` (a hint: the service decides again)."""
    parameters = [(p, "", _placeholder(p)) for p in job.parameters]
    fields = [(name, MASK if value and is_sensitive_key(name) else value)
              for name, value in job.env.items()]
    key = secrets.token_urlsafe(16)
    if not ctx.access.identified(request):
        return RunOffer(False, "", parameters, fields, key)
    decision = decide(job, Action.RUN, await actor_for(ctx, request, job))
    return RunOffer(decision.allowed, decision.reason, parameters, fields, key)


def _placeholder(parameter: ParameterSpec) -> str:
    if parameter.default is None:
        return "required" if parameter.required else ""
    return MASK if parameter.secret else f"default: {parameter.default}"


async def run_now(request: web.Request) -> web.Response:
    """POST /jobs/{name}/run: a run of the job, as `/job run` in Slack would start it."""
    ctx = request.app[WEB]
    form = await _form(ctx, request)
    if isinstance(form, web.Response):
        return form
    try:
        target = ctx.service.catalog.resolve(request.match_info["name"])
    except NotFound as exc:
        return ctx.error(404, "No such job", str(exc))
    except BadInput as exc:
        return ctx.error(400, "Not a job", str(exc))
    key = form.get("key")
    if not isinstance(key, str) or not _FORM_KEY.fullmatch(key):
        return ctx.error(400, "Bad form", "This form has no valid key: open the job's page "
                         "again and press Run now there.")
    try:
        given = _given(ctx, form, target.job)
        actor = await actor_for(ctx, request, target.job)
        if needs_confirmation(target.job, actor) and form.get("confirmed") != "yes":
            return await _confirmation(ctx, target, actor, given,
                                       f"/jobs/{target.job.name}/run", {"key": key})
        digest = hashlib.sha256(actor.id.encode()).hexdigest()[:16]
        result = await ctx.service.trigger(target.key, actor, overrides=given,
                                           idempotency_key=f"web:{digest}:{key}")
    except PermissionDenied as exc:
        logger.info("page run of %s refused: %s", target.key, exc)
        return ctx.error(403, f"You may not run {target.job.name}", str(exc))
    except (Conflict, BadInput) as exc:
        return ctx.error(409 if isinstance(exc, Conflict) else 400,
                         f"Could not run {target.job.name}", str(exc))
    run = result.run
    if result.created:
        logger.info("page run of %s by %s", target.key, actor.id, extra={"run_id": run.id})
    raise web.HTTPSeeOther(f"/runs/{run.id}?t={ctx.access.links.token(run.id)}")


# How long a confirmation page's sealed values stay good.
_SEALED_FOR = 15 * 60


def _given(ctx: WebContext, form: MultiDictProxy[Any], job: JobSpec | None) -> dict[str, str]:
    """The values a form gives, by name: its parameter and `env` fields that hold a value (an
    empty one keeps the job's, or the rerun's, own) and its sealed ones opened (only for
    `job`'s secret parameters, and for a quarter of an hour). The service checks names and
    values; BadInput if a name comes twice or a seal does not open."""
    given: dict[str, str] = {}
    sealed: dict[str, str] = {}
    for field_name, value in form.items():
        if not isinstance(value, str) or not value:
            continue
        for prefix, into in ((_PARAMETER_FIELD, given), (_ENV_FIELD, given),
                             (_SEALED_FIELD, sealed)):
            if field_name.startswith(prefix):
                name = field_name.removeprefix(prefix)
                if name in given or name in sealed:
                    raise BadInput(f"{name[:64]} is given twice")
                into[name] = value
    secret = secret_names(job) if job is not None else frozenset()
    if not sealed.keys() <= secret:
        raise BadInput("this form carries a sealed value for a name that is not a secret "
                       "parameter of the job: open the page again")
    try:
        return {**given, **ctx.service.sealer.open(sealed, ttl=_SEALED_FOR)}
    except Unsealable:
        raise BadInput("this confirmation has expired: open the page again") from None


async def _confirmation(ctx: WebContext, target: JobRef, actor: Actor,
                        given: Mapping[str, str], action: str, hidden: dict[str, str], *,
                        rerun_of: Run | None = None) -> web.Response:
    """The page that asks before a `confirm: true` job runs; refused policy and values are
    refused now, not after the click (as in Slack). What the form gave goes back in hidden
    fields, a secret parameter's value sealed; a rerun's own values are the service's."""
    decision = decide(target.job, Action.RUN, actor)
    if not decision.allowed:
        raise PermissionDenied(decision.reason)
    values = ctx.service.run_values(rerun_of, given) if rerun_of is not None else given
    checked = await ctx.service.check_parameters(target, values, rerun_of=rerun_of)
    fields = {**hidden, "confirmed": "yes"}
    declared = {p.name: p for p in target.job.parameters}
    secret = [name for name in given if name in declared and declared[name].secret]
    fields.update({_SEALED_FIELD + name: token for name, token
                   in ctx.service.sealer.seal({n: given[n] for n in secret}).items()})
    fields.update({(_PARAMETER_FIELD if name in declared else _ENV_FIELD) + name: value
                   for name, value in given.items() if name not in secret})
    shown = {**mask_mapping(checked.values), **dict.fromkeys(checked.secrets, MASK)}
    return ctx.render("confirm.html", {"job": target.job, "action": action, "fields": fields,
                                       "overrides": shown})


async def _form(ctx: WebContext, request: web.Request) -> MultiDictProxy[Any] | web.Response:
    """The posted form, if it comes from jobbot's own page and can be read."""
    if not ctx.access.same_origin(request):
        return ctx.error(403, "Refused", "This form must be sent from jobbot's own page.")
    try:
        return await request.post()
    except (ValueError, LookupError) as exc:  # a malformed body, or a charset Python lacks
        return ctx.error(400, "Bad form", f"This form could not be read ({type(exc).__name__}).")


async def cancel(request: web.Request) -> web.Response:
    return await _act(request, "cancel")


async def rerun(request: web.Request) -> web.Response:
    return await _act(request, "rerun")


async def approve(request: web.Request) -> web.Response:
    return await _act(request, "approve")


async def deny(request: web.Request) -> web.Response:
    return await _act(request, "deny")


async def _act(request: web.Request, action: str) -> web.Response:
    ctx = request.app[WEB]
    run_id = request.match_info["id"]
    form = await _form(ctx, request)
    if isinstance(form, web.Response):
        return form
    token = form.get("t")
    if not isinstance(token, str) or not ctx.access.links.verify(run_id, token):
        return ctx.error(403, "This link is not valid", "Open the run again from its link.")
    try:
        run = await ctx.service.get_run(run_id)
        actor = ctx.access.actor(request)
        job: JobRef | None = None
        try:
            job = ctx.service.catalog.resolve(f"{run.app}/{run.job}")
            find = approver_for if action in ("approve", "deny") else actor_for
            actor = await find(ctx, request, job.job)
        except NotFound:
            pass  # the service answers precisely below
        if (action == "rerun" and job is not None and form.get("confirmed") != "yes"
                and needs_confirmation(job.job, actor)):
            return await _confirmation(ctx, job, actor, _given(ctx, form, job.job),
                                       f"/runs/{run_id}/rerun", {"t": token}, rerun_of=run)
        if action == "cancel":
            await ctx.service.cancel(run_id, actor)
            target = run_id
        elif action in ("approve", "deny"):
            decide_run = ctx.service.approve if action == "approve" else ctx.service.deny
            await decide_run(run_id, actor)
            target = run_id
        else:
            result = await ctx.service.rerun(run_id, actor, changes=_given(
                ctx, form, job.job if job is not None else None))
            target = result.run.id
    except PermissionDenied as exc:
        logger.info("page %s refused: %s", action, exc, extra={"run_id": run_id})
        return ctx.error(403, f"You may not {action} this run", str(exc))
    except NotFound as exc:
        return ctx.error(404, "No such run", str(exc))
    except (Conflict, BadInput) as exc:
        return ctx.error(409 if isinstance(exc, Conflict) else 400, f"Could not {action}",
                         str(exc))
    logger.info("page %s of run %s by %s", action, run_id, actor.id, extra={"run_id": run_id})
    raise web.HTTPSeeOther(f"/runs/{target}?t={ctx.access.links.token(target)}")

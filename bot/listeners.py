"""Bolt listeners: record the request and ack; the slow part runs after, in the backlog."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import render, slackapi
from bot.backlog import Backlog
from bot.commands import parse, without_values
from bot.render import Form, Reply
from bot.responder import Responder
from bot.router import Request, Router
from core.errors import BadInput, JobbotError, TemporaryFailure
from core.models import Source
from core.policy import Actor
from core.sealing import Unsealable

logger = logging.getLogger(__name__)
# Any slash command routed to this app is `/job` (workspaces may name it /jobbot, /deploy, ...).
ANY_COMMAND = re.compile(r"^/.+")
Work = Callable[[str, dict[str, Any]], Awaitable[None]]


def slack_actor(user_id: str, user_name: str | None, channel: str | None) -> Actor:
    return Actor(id=f"slack:{user_id}", source=Source.SLACK, display=user_name or user_id,
                 slack_user=user_id, slack_channel=channel)


def command_key(body: dict[str, Any]) -> str:
    """The key of a slash command: a Slack retry of the same request carries the same trigger_id."""
    if body.get("trigger_id"):
        return f"slack:command:{body['trigger_id']}"
    return "slack:command:" + hashlib.sha256(
        json.dumps(body, sort_keys=True).encode()).hexdigest()[:40]


def action_key(body: dict[str, Any]) -> str:
    """The key of a button click (a retried delivery of the same click has the same one)."""
    return f"slack:action:{body.get('trigger_id') or _action_ts(body)}"


CLICK_KINDS = {render.CANCEL_ACTION: "cancel", render.RERUN_ACTION: "rerun",
               render.CONFIRM_ACTION: "confirm", render.DECLINE_ACTION: "decline",
               render.RERUN_FORM_ACTION: "rerun_form", render.APPROVE_ACTION: "approve",
               render.DENY_ACTION: "deny"}
# The fields of a form: Slack tells the app when one changes (a block_actions inside the view).
FIELD_ACTIONS = re.compile("^" + re.escape(render.FIELD_ACTION))


def view_key(body: dict[str, Any]) -> str:
    """The key of a form's submission (a retried delivery of it has the same one)."""
    view = body.get("view") or {}
    return f"slack:view:{body.get('trigger_id') or view.get('id')}:{view.get('hash', '')}"


class NotRecorded(Exception):
    """A request could not be written to the database: it is answered 503 and not acked."""


def click_kind(body: dict[str, Any]) -> str | None:
    """The backlog's kind of work for a button click, or None for a button without work."""
    actions = body.get("actions") or [{}]
    return CLICK_KINDS.get(str(actions[0].get("action_id", "")))


def register_listeners(app: AsyncApp, router: Router, backlog: Backlog,
                       respond: Responder) -> None:
    """Wire the slash command and the buttons of run threads and confirmations to `router`.

    Every request's work is committed to the backlog before the ack (HTTP or Socket Mode
    alike); what touches runs or Slack happens in the backlog's workers.
    """

    async def record(key: str, kind: str, body: dict[str, Any]) -> None:
        try:
            await backlog.accept(key, kind, body)
        except Exception as exc:
            logger.exception("Slack %s %s could not be recorded", kind, key,
                             extra={"slack_request": key})
            raise NotRecorded(key) from exc

    async def on_command(body: dict[str, Any], ack: AsyncAck) -> None:
        # Only the cheap, pure part runs before the ack: a typo is answered right away (and
        # still recorded, for the audit log).
        text = str(body.get("text", ""))
        try:
            command = parse(text)
        except BadInput as exc:
            # Recorded for the audit log only: values masked (a secret may be among them).
            await record(command_key(body), "typo", {**body, "text": without_values(text)})
            await ack(text=render.error(str(exc)).text)
            return
        hidden = (router.hidden(command.job, command.overrides) if command.name == "run"
                  else frozenset())
        if hidden & command.overrides.keys():
            # Secret parameter values are recorded sealed, the text masked.
            body = {**body, "text": command.describe(hidden),
                    "sealed": router.service.sealer.seal({"text": text})}
        await record(command_key(body), "command", body)
        await ack()

    async def answer(body: dict[str, Any], reply: Reply, user: str | None) -> None:
        """Answer through the request's response_url, or open the form the reply asks for
        (with the request's trigger_id: Slack takes it for a few seconds only)."""
        response_url = body.get("response_url")
        if reply.form is not None and await open_form(body.get("trigger_id"), reply.form,
                                                      response_url):
            return
        await respond(response_url, reply, user=user)

    async def open_form(trigger_id: Any, form: Form, response_url: Any) -> bool:
        metadata = {"job": form.job, "ref": form.ref, "rerun_of": form.rerun_of,
                    "kept": list(form.kept), "channel": form.channel,
                    "response_url": response_url}
        view = render.form_view(form, metadata)
        try:
            await slackapi.call("views.open", app.client.views_open(
                trigger_id=str(trigger_id or ""), view=view))
        except (slackapi.PermanentSlackError, TemporaryFailure) as exc:
            # Too late for this trigger_id (or Slack is down): the answer says what to type.
            logger.warning("could not open the form of %s: %s", form.job, exc)
            return False
        return True

    async def run_command(key: str, body: dict[str, Any], *, answer_it: bool = True) -> None:
        channel = body.get("channel_id")
        actor = slack_actor(str(body["user_id"]), body.get("user_name"), channel)
        origin = {"slack_channel": channel, "slack_user": actor.slack_user}
        text = str(body.get("text", ""))
        if "sealed" in body:
            try:
                text = router.service.sealer.open(body["sealed"])["text"]
            except Unsealable:
                await respond(body.get("response_url"), render.error(
                    "this command was sealed with another JOBBOT_SECRET_KEY; send it again"))
                return
        # The run's idempotency key is the request's: a retry never starts a second run.
        reply = await router.handle(Request(text, actor, key, origin))
        if answer_it:
            await answer(body, reply, actor.slack_user)

    async def typo(key: str, body: dict[str, Any]) -> None:
        # Answered in the ack; its (masked) text is audited, and never parsed or run again.
        channel = body.get("channel_id")
        actor = slack_actor(str(body["user_id"]), body.get("user_name"), channel)
        await router.refused(str(body.get("text", "")), actor,
                             {"slack_channel": channel, "slack_user": actor.slack_user})

    async def on_submit(body: dict[str, Any], ack: AsyncAck) -> None:
        # Slack shows errors on the form's fields only when they come in this very answer:
        # the values are checked here, in memory (the job's parameters, no I/O), before the
        # one commit and the ack. Secret values are recorded sealed, never in the clear.
        view = _mapping(body.get("view"))
        state = _mapping(_mapping(view.get("state")).get("values"))
        blocks = view.get("blocks")
        blocks = blocks if isinstance(blocks, list) else []
        names = [str(b.get("block_id", ""))[len(render.FIELD_BLOCK):]
                 for b in blocks if isinstance(b, dict)
                 and str(b.get("block_id", "")).startswith(render.FIELD_BLOCK)]
        try:
            form = json.loads(str(view.get("private_metadata") or "{}"))
        except (ValueError, RecursionError):
            form = None
        if not isinstance(form, dict) or not names:
            await ack()  # not a form of jobbot's: nothing to check or do
            return
        values = render.form_values(state)
        values = {k: v for k, v in values.items() if k in names}
        errors = router.check_form(form, values)
        user = body.get("user") or {}
        if errors:
            await record(view_key(body), "form_refused",
                         {"user": user, "form": form, "errors": sorted(errors)})
            await ack(response_action="errors", errors=render.form_errors(errors, names))
            return
        hidden = router.hidden(str(form.get("job") or ""), values)
        plain = {k: v for k, v in values.items() if k not in hidden}
        sealed = router.service.sealer.seal({k: v for k, v in values.items() if k in hidden})
        await record(view_key(body), "submit",
                     {"user": user, "form": form, "values": plain, "sealed": sealed})
        await ack()

    async def submitted(key: str, body: dict[str, Any]) -> None:
        form = body["form"]
        actor = _submitter(body)
        try:
            values = {**body["values"], **router.service.sealer.open(body["sealed"])}
        except Unsealable:
            reply = render.error("this form was sealed with another JOBBOT_SECRET_KEY; "
                                 "fill it in again")
        else:
            reply = await router.submit(form, values, actor, key)
        await respond(form.get("response_url"), reply, user=actor.slack_user)

    async def form_refused(key: str, body: dict[str, Any]) -> None:
        form = body["form"]
        await router.service.audit(_submitter(body), "command",
                                   f"/job run {form.get('job')} (form)"[:255], "rejected",
                                   ("invalid: " + ", ".join(body["errors"]))[:255])

    async def rerun_form_clicked(key: str, body: dict[str, Any]) -> None:
        actor = _clicker(body)
        reply = await router.rerun_form(_value(body), actor)
        await answer(body, reply, actor.slack_user)

    async def on_click(body: dict[str, Any], ack: AsyncAck) -> None:
        kind = click_kind(body)
        if kind is not None:
            await record(action_key(body), kind, body)
        await ack()

    async def ack_only(ack: AsyncAck) -> None:
        await ack()

    async def cancel_clicked(key: str, body: dict[str, Any]) -> None:
        actor, run_id = _clicker(body), _value(body)
        reply = await router.handle(Request(f"cancel {run_id}", actor, origin=_origin(actor)))
        await respond(body.get("response_url"), reply, user=actor.slack_user)

    async def rerun_clicked(key: str, body: dict[str, Any]) -> None:
        actor = _clicker(body)
        reply = await router.rerun(_value(body), actor, key, _origin(actor))
        await answer(body, reply, actor.slack_user)

    async def approve_clicked(key: str, body: dict[str, Any]) -> None:
        actor = _clicker(body)
        reply = await router.decide(_value(body), actor, approve=True)
        await respond(body.get("response_url"), reply, user=actor.slack_user)

    async def deny_clicked(key: str, body: dict[str, Any]) -> None:
        actor = _clicker(body)
        reply = await router.decide(_value(body), actor, approve=False)
        await respond(body.get("response_url"), reply, user=actor.slack_user)

    async def confirm_clicked(key: str, body: dict[str, Any]) -> None:
        actor, pending_id = _clicker(body), _value(body)
        try:
            reply = await router.confirm(pending_id, actor.slack_user or "", key)
        except JobbotError as exc:
            await respond(body.get("response_url"), render.error(str(exc)))
            return
        await respond(body.get("response_url"), reply, replace=True)

    async def decline_clicked(key: str, body: dict[str, Any]) -> None:
        actor, pending_id = _clicker(body), _value(body)
        try:
            reply = await router.decline(pending_id, actor, key)
        except JobbotError as exc:
            await respond(body.get("response_url"), render.error(str(exc)))
            return
        await respond(body.get("response_url"), reply, replace=True)

    work: dict[str, Work] = {"command": run_command, "typo": typo, "cancel": cancel_clicked,
                             "rerun": rerun_clicked, "confirm": confirm_clicked,
                             "decline": decline_clicked, "submit": submitted,
                             "form_refused": form_refused, "rerun_form": rerun_form_clicked,
                             "approve": approve_clicked, "deny": deny_clicked}
    backlog.handlers.update(work)
    app.command(ANY_COMMAND)(on_command)
    for action_id in CLICK_KINDS:
        app.action(action_id)(on_click)
    app.view(render.FORM_CALLBACK)(on_submit)
    app.action(FIELD_ACTIONS)(ack_only)
    # The View logs button is a link; Slack still tells the app it was clicked.
    app.action("jobbot_view_logs")(ack_only)


def _clicker(body: dict[str, Any]) -> Actor:
    """The person who clicked (not the one who started the run), in the channel clicked in."""
    user = body.get("user") or {}
    channel = (body.get("channel") or {}).get("id")
    return slack_actor(str(user.get("id", "")), user.get("username") or user.get("name"), channel)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _submitter(body: dict[str, Any]) -> Actor:
    """Who submitted a form, in the channel the form was asked from."""
    user = body.get("user") or {}
    channel = body["form"].get("channel")
    return slack_actor(str(user.get("id", "")), user.get("username") or user.get("name"),
                       channel if isinstance(channel, str) else None)


def _origin(actor: Actor) -> dict[str, Any]:
    return {"slack_channel": actor.slack_channel, "slack_user": actor.slack_user}


def _value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value", ""))


def _action_ts(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("action_ts", ""))

"""Bolt listeners: record the request and ack; the slow part runs after, in the backlog."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import render
from bot.backlog import Backlog
from bot.commands import parse
from bot.responder import Responder
from bot.router import Request, Router
from core.errors import BadInput, JobbotError
from core.models import Source
from core.policy import Actor

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
               render.CONFIRM_ACTION: "confirm", render.DECLINE_ACTION: "decline"}


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
        try:
            parse(str(body.get("text", "")))
        except BadInput as exc:
            await record(command_key(body), "typo", body)
            await ack(text=render.error(str(exc)).text)
            return
        await record(command_key(body), "command", body)
        await ack()

    async def run_command(key: str, body: dict[str, Any], *, answer: bool = True) -> None:
        channel = body.get("channel_id")
        actor = slack_actor(str(body["user_id"]), body.get("user_name"), channel)
        origin = {"slack_channel": channel, "slack_user": actor.slack_user}
        # The run's idempotency key is the request's: a retry never starts a second run.
        reply = await router.handle(Request(str(body.get("text", "")), actor, key, origin))
        if answer:
            await respond(body.get("response_url"), reply, user=actor.slack_user)

    async def typo(key: str, body: dict[str, Any]) -> None:
        await run_command(key, body, answer=False)

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
                             "decline": decline_clicked}
    backlog.handlers.update(work)
    app.command(ANY_COMMAND)(on_command)
    for action_id in CLICK_KINDS:
        app.action(action_id)(on_click)
    # The View logs button is a link; Slack still tells the app it was clicked.
    app.action("jobbot_view_logs")(ack_only)


def _clicker(body: dict[str, Any]) -> Actor:
    """The person who clicked (not the one who started the run), in the channel clicked in."""
    user = body.get("user") or {}
    channel = (body.get("channel") or {}).get("id")
    return slack_actor(str(user.get("id", "")), user.get("username") or user.get("name"), channel)


def _origin(actor: Actor) -> dict[str, Any]:
    return {"slack_channel": actor.slack_channel, "slack_user": actor.slack_user}


def _value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value", ""))


def _action_ts(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("action_ts", ""))

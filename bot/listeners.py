"""Bolt listeners: ack at once, then the slow part (in the backlog) through the router."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot import render
from bot.backlog import Backlog
from bot.commands import parse
from bot.render import Reply
from bot.router import Request, Router
from core.errors import BadInput, JobbotError
from core.models import Source
from core.policy import Actor

logger = logging.getLogger(__name__)
# Any slash command routed to this app is `/job` (workspaces may name it /jobbot, /deploy, ...).
ANY_COMMAND = re.compile(r"^/.+")


def slack_actor(user_id: str, user_name: str | None, channel: str | None) -> Actor:
    return Actor(id=f"slack:{user_id}", source=Source.SLACK, display=user_name or user_id,
                 slack_user=user_id, slack_channel=channel)


def register_listeners(app: AsyncApp, router: Router, backlog: Backlog) -> None:
    """Wire the slash command and the buttons of run threads and confirmations to `router`.

    Every listener acks first; what touches the database or Slack goes to `backlog`.
    """

    async def on_command(body: dict[str, Any], ack: AsyncAck, respond: AsyncRespond) -> None:
        # Only the cheap, pure part runs before the ack: a typo is answered right away.
        try:
            parse(str(body.get("text", "")))
        except BadInput as exc:
            await ack(text=render.error(str(exc)).text)
            backlog.submit("/job", lambda: run_command(body, None))  # still audited
            return
        await ack()
        backlog.submit("/job", lambda: run_command(body, respond))

    async def run_command(body: dict[str, Any], respond: AsyncRespond | None) -> None:
        channel = body.get("channel_id")
        actor = slack_actor(str(body["user_id"]), body.get("user_name"), channel)
        origin = {"slack_channel": channel, "slack_user": actor.slack_user}
        # A retry of the same request carries the same trigger_id: it never starts a second run.
        key = f"slack:command:{body['trigger_id']}" if body.get("trigger_id") else None
        answer = await router.handle(Request(str(body.get("text", "")), actor, key, origin))
        if respond is not None:
            await _respond(respond, answer)

    def on_click(name: str, work: Callable[[dict[str, Any], AsyncRespond], Awaitable[None]]
                 ) -> Callable[..., Awaitable[None]]:
        async def listener(body: dict[str, Any], ack: AsyncAck, respond: AsyncRespond) -> None:
            await ack()
            backlog.submit(name, lambda: work(body, respond))

        return listener

    async def ack_only(ack: AsyncAck) -> None:
        await ack()

    async def cancel_clicked(body: dict[str, Any], respond: AsyncRespond) -> None:
        actor, run_id = _clicker(body), _value(body)
        await _respond(respond, await router.handle(Request(f"cancel {run_id}", actor,
                                                            origin=_origin(actor))))

    async def rerun_clicked(body: dict[str, Any], respond: AsyncRespond) -> None:
        actor = _clicker(body)
        # A retried delivery of the same click carries the same trigger_id.
        key = f"slack:action:{body.get('trigger_id') or _action_ts(body)}"
        await _respond(respond, await router.rerun(_value(body), actor, key, _origin(actor)))

    async def confirm_clicked(body: dict[str, Any], respond: AsyncRespond) -> None:
        actor, pending_id = _clicker(body), _value(body)
        key = f"slack:confirm:{pending_id}"
        try:
            answer = await router.confirm(pending_id, actor.slack_user or "", key)
        except JobbotError as exc:
            await _respond(respond, render.error(str(exc)))
            return
        await _respond(respond, answer, replace=True)

    async def decline_clicked(body: dict[str, Any], respond: AsyncRespond) -> None:
        actor, pending_id = _clicker(body), _value(body)
        try:
            pending = router.confirmations.take(pending_id, actor.slack_user or "")
        except JobbotError as exc:
            await _respond(respond, render.error(str(exc)))
            return
        await router.service.audit(actor, "confirm", f"/job {pending.command.describe()}"[:255],
                                   "declined")
        text = f"not run: {pending.command.describe()}"
        await _respond(respond, render.reply(text, [render.section(text)]), replace=True)

    app.command(ANY_COMMAND)(on_command)
    app.action(render.CANCEL_ACTION)(on_click("cancel button", cancel_clicked))
    app.action(render.RERUN_ACTION)(on_click("rerun button", rerun_clicked))
    app.action(render.CONFIRM_ACTION)(on_click("confirm button", confirm_clicked))
    app.action(render.DECLINE_ACTION)(on_click("decline button", decline_clicked))
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


async def _respond(respond: AsyncRespond, answer: Reply, *, replace: bool = False) -> None:
    try:
        await respond(text=answer.text, blocks=answer.blocks or None, response_type="ephemeral",
                      replace_original=replace)
    except Exception:
        # The response_url may have expired or Slack may be down: the command itself is done.
        logger.exception("could not answer through response_url")

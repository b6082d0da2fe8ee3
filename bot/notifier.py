"""Run events from the outbox -> one Slack thread per run: a parent edited in place, replies."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot import mrkdwn, render
from bot.router import last_lines, masker_for
from bot.slackapi import PermanentSlackError, call
from core.errors import NotFound
from core.links import Links
from core.models import Run, RunEvent, RunState, SlackMessage
from core.service import JobService
from core.spec import NOTIFY_EVENTS, JobSpec

logger = logging.getLogger(__name__)
SUBSCRIBER = "slack"
TAIL_LINES = 25
# Post errors that mean "not in that channel": worth a join, or a DM to whoever started the run.
UNREACHABLE = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
MAX_LIST_PAGES = 20
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")


def category(event: RunEvent) -> str | None:
    """Which `notify.on` choice an event belongs to; None for events that only edit the parent."""
    if event.kind in ("created", "state"):
        state = RunState(event.state)
        if state is RunState.SUCCEEDED:
            return "success"
        if state.is_final:  # failed, timed out, cancelled, or a skipped cron slot
            return "failure"
        return "start"
    if event.kind == "attempt_started" and int(event.data.get("attempt", 1)) > 1:
        return "retry"
    return None


class Notifier:
    """The outbox subscriber `slack`: idempotent per event, so a redelivery repeats nothing."""

    def __init__(self, client: AsyncWebClient, service: JobService, links: Links) -> None:
        self._client = client
        self._service = service
        self._links = links

    async def __call__(self, event: RunEvent) -> None:
        try:
            run = await self._service.get_run(event.run_id)
        except NotFound:
            return
        job = self._job(run)
        channel = (job.notify.slack_channel if job else None) or run.origin.get("slack_channel")
        if not channel:
            return
        wanted = job.notify.on if job else NOTIFY_EVENTS
        kind = category(event)
        record = await asyncio.to_thread(self._service.store.slack_message, run.id)
        if record is not None and event.id is not None and event.id <= record.last_event_id:
            return  # shown before a restart; the cursor had not moved yet
        waiting = event.state == RunState.NEEDS_APPROVAL.value
        if record is None and kind not in wanted and not waiting:
            # Nothing to say yet (e.g. `on: [failure]` and this is the start); a run waiting
            # for approval is always shown: its thread holds the Approve and Deny buttons.
            return
        context = {"run_id": run.id, "channel": channel, "event_id": event.id}
        try:
            record = await self._parent(run, channel, record, context)
            if kind in wanted and kind in ("retry", "success", "failure"):
                await self._reply(run, event, record, kind, context)
        except PermanentSlackError:
            return  # logged with its context; other runs and notifications go on
        if event.id is not None:
            await asyncio.to_thread(self._service.store.save_slack_message, run.id,
                                    record.channel, record.ts, event.id)

    def _job(self, run: Run) -> JobSpec | None:
        try:
            return self._service.catalog.resolve(f"{run.app}/{run.job}").job
        except NotFound:
            return None

    async def _parent(self, run: Run, channel: str, record: SlackMessage | None,
                      context: dict[str, Any]) -> SlackMessage:
        """Post the parent message once, or edit it to the run's current state."""
        job = self._job(run)
        approvals = None
        if run.spec_digest is not None:  # its job asked for approval when it was created
            decisions = await self._service.approvals(run.id)
            required = job.approval.required if job is not None and job.approval else 1
            approvals = render.Approvals(tuple((a.who, a.display) for a in decisions
                                               if a.decision == "approved"), required)
        text, blocks = render.run_parent(run, self._links, approvals=approvals,
                                         changes=job is not None and bool(job.parameters),
                                         line=await self._service.line_place(run))
        if record is not None and record.channel.startswith("D") and not channel.startswith("D"):
            text, blocks = _in_dm(channel, None, text, blocks)  # the thread moved to a DM
        if record is not None:
            await call("chat.update", self._client.chat_update(
                channel=record.channel, ts=record.ts, text=text, blocks=blocks), **context)
            return record
        try:
            response = await call("chat.postMessage", self._client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, unfurl_links=False), **context)
        except PermanentSlackError as exc:
            if exc.error not in UNREACHABLE:
                raise
            response = await self._elsewhere(run, channel, exc.error, text, blocks, context)
        posted = SlackMessage(run_id=run.id, channel=str(response["channel"]),
                              ts=str(response["ts"]), last_event_id=0, updated_at=run.created_at)
        # Saved before any reply, so a retry edits this message instead of posting another.
        await asyncio.to_thread(self._service.store.save_slack_message, run.id, posted.channel,
                                posted.ts, 0)
        return posted

    async def _elsewhere(self, run: Run, channel: str, error: str, text: str,
                         blocks: list[dict[str, Any]], context: dict[str, Any]
                         ) -> AsyncSlackResponse:
        """The bot cannot post in `channel`: join it if it is public and try once more; else
        keep the run's thread in a DM with whoever started it (PermanentSlackError if nobody)."""
        if error == "not_in_channel":
            channel_id = await self._channel_id(channel, context)
            if channel_id and await self._join(channel_id, context):
                try:
                    return await call("chat.postMessage", self._client.chat_postMessage(
                        channel=channel_id, text=text, blocks=blocks, unfurl_links=False),
                        **context)
                except PermanentSlackError as exc:
                    error = exc.error
        user = run.origin.get("slack_user")
        if not user:
            logger.warning("run %s: no Slack thread, %s is unusable (%s) and no one to tell",
                           run.id, channel, error, extra=context)
            raise PermanentSlackError("chat.postMessage", error)
        logger.warning("run %s: %s is unusable (%s); following the run in a DM with %s",
                       run.id, channel, error, user, extra={**context, "error": error})
        text, blocks = _in_dm(channel, error, text, blocks)
        return await call("chat.postMessage", self._client.chat_postMessage(
            channel=user, text=text, blocks=blocks, unfurl_links=False),
            **{**context, "channel": user})

    async def _channel_id(self, channel: str, context: dict[str, Any]) -> str | None:
        """A channel's id (conversations.join takes no names): public channels are listed."""
        if not channel.startswith("#"):
            return channel
        name, cursor = channel[1:], ""
        for _ in range(MAX_LIST_PAGES):
            page = await call("conversations.list", self._client.conversations_list(
                types="public_channel", exclude_archived=True, limit=200, cursor=cursor or None),
                **context)
            for found in page.get("channels") or ():
                if found.get("name") == name:
                    return str(found["id"])
            cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                break
        return None

    async def _join(self, channel_id: str, context: dict[str, Any]) -> bool:
        try:
            await call("conversations.join", self._client.conversations_join(channel=channel_id),
                       **context)
        except PermanentSlackError:
            return False  # a private channel (the bot must be invited) or an archived one
        logger.info("joined channel %s to post run notifications", channel_id, extra=context)
        return True

    async def _reply(self, run: Run, event: RunEvent, record: SlackMessage, kind: str,
                     context: dict[str, Any]) -> None:
        if kind == "retry":
            attempt = int(event.data.get("attempt", 2))
            detail = await self._service.detail(run.id)
            previous = next((a for a in detail.attempts if a.index == attempt - 1), None)
            text, blocks = render.retry_reply(run, attempt, previous)
        else:
            tail: list[str] = []
            if kind == "failure" and run.state != RunState.SKIPPED.value:
                masker = masker_for(self._service, run.app, run.job, run.overrides)
                tail = [masker.mask(line)
                        for line in await last_lines(self._service, run.id, TAIL_LINES)]
            text, blocks = render.end_reply(run, tail)
        await call("chat.postMessage", self._client.chat_postMessage(
            channel=record.channel, thread_ts=record.ts, text=text, blocks=blocks,
            unfurl_links=False), **context)


def _in_dm(channel: str, error: str | None, text: str, blocks: list[dict[str, Any]]
           ) -> tuple[str, list[dict[str, Any]]]:
    """A run's parent message as shown in a DM, saying why it is not in `channel`."""
    where = f"<#{channel}>" if _CHANNEL_ID.fullmatch(channel) else mrkdwn.escape(channel)
    why = f" ({mrkdwn.escape(error)})" if error else ""
    note = (f":warning: I cannot post in {where}{why}, so this run's updates come here. "
            "Invite me there (`/invite @jobbot`) for the next runs.")
    return f"{note}\n{text}", [render.context(note), *blocks][:render.MAX_BLOCKS]


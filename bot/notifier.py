"""Run events from the outbox -> one Slack thread per run: a parent edited in place, replies."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot import render
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
        if record is None and kind not in wanted:
            return  # nothing to say yet (e.g. `on: [failure]` and this is the start)
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
        text, blocks = render.run_parent(run, self._links)
        if record is not None:
            await call("chat.update", self._client.chat_update(
                channel=record.channel, ts=record.ts, text=text, blocks=blocks), **context)
            return record
        response = await call("chat.postMessage", self._client.chat_postMessage(
            channel=channel, text=text, blocks=blocks, unfurl_links=False), **context)
        posted = SlackMessage(run_id=run.id, channel=str(response["channel"]),
                              ts=str(response["ts"]), last_event_id=0, updated_at=run.created_at)
        # Saved before any reply, so a retry edits this message instead of posting another.
        await asyncio.to_thread(self._service.store.save_slack_message, run.id, posted.channel,
                                posted.ts, 0)
        return posted

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

"""The GitHub App: verifies deliveries, answers at once, and hands the work to the routers."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import msgspec
from aiohttp import web

from core.answers_first import AnswersFirst
from core.builds import Builder, BuildRequest, resume_builds
from core.builds_local import LocalBuilder
from core.events import Outbox
from core.links import Links
from core.models import utcnow
from core.service import JobService
from core.store import NewDelivery
from github_app.api import GitHubApiError, GitHubClients, import_what_calls_need
from github_app.checkruns import CheckRunReporter
from github_app.config import GitHubConfig
from github_app.context import Context
from github_app.handlers import checks, comments, installation, pulls, push
from github_app.journal import DeliveryJournal
from github_app.queue import WorkQueue
from github_app.routing import Delivery, Router
from github_app.signature import verify
from github_app.spool import DeliverySpool

logger = logging.getLogger(__name__)
# Delivery ids remembered in memory, so most redeliveries are answered without the database.
RECENT_DELIVERIES = 10_000
ROUTER = Router.merge(comments.router, pulls.router, checks.router, push.router,
                      installation.router)


@dataclass(frozen=True)
class Queued:
    """A delivery waiting for its handlers, as its JSON text: parsed again when handled.

    Thousands of payloads kept as parsed objects during a burst made each of the collector's
    full passes take 20-30 ms, stalling every answer under way (bench/github_webhook.py); the
    text is one object the collector never scans.
    """

    id: str
    event: str
    action: str | None
    text: str


class GitHubApp:
    """`POST /github/webhook`, the background queue, and the check-run subscriber."""

    def __init__(self, config: GitHubConfig, service: JobService, links: Links, *,
                 builder: Builder | None = None, workers: int = 8,
                 router: Router = ROUTER, spool: Path | None = None) -> None:
        self.config = config
        self.priority = AnswersFirst()
        self.clients = GitHubClients(config.app_id, config.private_key, config.api_url,
                                     before_call=self.priority.wait_turn)
        self.ctx = Context(service, links, self.clients, builder)
        self.router = router
        # The spool is for SQLite: with PostgreSQL, replicas on other hosts take over each
        # other's deliveries, so the payload goes in the row, before the answer.
        self.journal = DeliveryJournal(
            service.store, priority=self.priority,
            spool=DeliverySpool(spool) if spool is not None and service.store.writes_now
            else None)
        self.queue = WorkQueue(self.journal.finish, workers=workers, priority=self.priority)
        self.checks = CheckRunReporter(self.ctx)
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._resumed: list[asyncio.Task[None]] = []
        self._pruning: asyncio.Task[None] | None = None

    async def fetch_tarball(self, request: BuildRequest) -> bytes:
        """For LocalBuilder: the repository's tarball at the sha, with the installation token."""
        for repo in await self.ctx.db(self.ctx.service.store.served_repositories):
            if repo.full_name == request.repository:
                return await self.clients.installation(repo.installation_id).tarball(
                    request.repository, request.sha)
        raise GitHubApiError(f"jobbot is not installed on {request.repository}")

    async def webhook(self, request: web.Request) -> web.Response:
        with self.priority.answering():
            return await self._answer_delivery(request)

    async def _answer_delivery(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(self.config.webhook_secret, body,
                      request.headers.get("X-Hub-Signature-256")):
            return _answer(401, "the X-Hub-Signature-256 signature is missing or wrong")
        event = request.headers.get("X-GitHub-Event", "")
        delivery_id = request.headers.get("X-GitHub-Delivery", "")
        if not event or not delivery_id or len(delivery_id) > 64:
            return _answer(400, "X-GitHub-Event and X-GitHub-Delivery headers are required")
        if delivery_id in self._recent:
            return _answer(200, "redelivery: already handled", status_text="duplicate")
        parsed = _payload(body, request.content_type)
        if parsed is None:
            return _answer(400, "the body is not a JSON object (nor a form with `payload`)")
        payload, text = parsed
        action = payload.get("action") if isinstance(payload.get("action"), str) else None
        handlers = self.router.handlers(event, action)
        head = (push.branch_head(Delivery(delivery_id, event, action, payload))
                if event == "push" and handlers else None)
        try:
            # Written down before the answer (to the spool, or a commit concurrent deliveries
            # share), so a 2xx is never lost to a restart; this is also the redelivery check.
            new = await self.journal.record(NewDelivery(
                delivery_id, event, action, text, owner=str(self.journal.owner), head=head,
                received_at=utcnow()))
        except Exception:
            logger.exception("delivery %s could not be recorded", delivery_id,
                             extra={"delivery_id": delivery_id})
            return _answer(503, "jobbot could not record the delivery: redeliver it later")
        self._remember(delivery_id)
        if not new:
            return _answer(200, "redelivery: already handled", status_text="duplicate")
        self._enqueue(Queued(delivery_id, event, action, text), handlers)
        if not handlers:
            return _answer(202, "not handled by jobbot", status_text="ignored")
        return _answer(202, "accepted", status_text="accepted")

    def _remember(self, delivery_id: str) -> None:
        """Delivery ids seen lately, so a redelivery is answered without the database."""
        self._recent[delivery_id] = None
        while len(self._recent) > RECENT_DELIVERIES:
            self._recent.popitem(last=False)

    def _enqueue(self, queued: Queued, handlers: list[Any]) -> None:
        self.queue.put(queued.id, lambda: self._handle(queued, handlers))

    async def _handle(self, queued: Queued, handlers: list[Any]) -> str | None:
        if not await self.journal.recorded(queued.id):
            return None  # another process recorded it first, and handles it
        if not handlers:
            return f"ignored: {queued.event} {queued.action or ''}".strip()
        delivery = Delivery(queued.id, queued.event, queued.action,
                            msgspec.json.decode(queued.text))
        outcomes = [await handler(delivery, self.ctx) for handler in handlers]
        logger.info("delivery %s (%s %s): %s", delivery.id, delivery.event, delivery.action or "",
                    "; ".join(outcomes), extra={"delivery_id": delivery.id})
        return "; ".join(outcomes)

    async def _start(self, app: web.Application) -> None:
        import_what_calls_need()
        await self.ctx.load_state()
        self._resumed = await resume_builds(self.ctx.service, self.ctx.builder)
        self.journal.start()
        for orphan in await self.journal.orphans():
            if orphan.payload is None:  # recorded by a jobbot that did not keep payloads
                await self.journal.finish(orphan.id, "not handled: jobbot stopped before it was")
                continue
            # Answered by a process that stopped before handling it: handle it now.
            logger.info("delivery %s (%s) answered before a restart: handling it now",
                        orphan.id, orphan.event, extra={"delivery_id": orphan.id})
            self._remember(orphan.id)
            self._enqueue(Queued(orphan.id, orphan.event, orphan.action, orphan.payload),
                          self.router.handlers(orphan.event, orphan.action))
        self.queue.start()
        self._pruning = asyncio.create_task(self.journal.prune_forever())

    async def _stop(self, app: web.Application) -> None:
        tasks = [*self._resumed, *([self._pruning] if self._pruning else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.queue.stop()
        await self.journal.close()
        await self.clients.aclose()


class _Repository(msgspec.Struct):
    full_name: Any = None


class _Head(msgspec.Struct, omit_defaults=True):
    """The fields of a payload the answer needs: the action, and a push's branch head."""

    action: Any = None
    ref: Any = None
    after: Any = None
    deleted: Any = None
    repository: _Repository | None = None


# The answer reads only these fields: the decoder checks the rest is well-formed JSON without
# building it (a third of orjson's time on a 7-9 kB payload, and none of the 200-odd objects
# whose allocation set off the garbage collector every few deliveries). The work after the
# answer parses the whole payload.
_HEAD = msgspec.json.Decoder(_Head)


def _payload(body: bytes, content_type: str) -> tuple[dict[str, Any], str] | None:
    """The payload's answer fields (a part of the payload) and its JSON text, or None if the
    body is not a JSON object."""
    try:
        if content_type == "application/x-www-form-urlencoded":
            # A webhook may be set to send `payload=<json>` as a form.
            values = parse_qs(body.decode("utf-8")).get("payload", [])
            if not values:
                return None
            text = values[0]
        else:
            text = body.decode("utf-8")
        head = _HEAD.decode(text)
    except msgspec.ValidationError:
        # Not an object, or a field of another shape than GitHub sends: the whole parse decides.
        try:
            data = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return None
        return (data, text) if isinstance(data, dict) else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return msgspec.to_builtins(head), text  # the fields present, as the payload has them


def _answer(status: int, message: str, *, status_text: str | None = None) -> web.Response:
    return web.Response(body=_answer_body(status, message, status_text), status=status,
                        content_type="application/json")


@functools.cache
def _answer_body(status: int, message: str, status_text: str | None) -> bytes:
    """Encoded once: the answers are a handful of fixed texts (json_response encoded each
    one again, a tenth of the answer's own time)."""
    key = "error" if status >= 400 else "status"
    body = {key: message} if status >= 400 else {key: status_text or "ok", "message": message}
    return json.dumps(body).encode()


def setup(app: web.Application, *, config: GitHubConfig, service: JobService, links: Links,
          outbox: Outbox | None = None, workspaces: Path | None = None,
          builder: Builder | None = None, workers: int = 8,
          spool: Path | None = None) -> GitHubApp:
    """Mount `POST /github/webhook`, start the work queue with the server, and subscribe the
    check-run reporter to run events. Without `builder`, a LocalBuilder under `workspaces`;
    with `spool` (a directory) and SQLite, answered deliveries are spooled there."""
    github = GitHubApp(config, service, links, builder=builder, workers=workers, spool=spool)
    if builder is None and workspaces is not None:
        github.ctx.builder = LocalBuilder(workspaces, github.fetch_tarball)
    app.router.add_post("/github/webhook", github.webhook)
    app.on_startup.append(github._start)
    app.on_cleanup.append(github._stop)
    if outbox is not None:
        outbox.subscribe("github", github.checks)
    return github


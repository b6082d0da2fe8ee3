"""The GitHub App: verifies deliveries, answers at once, and hands the work to the routers."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from core.builds import Builder, BuildRequest
from core.builds_local import LocalBuilder
from core.events import Outbox
from core.links import Links
from core.service import JobService
from github_app.api import GitHubApiError, GitHubClients
from github_app.checkruns import CheckRunReporter
from github_app.config import GitHubConfig
from github_app.context import Context
from github_app.handlers import checks, comments, installation, pulls, push
from github_app.queue import WorkQueue
from github_app.routing import Delivery, Router
from github_app.signature import verify

logger = logging.getLogger(__name__)
# Delivery ids remembered in memory, so a redelivery is answered without the database.
RECENT_DELIVERIES = 10_000
ROUTER = Router.merge(comments.router, pulls.router, checks.router, push.router,
                      installation.router)


class GitHubApp:
    """`POST /github/webhook`, the background queue, and the check-run subscriber."""

    def __init__(self, config: GitHubConfig, service: JobService, links: Links, *,
                 builder: Builder | None = None, workers: int = 8,
                 router: Router = ROUTER) -> None:
        self.config = config
        self.clients = GitHubClients(config.app_id, config.private_key, config.api_url)
        self.ctx = Context(service, links, self.clients, builder)
        self.router = router
        self.queue = WorkQueue(self._record_outcome, workers=workers)
        self.checks = CheckRunReporter(self.ctx)
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recorded: set[str] = set()

    async def fetch_tarball(self, request: BuildRequest) -> bytes:
        """For LocalBuilder: the repository's tarball at the sha, with the installation token."""
        for repo in await self.ctx.db(self.ctx.service.store.served_repositories):
            if repo.full_name == request.repository:
                return await self.clients.installation(repo.installation_id).tarball(
                    request.repository, request.sha)
        raise GitHubApiError(f"jobbot is not installed on {request.repository}")

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(self.config.webhook_secret, body,
                      request.headers.get("X-Hub-Signature-256")):
            return _answer(401, "the X-Hub-Signature-256 signature is missing or wrong")
        event = request.headers.get("X-GitHub-Event", "")
        delivery_id = request.headers.get("X-GitHub-Delivery", "")
        if not event or not delivery_id or len(delivery_id) > 64:
            return _answer(400, "X-GitHub-Event and X-GitHub-Delivery headers are required")
        payload = _payload(body, request.content_type)
        if payload is None:
            return _answer(400, "the body is not a JSON object (nor a form with `payload`)")
        action = payload.get("action") if isinstance(payload.get("action"), str) else None
        delivery = Delivery(delivery_id, event, action, payload)
        if delivery_id in self._recent:
            return _answer(200, "redelivery: already handled", status_text="duplicate")
        self._recent[delivery_id] = None
        while len(self._recent) > RECENT_DELIVERIES:
            self._recent.popitem(last=False)
        handlers = self.router.handlers(event, action)
        if event == "push" and handlers:
            push.note_push(delivery, self.ctx)
        # Nothing touches the database before the answer: the worker records the delivery
        # first and drops it if its id is known (a redelivery after a restart).
        self.queue.put(delivery_id, lambda: self._handle(delivery, handlers))
        if not handlers:
            return _answer(202, "not handled by jobbot", status_text="ignored")
        return _answer(202, "accepted", status_text="accepted")

    async def _handle(self, delivery: Delivery, handlers: list[Any]) -> str | None:
        # Retried work (after a rate limit) finds its own record: only the first try checks.
        first_try = delivery.id not in self._recorded
        self._recorded.add(delivery.id)
        new = first_try and await self.ctx.db(self.ctx.service.store.record_delivery,
                                              delivery.id, delivery.event, delivery.action)
        if first_try and not new:
            logger.info("delivery %s (%s) seen before: nothing to do", delivery.id,
                        delivery.event, extra={"delivery_id": delivery.id})
            return None
        if not handlers:
            return f"ignored: {delivery.event} {delivery.action or ''}".strip()
        outcomes = [await handler(delivery, self.ctx) for handler in handlers]
        self._recorded.discard(delivery.id)
        logger.info("delivery %s (%s %s): %s", delivery.id, delivery.event, delivery.action or "",
                    "; ".join(outcomes), extra={"delivery_id": delivery.id})
        return "; ".join(outcomes)

    async def _record_outcome(self, delivery_id: str, outcome: str) -> None:
        await self.ctx.db(self.ctx.service.store.set_delivery_outcome, delivery_id, outcome)

    async def _start(self, app: web.Application) -> None:
        self.queue.start()

    async def _stop(self, app: web.Application) -> None:
        await self.queue.stop()


def _payload(body: bytes, content_type: str) -> dict[str, Any] | None:
    try:
        if content_type == "application/x-www-form-urlencoded":
            # A webhook may be set to send `payload=<json>` as a form.
            values = parse_qs(body.decode("utf-8")).get("payload", [])
            data = json.loads(values[0]) if values else None
        else:
            data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _answer(status: int, message: str, *, status_text: str | None = None) -> web.Response:
    key = "error" if status >= 400 else "status"
    body = {key: message} if status >= 400 else {key: status_text or "ok", "message": message}
    return web.json_response(body, status=status)


def setup(app: web.Application, *, config: GitHubConfig, service: JobService, links: Links,
          outbox: Outbox | None = None, workspaces: Path | None = None,
          builder: Builder | None = None, workers: int = 8) -> GitHubApp:
    """Mount `POST /github/webhook`, start the work queue with the server, and subscribe the
    check-run reporter to run events. Without `builder`, a LocalBuilder under `workspaces`."""
    github = GitHubApp(config, service, links, builder=builder, workers=workers)
    if builder is None and workspaces is not None:
        github.ctx.builder = LocalBuilder(workspaces, github.fetch_tarball)
    app.router.add_post("/github/webhook", github.webhook)
    app.on_startup.append(github._start)
    app.on_cleanup.append(github._stop)
    if outbox is not None:
        outbox.subscribe("github", github.checks)
    return github


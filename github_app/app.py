"""The GitHub App: verifies deliveries, records them, answers, and hands the work to the routers."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from core.builds import Builder, BuildRequest, TakesCredentials, resume_builds
from core.builds_local import LocalBuilder
from core.events import Outbox
from core.intake import Intake
from core.links import Links
from core.models import utcnow
from core.replicas import Liveness
from core.service import JobService
from core.store import NewDelivery
from github_app.api import GitHubClients, import_what_calls_need
from github_app.checkruns import CheckRunReporter
from github_app.config import GitHubConfig
from github_app.context import Context
from github_app.handlers import checks, comments, installation, pulls, push
from github_app.installations import BuildTokens, Installations
from github_app.routing import Delivery, Router
from github_app.signature import verify

logger = logging.getLogger(__name__)
ROUTER = Router.merge(comments.router, pulls.router, checks.router, push.router,
                      installation.router)
# Handled deliveries are kept this long: GitHub lets people redeliver the last 3 days' ones,
# and a redelivery must still find its record so it starts nothing.
KEEP_HANDLED = timedelta(days=7)
PRUNE_EVERY = timedelta(hours=6)
# GitHub's event names and delivery ids (UUIDs); anything else (bytes that are not UTF-8
# among them) is no delivery of GitHub's, and could not be stored as text either.
_HEADER = re.compile(r"[\x21-\x7e]{1,64}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class GitHubApp:
    """`POST /github/webhook`, the deliveries' intake, and the check-run subscriber."""

    def __init__(self, config: GitHubConfig, service: JobService, links: Links, *,
                 builder: Builder | None = None, workers: int = 8,
                 router: Router = ROUTER) -> None:
        self.config = config
        self.clients = GitHubClients(config.app_id, config.private_key, config.api_url)
        self.ctx = Context(service, links, self.clients, builder)
        self.router = router
        self.store = service.store
        self.intake = Intake("github", self.store.finish_delivery, log_field="delivery_id",
                             workers=workers)
        self.checks = CheckRunReporter(self.ctx)
        self.installations = Installations(self.clients, self.store)
        self.build_tokens = BuildTokens(self.clients, self.installations)
        self._background: list[asyncio.Task[None]] = []

    async def fetch_tarball(self, request: BuildRequest) -> bytes:
        """For LocalBuilder: the repository's tarball at the sha, with the token of the
        installation its delivery named (or that GitHub lists for it)."""
        installation_id = await self.installations.installation_for(request.repository,
                                                                    request.origin)
        return await self.clients.installation(installation_id).tarball(request.repository,
                                                                       request.sha)

    async def webhook(self, request: web.Request) -> web.Response:
        """Check the signature on the raw bytes, record the delivery, answer; handle it after."""
        body = await request.read()
        signature = request.headers.get("X-Hub-Signature-256", "")
        # A header of bytes that are not UTF-8 arrives with surrogates, which verify() cannot
        # encode; GitHub's is `sha256=` and hex digits.
        if not (signature.isascii() and verify(self.config.webhook_secret, body, signature)):
            return _answer(401, "the X-Hub-Signature-256 signature is missing or wrong")
        event = request.headers.get("X-GitHub-Event", "")
        delivery_id = request.headers.get("X-GitHub-Delivery", "")
        if not (_HEADER.fullmatch(event) and _HEADER.fullmatch(delivery_id)):
            return _answer(400, "X-GitHub-Event and X-GitHub-Delivery headers are required "
                                "(64 visible ASCII characters at most)")
        parsed = _payload(body, request.content_type)
        if parsed is None:
            return _answer(400, "the body is not a JSON object (nor a form with `payload`)")
        payload, text = parsed
        action = payload.get("action") if isinstance(payload.get("action"), str) else None
        delivery = Delivery(delivery_id, event, action, payload)
        handlers = self.router.handlers(event, action)
        head = push.branch_head(delivery) if event == "push" and handlers else None
        try:
            # Committed before the answer, so a 2xx is never lost to a restart; the insert is
            # also the redelivery check.
            new = await self.intake.record(self.store.record_delivery, NewDelivery(
                delivery_id, event, action, text, owner=str(self.intake.owner), head=head))
        except Exception:
            logger.exception("delivery %s could not be recorded", delivery_id,
                             extra={"delivery_id": delivery_id})
            return _answer(503, "jobbot could not record the delivery: redeliver it later")
        if not new:
            return _answer(200, "redelivery: already handled", status_text="duplicate")
        self._enqueue(delivery)
        if not handlers:
            return _answer(202, "not handled by jobbot", status_text="ignored")
        return _answer(202, "accepted", status_text="accepted")

    def _enqueue(self, delivery: Delivery) -> None:
        self.intake.put(delivery.id, lambda: self._handle(delivery))

    async def _handle(self, delivery: Delivery) -> str:
        handlers = self.router.handlers(delivery.event, delivery.action)
        if not handlers:
            return f"ignored: {delivery.event} {delivery.action or ''}".strip()
        try:
            await self.installations.learn(delivery)
        except Exception:  # the delivery is still handled with its own installation
            logger.exception("delivery %s: recording its installation failed", delivery.id,
                             extra={"delivery_id": delivery.id})
        outcomes = [await handler(delivery, self.ctx) for handler in handlers]
        logger.info("delivery %s (%s %s): %s", delivery.id, delivery.event, delivery.action or "",
                    "; ".join(outcomes), extra={"delivery_id": delivery.id})
        return "; ".join(outcomes)

    async def _start(self, app: web.Application) -> None:
        import_what_calls_need()
        await self.ctx.load_state()
        # Installed before this start, or changed while jobbot was down: GitHub's lists say.
        self.installations.sync_soon()
        self._background = await resume_builds(self.ctx.service, self.ctx.builder)
        await self.take_over(await self.ctx.service.replica.liveness())
        self._background.append(asyncio.create_task(self._prune_forever(), name="github-prune"))

    async def take_over(self, live: Liveness) -> int:
        """Handle the unhandled deliveries of processes gone by `live` (at start, and at each
        heartbeat: a replica whose lease expired leaves what it answered to a live one)."""
        left = await self.intake.take_over(self.store.take_over_deliveries, live)
        for row in left:
            parsed = _payload((row.payload or "").encode(), "application/json")
            if parsed is None:
                await asyncio.to_thread(self.store.finish_delivery, row.id,
                                        "not handled: its payload was not kept")
                continue
            # Answered by a process that stopped before handling it: handle it now.
            logger.info("delivery %s (%s) answered by a process that stopped: handling it now",
                        row.id, row.event, extra={"delivery_id": row.id})
            self._enqueue(Delivery(row.id, row.event, row.action, parsed[0]))
        return len(left)

    async def _stop(self, app: web.Application) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.intake.stop()
        await self.installations.aclose()
        await self.clients.aclose()

    async def _prune_forever(self) -> None:
        """Forget handled deliveries older than KEEP_HANDLED, now and every PRUNE_EVERY."""
        while True:
            try:
                removed = await asyncio.to_thread(self.store.prune_deliveries,
                                                  utcnow() - KEEP_HANDLED)
                if removed:
                    logger.info("forgot %d handled deliveries older than %s", removed,
                                KEEP_HANDLED)
            except Exception:
                logger.exception("pruning old deliveries failed; trying again in %s",
                                 PRUNE_EVERY)
            await asyncio.sleep(PRUNE_EVERY.total_seconds())


# The mounted App on the aiohttp app, for whoever needs its intake or reporter (tests).
GITHUB = web.AppKey("github_app", GitHubApp)


def _payload(body: bytes, content_type: str) -> tuple[dict[str, Any], str] | None:
    """The payload and its JSON text, or None if the body is not a JSON object."""
    try:
        text = body.decode("utf-8")
        if content_type == "application/x-www-form-urlencoded":
            # A webhook may be set to send `payload=<json>` as a form.
            values = parse_qs(text).get("payload", [])
            if not values:
                return None
            text = values[0]
        data = json.loads(text, parse_constant=_not_json)
        if _SURROGATE_ESCAPE.search(text):
            # JSON may escape half of a surrogate pair alone (`"\ud800"`): no Unicode text,
            # and nothing a database stores. GitHub's payloads are UTF-8 throughout.
            json.dumps(data, ensure_ascii=False).encode()
    except (UnicodeError, ValueError, RecursionError):
        # RecursionError: a signed body nested deeper than the parser goes.
        return None
    return (data, text) if isinstance(data, dict) else None


def _not_json(constant: str) -> None:
    """NaN and Infinity: Python's parser takes them, JSON (and GitHub) has no such thing."""
    raise ValueError(f"{constant} is not JSON")


def _answer(status: int, message: str, *, status_text: str | None = None) -> web.Response:
    body = ({"error": message} if status >= 400
            else {"status": status_text or "ok", "message": message})
    return web.json_response(body, status=status)


def setup(app: web.Application, *, config: GitHubConfig, service: JobService, links: Links,
          outbox: Outbox | None = None, workspaces: Path | None = None,
          builder: Builder | None = None, workers: int = 8) -> GitHubApp:
    """Mount `POST /github/webhook`, replay unhandled deliveries with the server's start, and
    subscribe the check-run reporter to run events. Without `builder`, a LocalBuilder under
    `workspaces`."""
    github = _make(config, service, links, builder, workspaces, workers)
    app[GITHUB] = github
    app.router.add_post("/github/webhook", github.webhook)
    service.replica.on_beat("github deliveries", github.take_over)
    app.on_startup.append(github._start)
    app.on_cleanup.append(github._stop)
    if outbox is not None:
        outbox.subscribe("github", github.checks)
    return github


def _make(config: GitHubConfig, service: JobService, links: Links, builder: Builder | None,
          workspaces: Path | None, workers: int) -> GitHubApp:
    github = GitHubApp(config, service, links, builder=builder, workers=workers)
    if isinstance(builder, TakesCredentials) and builder.credentials is None:
        # BuildKit clones private repositories with a token per build, from this App.
        builder.credentials = github.build_tokens
    if builder is None and workspaces is not None:
        github.ctx.builder = LocalBuilder(workspaces, github.fetch_tarball)
    return github


class Standby:
    """`POST /github/webhook` before the App is registered: 404 until `activate` (called by
    /github/setup with the new App's credentials) starts the App in this process."""

    def __init__(self, service: JobService, links: Links, *, workspaces: Path | None = None,
                 builder: Builder | None = None, workers: int = 8) -> None:
        self._made = (service, links, builder, workspaces, workers)
        self.github: GitHubApp | None = None
        self._app: web.Application | None = None
        self._outbox: asyncio.Task[None] | None = None

    async def webhook(self, request: web.Request) -> web.Response:
        if self.github is None:
            return _answer(404, "the GitHub App is not registered yet: open /github/setup")
        return await self.github.webhook(request)

    async def activate(self, config: GitHubConfig) -> None:
        """Start the App as `setup` would have at start-up: deliveries, builds, check runs."""
        if self.github is not None or self._app is None:
            raise RuntimeError("the GitHub App is already running, or the server is not")
        service, links, builder, workspaces, workers = self._made
        github = _make(config, service, links, builder, workspaces, workers)
        await github._start(self._app)
        # The server's outbox has started its subscribers; the reporter gets one of its own.
        outbox = Outbox(service.store, service.changes)
        outbox.subscribe("github", github.checks)
        await outbox.prepare()
        self._outbox = asyncio.create_task(outbox.run(), name="github-outbox")
        self.github = github
        logger.info("GitHub App %s registered: serving its webhook", config.app_id)

    async def _start(self, app: web.Application) -> None:
        self._app = app

    async def _stop(self, app: web.Application) -> None:
        if self._outbox is not None:
            self._outbox.cancel()
            await asyncio.gather(self._outbox, return_exceptions=True)
        if self.github is not None:
            await self.github._stop(app)


def setup_standby(app: web.Application, *, service: JobService, links: Links,
                  workspaces: Path | None = None, builder: Builder | None = None,
                  workers: int = 8) -> Standby:
    """Mount `POST /github/webhook` for an App not registered yet (see Standby)."""
    standby = Standby(service, links, workspaces=workspaces, builder=builder, workers=workers)
    app.router.add_post("/github/webhook", standby.webhook)
    app.on_startup.append(standby._start)
    app.on_cleanup.append(standby._stop)
    return standby

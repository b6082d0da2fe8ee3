"""Build the Slack bot and mount it on jobbot's aiohttp server: HTTP events or Socket Mode."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapter import Refused, refusal, to_aiohttp_response, to_bolt_request
from bot.backlog import Backlog
from bot.listeners import NotRecorded, register_listeners
from bot.notifier import SUBSCRIBER, Notifier
from bot.responder import Responder
from bot.router import Router
from bot.usergroups import UserGroups
from bot.workspace import Workspace
from core.errors import BadInput
from core.events import Outbox
from core.links import Links
from core.service import JobService

logger = logging.getLogger(__name__)
EVENTS_PATH = "/slack/events"
DEFAULT_API_URL = "https://www.slack.com/api/"


@dataclass(frozen=True)
class SlackConfig:
    """The Slack settings, as plain values (the bot never reads the environment itself)."""

    bot_token: str | None = None
    signing_secret: str | None = None
    app_token: str | None = None
    api_url: str | None = None

    @property
    def socket_mode(self) -> bool:
        return bool(self.bot_token and self.app_token)

    @property
    def half_configured(self) -> str | None:
        """What is missing when some of Slack's credentials are set but not enough for the bot
        (serve refuses to start, as with a half-configured GitHub App); None when they are all
        there or none is."""
        given = [name for name, value in (("SLACK_BOT_TOKEN", self.bot_token),
                                          ("SLACK_SIGNING_SECRET", self.signing_secret),
                                          ("SLACK_APP_TOKEN", self.app_token)) if value]
        if not given:
            return None
        if not self.bot_token:
            return (f"Slack is half configured: {' and '.join(given)} set without "
                    "SLACK_BOT_TOKEN (unset them all to run without the bot)")
        if not (self.signing_secret or self.app_token):
            return ("Slack is half configured: SLACK_BOT_TOKEN needs SLACK_SIGNING_SECRET "
                    "(HTTP mode) or SLACK_APP_TOKEN (Socket Mode)")
        return None

    @property
    def missing(self) -> str | None:
        """Why the bot cannot run, or None when it can."""
        if not self.bot_token:
            return "no SLACK_BOT_TOKEN"
        if not (self.signing_secret or self.app_token):
            return "SLACK_BOT_TOKEN without SLACK_SIGNING_SECRET (HTTP) or SLACK_APP_TOKEN"
        return None


@dataclass
class SlackBot:
    """The pieces of a running bot, for tests and for `serve`."""

    bolt: AsyncApp
    client: AsyncWebClient
    router: Router
    notifier: Notifier
    backlog: Backlog
    respond: Responder
    # What the pages' Sign in with Slack asks: the workspace, user groups (shared cache).
    workspace: Workspace
    # HTTP mode: checks each request's signature at the edge (bot/adapter.py).
    signing_secret: bytes | None = None
    socket: AsyncSocketModeHandler | None = None


BOT = web.AppKey("slack_bot", SlackBot)


def build(config: SlackConfig, service: JobService, links: Links) -> SlackBot:
    """The Bolt app, its Web API client (SLACK_API_URL honoured), router and notifier."""
    client = AsyncWebClient(token=config.bot_token, base_url=config.api_url or DEFAULT_API_URL)
    with _without_oauth_settings():
        bolt = AsyncApp(client=client,
                        # HTTP requests are checked at the edge (bot/adapter.py); Socket Mode
                        # messages come over an authenticated websocket, unsigned.
                        request_verification_enabled=False,
                        # Listeners only record the request and ack; running them inline
                        # answers as soon as they return.
                        process_before_response=True,
                        logger=logging.getLogger("bot.bolt"))
    bolt.error(_listener_failed)
    groups = UserGroups(client)
    router = Router(service, links, groups=groups)
    backlog = Backlog(service.store)
    service.replica.on_beat("slack requests", backlog.take_over)
    respond = Responder()
    register_listeners(bolt, router, backlog, respond)
    notifier = Notifier(client, service, links)
    secret = None if config.socket_mode else (config.signing_secret or "").encode()
    return SlackBot(bolt, client, router, notifier, backlog, respond, Workspace(client, groups),
                    secret)


def setup(app: web.Application, config: SlackConfig, service: JobService, links: Links,
          outbox: Outbox) -> SlackBot | None:
    """Mount the bot on `app` (route or Socket Mode) and subscribe its notifier; None if off
    (no Slack credentials at all); BadInput if only some are set."""
    if config.half_configured:
        raise BadInput(config.half_configured)
    if config.missing:
        return None
    bot = build(config, service, links)
    app[BOT] = bot
    outbox.subscribe(SUBSCRIBER, bot.notifier)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    if config.socket_mode:
        bot.socket = AsyncSocketModeHandler(bot.bolt, app_token=config.app_token,
                                            web_client=bot.client)
        app.on_startup.append(_connect_socket)
        app.on_cleanup.append(_close_socket)
        logger.info("Slack bot connecting over Socket Mode")
    else:
        app.router.add_post(EVENTS_PATH, _events)
        logger.info("Slack bot listening on POST %s", EVENTS_PATH)
    return bot


@contextlib.contextmanager
def _without_oauth_settings() -> Iterator[None]:
    """Bolt switches to OAuth installs (and answers every command "please reinstall this
    app") when it finds SLACK_CLIENT_ID and SLACK_CLIENT_SECRET in the environment; jobbot
    uses those for Sign in with Slack only, and its bot runs on its one bot token."""
    hidden = {name: os.environ.pop(name) for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET")
              if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


async def _listener_failed(error: Exception) -> BoltResponse:
    """A request that could not be recorded is answered 503, unacknowledged, so Slack tells
    the person it failed and nothing happens; the listener logged why."""
    if isinstance(error, NotRecorded):
        message = "jobbot could not record the request: try again later"
    else:
        logger.error("a Slack listener failed", exc_info=error)
        message = "jobbot could not take the request: try again later"
    return BoltResponse(status=503, body=json.dumps({"error": message}),
                        headers={"content-type": "application/json"})


async def _events(request: web.Request) -> web.Response:
    bot = request.app[BOT]
    assert bot.signing_secret is not None  # the route exists in HTTP mode only
    try:
        bolt_request = await to_bolt_request(request, bot.signing_secret)
    except Refused as exc:
        return refusal(exc)
    return to_aiohttp_response(await bot.bolt.async_dispatch(bolt_request))


async def _start(app: web.Application) -> None:
    """One HTTP session for every Web API call and response_url post; replay unfinished work."""
    bot = app[BOT]
    session = aiohttp.ClientSession()
    bot.client.session = session
    bot.respond.session = session
    replayed = await bot.backlog.replay()
    if replayed:
        logger.info("replaying %d Slack requests acknowledged before a restart", replayed)


async def _stop(app: web.Application) -> None:
    bot = app[BOT]
    await bot.backlog.close()
    session = bot.respond.session
    bot.client.session = bot.respond.session = None
    if session is not None:
        await session.close()


async def _connect_socket(app: web.Application) -> None:
    socket = app[BOT].socket
    if socket is not None:
        await socket.connect_async()  # type: ignore[no-untyped-call]


async def _close_socket(app: web.Application) -> None:
    socket = app[BOT].socket
    if socket is not None:
        await socket.close_async()  # type: ignore[no-untyped-call]

"""Build the Slack bot and mount it on jobbot's aiohttp server: HTTP events or Socket Mode."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapter import to_aiohttp_response, to_bolt_request
from bot.backlog import Backlog
from bot.listeners import RECORDED, register_listeners, work_of
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
    # HTTP mode: checks the signature before the intake records a request (Bolt checks again).
    verifier: SignatureVerifier | None = None
    socket: AsyncSocketModeHandler | None = None


BOT = web.AppKey("slack_bot", SlackBot)


def build(config: SlackConfig, service: JobService, links: Links) -> SlackBot:
    """The Bolt app, its Web API client (SLACK_API_URL honoured), router and notifier."""
    client = AsyncWebClient(token=config.bot_token, base_url=config.api_url or DEFAULT_API_URL)
    bolt = AsyncApp(client=client, signing_secret=config.signing_secret or "",
                    # Socket Mode messages come over an authenticated websocket, unsigned.
                    request_verification_enabled=not config.socket_mode,
                    # Listeners only record the request and ack; running them inline answers
                    # as soon as they return, instead of Bolt polling for the ack every 10 ms.
                    process_before_response=True,
                    logger=logging.getLogger("bot.bolt"))
    groups = UserGroups(client)
    router = Router(service, links, groups=groups)
    backlog = Backlog(service.store)
    respond = Responder()
    register_listeners(bolt, router, backlog, respond)
    notifier = Notifier(client, service, links, give_way=backlog.give_way)
    verifier = None if config.socket_mode else SignatureVerifier(config.signing_secret or "")
    return SlackBot(bolt, client, router, notifier, backlog, respond, Workspace(client, groups),
                    verifier)


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


async def _events(request: web.Request) -> web.Response:
    bot = request.app[BOT]
    with bot.backlog.ack_due():
        bolt_request = await to_bolt_request(request)
        try:
            await _record_first(bot, bolt_request)
        except Exception:
            logger.exception("a Slack request could not be recorded")
            return web.json_response(
                {"error": "jobbot could not record the request: try again later"}, status=503)
        bolt_response = await bot.bolt.async_dispatch(bolt_request)
    return to_aiohttp_response(bolt_response)


async def _record_first(bot: SlackBot, bolt_request: AsyncBoltRequest) -> None:
    """Record a signed request's work before Bolt handles it (the listener then only acks).

    Requests that arrive together wait for the same commit. Recorded in the listener, each
    went through all of Bolt's dispatch before that wait, so a burst's first 50 answers all
    went out together after the commit: in bench.slack_ack those were its slowest answers
    (about 15 ms). Recorded here, Bolt's dispatch comes after the wait, and the answers go
    out one by one while the next requests are dispatched (about 13 ms). An unsigned
    request is not recorded: Bolt answers it 401.
    """
    headers = bolt_request.headers
    if bot.verifier is None or not bot.verifier.is_valid(
            bolt_request.raw_body, headers.get("x-slack-request-timestamp", ["0"])[0],
            headers.get("x-slack-signature", [""])[0]):
        return
    work = work_of(bolt_request.body)
    if work is not None:
        await bot.backlog.accept(*work, bolt_request.body)
        bolt_request.context[RECORDED] = True


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

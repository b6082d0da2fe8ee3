"""The one aiohttp server: health routes and the pages; the Slack bot and GitHub App mount here."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import secrets
import signal
import sys

from aiohttp import web
from pydantic import SecretStr

import github_app.app
import github_app.manifest
import github_app.setup
from bot import app as slack
from core.errors import BadInput
from core.events import Outbox
from core.scheduler import Scheduler
from github_app.config import GitHubConfig
from jobbot.settings import Settings
from jobbot.wiring import Runtime, make_builder
from web import oidc
from web import routes as web_routes
from web.context import WEB
from web.oidc import SlackDirectory, SlackSignIn

logger = logging.getLogger(__name__)
RUNTIME = web.AppKey("runtime", Runtime)
OUTBOX = web.AppKey("outbox", Outbox)


async def _prepare_outbox(app: web.Application) -> None:
    # Runs in AppRunner.setup(), before the site listens (subscribers are all in by then).
    await app[OUTBOX].prepare()


def make_app(runtime: Runtime, outbox: Outbox | None = None, *,
             browse_token: str | None = None) -> web.Application:
    """The server's routes; front ends mount theirs and subscribe to the run-event outbox.
    `browse_token`: the token of the link a local `serve` prints (see Settings.local_browsing)."""
    app = web.Application()
    app[RUNTIME] = runtime
    app[OUTBOX] = outbox or Outbox(runtime.store, runtime.service.changes)
    app.on_startup.append(_prepare_outbox)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    bot = slack.setup(app, slack_config(runtime.settings), runtime.service, runtime.links,
                      app[OUTBOX])
    web_routes.setup(app, runtime.service, runtime.links,
                     web_settings(runtime.settings, bot.workspace if bot else None,
                                  browse_token))
    github = github_config(runtime)
    workspaces = runtime.settings.JOBBOT_DATA_DIR.resolve() / "workspaces"
    activate = None
    if github is not None:
        github_app.app.setup(app, config=github, service=runtime.service, links=runtime.links,
                             outbox=app[OUTBOX], builder=make_builder(runtime),
                             workspaces=workspaces)
    else:
        activate = github_app.app.setup_standby(
            app, service=runtime.service, links=runtime.links, builder=make_builder(runtime),
            workspaces=workspaces).activate
    github_app.setup.mount(app, github_setup_options(runtime, github), activate)
    return app


def github_setup_options(runtime: Runtime,
                         github: GitHubConfig | None) -> github_app.setup.SetupOptions:
    """/github/setup's settings; besides loopback, people signed in on the pages (Slack or
    the browsing token) may register the App."""
    settings = runtime.settings

    def signed_in(request: web.Request) -> bool:
        return request.app[WEB].access.is_browser(request)

    return github_app.setup.SetupOptions(
        public_url=runtime.links.public_url, public_url_set=bool(settings.JOBBOT_PUBLIC_URL),
        api_url=settings.GITHUB_API_URL.rstrip("/") if settings.GITHUB_API_URL else None,
        data_dir=settings.JOBBOT_DATA_DIR.resolve(),
        state_key=runtime.links.subkey("github-setup"),
        default_name=f"jobbot-{runtime.app.app}"[:github_app.manifest.MAX_NAME],
        prefer_secret=settings.JOBBOT_EXECUTOR == "kubernetes",
        signed_in=signed_in, configured=github.app_id if github is not None else None)


def web_settings(settings: Settings, workspace: SlackDirectory | None,
                 browse_token: str | None = None) -> web_routes.WebSettings:
    """The pages' settings; Sign in with Slack needs the client id and secret and the bot. A
    browse token stands in for JOBBOT_WEB_TOKEN, and its holder acts as the local operator."""
    def plain(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    signin = None
    client_id, client_secret = settings.SLACK_CLIENT_ID, plain(settings.SLACK_CLIENT_SECRET)
    if bool(client_id) != bool(client_secret):
        raise BadInput("Sign in with Slack needs both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
    if client_id and client_secret:
        if workspace is None:
            raise BadInput("Sign in with Slack (SLACK_CLIENT_ID) needs the Slack bot too "
                           "(SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET or SLACK_APP_TOKEN): "
                           "it checks the workspace and user groups")
        signin = SlackSignIn(client_id, client_secret,
                             settings.SLACK_API_URL or oidc.DEFAULT_API_URL)
    local = browse_token is not None and settings.local_browsing
    return web_routes.WebSettings(
        web_token=browse_token if local else plain(settings.JOBBOT_WEB_TOKEN),
        local_operator=operator_name() if local else None,
        secure_cookies=settings.public_url.startswith("https://"),
        slack_signin=signin, slack_directory=workspace,
        metrics_token=plain(settings.JOBBOT_METRICS_TOKEN),
        metrics_open=settings.JOBBOT_METRICS_OPEN)


def slack_config(settings: Settings) -> slack.SlackConfig:
    def plain(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    return slack.SlackConfig(bot_token=plain(settings.SLACK_BOT_TOKEN),
                             signing_secret=plain(settings.SLACK_SIGNING_SECRET),
                             app_token=plain(settings.SLACK_APP_TOKEN),
                             api_url=settings.SLACK_API_URL)


def github_config(runtime: Runtime) -> GitHubConfig | None:
    """The GitHub App's settings, or None when neither GITHUB_* nor the file /github/setup
    saves holds them (BadInput if half set or the file is broken)."""
    s = runtime.settings
    try:
        return GitHubConfig.from_values(*s.github_app_values(), s.GITHUB_API_URL)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def operator_name() -> str:
    """The user who started this process: who acts from a browser holding the local token."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The database answers, its schema is current, and the executor can take runs."""
    runtime = request.app[RUNTIME]
    checks: dict[str, str] = {}
    try:
        current = await asyncio.to_thread(runtime.store.schema_is_current)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if current else "pending"
    except Exception as exc:  # noqa: BLE001  (any database failure means "not ready")
        checks["database"] = f"error: {type(exc).__name__}"
    checks["executor"] = "ok" if runtime.service.executor.is_ready() else "not ready"
    ready = all(value == "ok" for value in checks.values())
    return web.json_response({"status": "ok" if ready else "unavailable", "checks": checks},
                             status=200 if ready else 503)


async def serve(runtime: Runtime) -> int:
    """Serve until SIGINT or SIGTERM, then stop runs cleanly (they end `cancelled`)."""
    settings = runtime.settings
    service = runtime.service
    settled = await service.reconcile()
    if settled:
        logger.info("start-up: took over %d unfinished runs of processes that stopped", settled)
    # A fresh token per start, so a link from an earlier start (or its cookie) opens nothing.
    browse_token = secrets.token_urlsafe(32) if settings.local_browsing else None
    app = make_app(runtime, browse_token=browse_token)
    outbox = app[OUTBOX]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # The lease before the first request: what this process records is never without one.
    await service.replica.register()
    site = web.TCPSite(runner, settings.JOBBOT_HOST, settings.JOBBOT_PORT)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await service.replica.end()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise BadInput(f"cannot listen on {settings.JOBBOT_HOST}:{settings.JOBBOT_PORT} "
                       f"({why}): set JOBBOT_HOST or JOBBOT_PORT") from None
    logger.info("jobbot serving app %s on http://%s:%s (executor %s; replica %s, its lease "
                "renewed every %s s)", runtime.app.app, settings.JOBBOT_HOST,
                settings.JOBBOT_PORT, service.executor.name, service.replica.id,
                service.replica.period)
    if browse_token is not None:
        # To the terminal only, never through logging: the link signs a browser in.
        print(f"Open this link to browse jobbot and run jobs (it signs this browser in; a new "
              f"one is made at every start):\n    {runtime.links.public_url}/?token={browse_token}",
              file=sys.stderr, flush=True)
    slack_off = slack_config(settings).missing
    if slack_off:
        logger.info("Slack is not configured (%s): running without the bot", slack_off)
    if github_config(runtime) is None:
        logger.info("GitHub is not configured: register the App at http://%s:%s/github/setup "
                    "(from this machine) or set GITHUB_APP_ID", settings.JOBBOT_HOST,
                    settings.JOBBOT_PORT)
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    scheduler = Scheduler(service)
    background = [asyncio.create_task(outbox.run(), name="outbox")]
    heartbeat = asyncio.create_task(service.replica.run(), name="heartbeat")
    cron = asyncio.create_task(scheduler.run(), name="scheduler")
    await stop.wait()
    why = received[0] if received else "stop"
    logger.info("%s received: stopping runs and shutting down", why)
    # No new scheduled run may start while the running ones are being stopped.
    cron.cancel()
    # No lease renewal after the stop ends it (service.shutdown).
    heartbeat.cancel()
    await asyncio.gather(cron, heartbeat, return_exceptions=True)
    await service.shutdown(f"jobbot stopped ({why}) while the run was going")
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await runner.cleanup()
    return 0

"""`GET /github/setup`: register jobbot's GitHub App from a manifest in one step, then keep its
credentials in the data directory (and start it) or hand them out as a Kubernetes Secret."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html import escape
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from core.errors import TemporaryFailure
from github_app import credentials
from github_app.api import GitHubApiError, convert_manifest
from github_app.config import GitHubConfig
from github_app.credentials import AppCredentials
from github_app.manifest import ACCOUNT, MAX_NAME, app_manifest, new_app_url, web_url

logger = logging.getLogger(__name__)
PAGE = "/github/setup"
CALLBACK = "/github/setup/callback"
COOKIE = "jobbot_github_setup"
# GitHub's manifest codes are good for an hour; the state lives as long.
STATE_TTL = 3600
# Headers a proxy adds: a request that passed one did not come from this machine's user.
_FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")
# GitHub's temporary codes are hex; anything else never reaches the API's path.
_CODE = re.compile(r"[A-Za-z0-9_-]{1,100}")
STORES = ("data", "secret")


@dataclass(frozen=True)
class SetupOptions:
    """What the setup page needs from jobbot's settings, given by the composition root."""

    public_url: str
    # False when JOBBOT_PUBLIC_URL is not set (the public URL is only guessed).
    public_url_set: bool
    api_url: str | None
    data_dir: Path
    # Signs the state cookie (a subkey of JOBBOT_SECRET_KEY).
    state_key: bytes
    default_name: str
    # Default to a Kubernetes Secret rather than the data directory (a cluster install).
    prefer_secret: bool = False
    # A request allowed beyond loopback: signed in on the pages, or with the browsing token.
    signed_in: Callable[[web.Request], bool] = lambda request: False
    # The App id when the App is configured already (then the page is closed).
    configured: str | None = None


class GitHubSetup:
    """The setup page and GitHub's way back to it."""

    def __init__(self, options: SetupOptions,
                 activate: Callable[[GitHubConfig], Awaitable[None]] | None) -> None:
        self.options = options
        self.configured = options.configured
        self._activate = activate
        self._converting = asyncio.Lock()

    # -- the routes -------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        """GET /github/setup: the manifest form (owner, name, where the credentials go)."""
        refused = self._refusal(request)
        if refused is not None:
            return refused
        query = request.query
        organization = query.get("org", "").strip() if query.get("owner") == "org" else ""
        if query.get("owner") == "org" and not ACCOUNT.fullmatch(organization):
            return _page(400, "Not an organisation name",
                         "<p>An organisation's name has letters, digits and single hyphens, "
                         "39 characters at most.</p>" + _back())
        name = query.get("name", self.options.default_name).strip()
        if not name or len(name) > MAX_NAME or not name.isprintable():
            return _page(400, "Not an App name",
                         f"<p>The App's name has 1 to {MAX_NAME} printable characters (GitHub's "
                         "limit).</p>" + _back())
        writable = _writable(self.options.data_dir)
        store = query.get("store") or ("secret" if self.options.prefer_secret or not writable
                                       else "data")
        if store not in STORES:
            return _page(400, "Unknown storage", "<p>Choose the data directory or a "
                         "Kubernetes Secret.</p>" + _back())
        if store == "data" and not writable:
            return _page(400, "The data directory is not writable",
                         f"<p>jobbot cannot write to {escape(str(self.options.data_dir))}: "
                         "choose the Kubernetes Secret.</p>" + _back())
        state = secrets.token_urlsafe(24)
        redirect = self._base(request) + CALLBACK
        manifest = app_manifest(name, self.options.public_url, redirect)
        action = new_app_url(self.options.api_url, organization or None)
        body = self._form(action, state, manifest, name, organization, store, writable)
        response = _page(200, "Register the GitHub App", body)
        pending = {"s": state, "store": store, "exp": int(time.time()) + STATE_TTL}
        response.set_cookie(COOKIE, _sign(self.options.state_key, pending), httponly=True,
                            samesite="Lax", secure=redirect.startswith("https://"),
                            max_age=STATE_TTL, path=PAGE)
        return response

    async def callback(self, request: web.Request) -> web.Response:
        """GET /github/setup/callback?code=&state=: GitHub made the App; fetch its credentials
        and keep them (or show them as a Secret)."""
        refused = self._refusal(request)
        if refused is not None:
            return refused
        pending = _unsign(self.options.state_key, request.cookies.get(COOKIE))
        state = request.query.get("state", "")
        if pending is None:
            return _page(400, "No registration under way",
                         "<p>This answer from GitHub does not belong to a registration started "
                         "in this browser within the last hour.</p>" + _back())
        if not state or not hmac.compare_digest(state.encode(), str(pending["s"]).encode()):
            logger.warning("GitHub App setup refused: the state does not match")
            return _page(403, "Wrong state",
                         "<p>GitHub's answer does not carry the state of the registration "
                         "started here, so it is not used.</p>" + _back())
        code = request.query.get("code", "")
        if not _CODE.fullmatch(code):
            return _page(400, "No code", "<p>GitHub's answer has no valid <code>code</code>."
                         "</p>" + _back())
        async with self._converting:
            if self.configured is not None:
                return self._closed()
            response = await self._convert(code, str(pending.get("store")))
        if response.status != 424:  # the state is used up, unless the same code may be tried
            response.del_cookie(COOKIE, path=PAGE)
        return response

    # -- the work ---------------------------------------------------------------------------

    async def _convert(self, code: str, store: str) -> web.Response:
        try:
            made = AppCredentials.from_conversion(
                await convert_manifest(code, self.options.api_url))
        except GitHubApiError as exc:
            logger.warning("GitHub App setup: %s", exc)
            return _page(400, "GitHub refused the code",
                         f"<p>{escape(str(exc))}</p><p>A code is good once, for an hour: "
                         "register again.</p>" + _back())
        except (TemporaryFailure, ValueError) as exc:  # CredentialsError, or not JSON
            logger.warning("GitHub App setup: %s", exc)
            return _page(424, "GitHub did not answer as expected",
                         f"<p>{escape(str(exc))}</p><p>Reload this page to try the same code "
                         "again.</p>")
        logger.info("GitHub App %s (%s) registered", made.app_id, made.slug or "no slug")
        if store == "secret":
            return self._secret_page(made, "")
        try:
            path = credentials.save(self.options.data_dir, made)
        except FileExistsError:
            return _page(409, "Already registered",
                         "<p>The data directory holds an App's credentials already; jobbot "
                         "reads them at its next start.</p>")
        except OSError as exc:
            logger.warning("GitHub App setup: cannot write to %s: %s", self.options.data_dir,
                           exc.strerror or exc)
            why = (f"jobbot could not write to {self.options.data_dir} "
                   f"({exc.strerror or exc}), so here they are as a Kubernetes Secret.")
            return self._secret_page(made, why)
        logger.info("GitHub App %s: credentials saved to %s (mode 0600)", made.app_id, path)
        self.configured = made.app_id
        started = " Restart jobbot to use it."
        if self._activate is not None:
            try:
                await self._activate(GitHubConfig(made.app_id, made.private_key,
                                                  made.webhook_secret.encode(),
                                                  self.options.api_url))
                started = " jobbot serves its webhook now."
            except Exception:
                # Saved all the same: the next start reads the file.
                logger.exception("GitHub App %s: starting it failed; restart jobbot",
                                 made.app_id)
        install = (f'<p><a class="button" href="{escape(made.install_url)}">Install the App</a>'
                   " on the repositories jobbot should serve.</p>") if made.install_url else ""
        return _page(200, "GitHub App registered",
                     f"<p>The App {escape(made.slug or made.app_id)} (id "
                     f"{escape(made.app_id)}) is registered; its id, private key and webhook "
                     f"secret are in {escape(str(path))}, readable by jobbot's user only."
                     f"{started}</p>{install}")

    def _secret_page(self, made: AppCredentials, why: str) -> web.Response:
        install = (f' Then <a href="{escape(made.install_url)}">install the App</a> on the '
                   "repositories jobbot should serve.") if made.install_url else ""
        return _page(200, "GitHub App registered: its Secret",
                     (f"<p>{escape(why)}</p>" if why else "")
                     + "<p>Shown once: GitHub will not give these out again. Save it as "
                     "<code>github-secret.yaml</code>, then run <code>kubectl apply -n "
                     "NAMESPACE -f github-secret.yaml</code> and <code>kubectl rollout restart "
                     f"-n NAMESPACE deployment/jobbot</code> (the Deployment reads the Secret "
                     f"<code>{credentials.SECRET_NAME}</code>).{install}</p>"
                     f"<pre>{escape(credentials.kubernetes_secret(made))}</pre>")

    def _form(self, action: str, state: str, manifest: dict[str, Any], name: str,
              organization: str, store: str, writable: bool) -> str:
        personal = "" if organization else " checked"
        org = " checked" if organization else ""
        data = " checked" if store == "data" else ""
        data_off = "" if writable else " disabled"
        secret = " checked" if store == "secret" else ""
        warning = "" if self.options.public_url_set else (
            "<p class=\"warning\">JOBBOT_PUBLIC_URL is not set: GitHub will send webhooks to "
            f"{escape(self.options.public_url)}, which it cannot reach. Set it to an address "
            "GitHub reaches and restart jobbot first.</p>")
        where = escape(web_url(self.options.api_url))
        return (
            f"{warning}<form method=\"get\" action=\"{PAGE}\"><fieldset><legend>Owner</legend>"
            f"<label><input type=\"radio\" name=\"owner\" value=\"personal\"{personal}> "
            "my account</label> <label><input type=\"radio\" name=\"owner\" value=\"org\""
            f"{org}> the organisation</label> <input name=\"org\" value=\""
            f"{escape(organization)}\" placeholder=\"organisation\"></fieldset>"
            f"<label>App name <input name=\"name\" value=\"{escape(name)}\" maxlength=\""
            f"{MAX_NAME}\"></label><fieldset><legend>Keep the credentials</legend>"
            f"<label><input type=\"radio\" name=\"store\" value=\"data\"{data}{data_off}> in "
            f"{escape(str(self.options.data_dir))} (jobbot starts the App at once)</label> "
            f"<label><input type=\"radio\" name=\"store\" value=\"secret\"{secret}> show a "
            "Kubernetes Secret</label></fieldset><button>Change</button></form>"
            f"<form method=\"post\" action=\"{escape(action)}?{urlencode({'state': state})}\">"
            f"<input type=\"hidden\" name=\"manifest\" value=\""
            f"{escape(json.dumps(manifest))}\"><p>GitHub ({where}) asks you to confirm, then "
            "sends you back here.</p><button>Register the GitHub App</button></form>")

    def _base(self, request: web.Request) -> str:
        """Where GitHub sends the browser back: the address this person reached jobbot at
        from this machine, else the public URL."""
        if _local(request):
            return f"{request.scheme}://{request.host}"
        return self.options.public_url.rstrip("/")

    def _refusal(self, request: web.Request) -> web.Response | None:
        if self.configured is not None:
            return self._closed()
        if _local(request) or self.options.signed_in(request):
            return None
        logger.warning("GitHub App setup refused to %s: not local, not signed in",
                       request.remote)
        return _page(403, "Not from here",
                     "<p>The GitHub App is registered from jobbot's own machine (open "
                     "http://127.0.0.1:PORT/github/setup there, or through <code>kubectl "
                     "port-forward</code>), or after signing in to jobbot's pages.</p>")

    def _closed(self) -> web.Response:
        return _page(404, "The GitHub App is configured",
                     f"<p>jobbot uses the GitHub App {escape(self.configured or '')}. To "
                     "register another, remove its settings (GITHUB_* or "
                     f"{credentials.FILE_NAME} in the data directory) and restart jobbot.</p>")


def _local(request: web.Request) -> bool:
    """From this machine, as this machine's name, through no proxy: the peer is a loopback
    address, no forwarding header is set, and the Host is a loopback name (a page of another
    site that made its name resolve to 127.0.0.1 sends its own name)."""
    if any(header in request.headers for header in _FORWARDED):
        return False
    try:
        host = urlsplit(f"//{request.host}").hostname or ""
    except ValueError:  # a Host header no URL can hold ("[x")
        return False
    return _loopback(request.remote or "") and (
        host == "localhost" or host.endswith(".localhost") or _loopback(host))


def _loopback(address: str) -> bool:
    try:
        return ip_address(address).is_loopback
    except ValueError:
        return False


def _writable(directory: Path) -> bool:
    """The directory, or its nearest existing parent, takes new files."""
    path = directory.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _sign(key: bytes, values: dict[str, Any]) -> str:
    body = _b64(json.dumps(values, separators=(",", ":")).encode())
    return f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}"


def _unsign(key: bytes, text: str | None) -> dict[str, Any] | None:
    """The cookie's values, or None when missing, forged or expired."""
    if not text or not text.isascii() or text.count(".") != 1:
        return None
    body, mac = text.split(".")
    if not hmac.compare_digest(mac, _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())):
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    if not isinstance(values, dict) or not isinstance(values.get("exp"), int):
        return None
    return values if values["exp"] > time.time() and isinstance(values.get("s"), str) else None


def _back() -> str:
    return f'<p><a href="{PAGE}">Start again</a></p>'


def _page(status: int, title: str, body: str) -> web.Response:
    """A plain page; nothing is cached (the Secret page holds credentials)."""
    html = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)} · jobbot</title>"
            "<link rel=\"stylesheet\" href=\"/static/style.css\"></head>"
            f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>")
    return web.Response(status=status, text=html, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


def mount(app: web.Application, options: SetupOptions,
          activate: Callable[[GitHubConfig], Awaitable[None]] | None = None) -> GitHubSetup:
    """Add GET /github/setup and its callback; `activate` starts a freshly registered App."""
    setup = GitHubSetup(options, activate)
    app.router.add_get(PAGE, setup.page)
    app.router.add_get(CALLBACK, setup.callback)
    return setup

"""Sign in with Slack (OpenID Connect): who is at the page, so Cancel and Rerun can be offered."""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from web.access import LOGIN_COOKIE, LOGIN_TTL
from web.context import WEB, WebContext
from web.oidc import ISSUER, SignInFailed, SlackSignIn, exchange
from web.sessions import Viewer

logger = logging.getLogger(__name__)
CALLBACK_PATH = "/auth/slack/callback"
# What Sign in with Slack asks for: the Slack app's user scopes (`jobbot slack-manifest`).
SCOPES = "openid profile"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//evil` or a URL; no
    whitespace or control characters either, which browsers drop: `/\t/evil` is `//evil`)."""
    if (not value or not value.startswith("/") or value.startswith("//") or "\\" in value
            or any(c.isspace() or not c.isprintable() for c in value)):
        return "/jobs"
    return value


async def start(request: web.Request) -> web.StreamResponse:
    """GET /auth/slack: remember a fresh state and nonce in a cookie, then go to Slack."""
    ctx = request.app[WEB]
    signin = ctx.signin
    if signin is None:
        return _signin_off(ctx)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    query = {"response_type": "code", "scope": SCOPES, "client_id": signin.client_id,
             "state": state, "nonce": nonce, "redirect_uri": redirect_uri(ctx)}
    team = await ctx.directory.team_id() if ctx.directory is not None else None
    if team:
        query["team"] = team  # Slack skips the workspace picker
    response = web.HTTPSeeOther(f"{signin.authorize_url}?{urlencode(query)}")
    pending = {"s": state, "no": nonce, "next": safe_next(request.query.get("next"))}
    response.set_cookie(LOGIN_COOKIE, ctx.access.logins.dumps(pending, LOGIN_TTL),
                        httponly=True, samesite="Lax", secure=ctx.access.secure_cookies,
                        max_age=LOGIN_TTL, path="/auth/slack")
    raise response


async def callback(request: web.Request) -> web.StreamResponse:
    """GET /auth/slack/callback: check state, trade the code for an id_token, sign the person in."""
    ctx = request.app[WEB]
    signin = ctx.signin
    if signin is None:
        return _signin_off(ctx)
    pending = ctx.access.logins.loads(request.cookies.get(LOGIN_COOKIE))
    state = request.query.get("state", "")
    if pending is None:
        return _refused(ctx, "This sign-in was not started in this browser or took longer "
                        "than 10 minutes. Sign in again.")
    if not hmac.compare_digest(state.encode(), str(pending.get("s", "")).encode()):
        logger.warning("Slack sign-in refused: the state does not match")
        return _refused(ctx, "The sign-in answer does not belong to the sign-in started here. "
                        "Sign in again.")
    if "error" in request.query:
        return _refused(ctx, f"Slack did not sign you in ({request.query['error']}).")
    code = request.query.get("code", "")
    if not code:
        return _refused(ctx, "Slack's answer has no code. Sign in again.", status=400)
    try:
        claims = await exchange(signin, code, redirect_uri(ctx))
        viewer = await _viewer(ctx, signin, claims, str(pending.get("no", "")))
    except SignInFailed as exc:
        logger.warning("Slack sign-in failed: %s", exc)
        return _refused(ctx, str(exc))
    logger.info("signed in with Slack: %s (%s)", viewer.slack_user, viewer.team)
    response = web.HTTPSeeOther(safe_next(str(pending.get("next", ""))))
    ctx.access.set_session(response, viewer)
    response.del_cookie(LOGIN_COOKIE, path="/auth/slack")
    raise response


async def sign_out(request: web.Request) -> web.StreamResponse:
    """POST /auth/signout (from this site's own form): forget the session cookie."""
    ctx = request.app[WEB]
    if not ctx.access.same_origin(request):
        return ctx.error(403, "Refused", "This form must be sent from jobbot's own page.")
    response = ctx.render("error.html", {"status": 200, "title": "Signed out",
                                         "message": "You are signed out of jobbot."})
    ctx.access.clear_session(response)
    return response


def redirect_uri(ctx: WebContext) -> str:
    return ctx.access.links.public_url + CALLBACK_PATH


async def _viewer(ctx: WebContext, signin: SlackSignIn, claims: dict[str, Any],
                  nonce: str) -> Viewer:
    if claims.get("iss") != ISSUER or claims.get("aud") != signin.client_id:
        raise SignInFailed("Slack's id_token was not made for this jobbot.")
    if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
        raise SignInFailed("Slack's id_token belongs to another sign-in. Sign in again.")
    expires = claims.get("exp")
    if not isinstance(expires, int) or expires <= time.time():
        raise SignInFailed("Slack's id_token has expired. Sign in again.")
    user = claims.get("https://slack.com/user_id") or claims.get("sub")
    team = claims.get("https://slack.com/team_id")
    if not isinstance(user, str) or not isinstance(team, str) or not user or not team:
        raise SignInFailed("Slack's id_token does not say who you are.")
    expected = await ctx.directory.team_id() if ctx.directory is not None else None
    if expected is None:
        raise SignInFailed("jobbot cannot reach its Slack workspace to check yours; try again.")
    if team != expected:
        raise SignInFailed("You signed in to another Slack workspace than jobbot's.")
    name = claims.get("name")
    return Viewer(user, team, name if isinstance(name, str) and name else user)


def _signin_off(ctx: WebContext) -> web.Response:
    return ctx.error(404, "Sign-in is off",
                     "Set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to sign in with Slack.")


def _refused(ctx: WebContext, message: str, *, status: int = 403) -> web.Response:
    response = ctx.error(status, "Not signed in", message)
    response.del_cookie(LOGIN_COOKIE, path="/auth/slack")
    return response

"""Slack's side of "Sign in with Slack" (OpenID Connect) and the workspace questions."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

DEFAULT_API_URL = "https://slack.com/api/"
ISSUER = "https://slack.com"
_TIMEOUT = aiohttp.ClientTimeout(total=15)


class SlackDirectory(Protocol):
    """What the pages ask of the Slack workspace (the bot answers; web never imports it)."""

    async def team_id(self) -> str | None:
        """The workspace the bot is installed in; only its members may sign in."""
        ...

    async def groups_of(self, user: str, groups: tuple[str, ...]) -> frozenset[str]:
        """Which of `groups` have `user` as a member."""
        ...


@dataclass(frozen=True)
class SlackSignIn:
    """The Slack app's OAuth client (SLACK_CLIENT_ID / SLACK_CLIENT_SECRET) and where Slack is."""

    client_id: str
    client_secret: str
    api_url: str = DEFAULT_API_URL

    @property
    def authorize_url(self) -> str:
        """Slack's authorize page: `/openid/connect/authorize` next to the Web API's `/api/`."""
        parts = urlsplit(self.api_url)
        return f"{parts.scheme}://{parts.netloc}/openid/connect/authorize"

    @property
    def token_url(self) -> str:
        return self.api_url.rstrip("/") + "/openid.connect.token"


class SignInFailed(Exception):
    """Slack did not confirm who this is; the message says why, for the person."""


async def exchange(signin: SlackSignIn, code: str, redirect: str) -> dict[str, Any]:
    """openid.connect.token: the code for tokens; returns the id_token's claims.

    The id_token comes straight from Slack over TLS in answer to our own authenticated request,
    so (OpenID Connect Core 3.1.3.7) its issuer, audience, expiry and nonce are checked, and its
    signature need not be."""
    form = {"client_id": signin.client_id, "client_secret": signin.client_secret,
            "code": code, "redirect_uri": redirect, "grant_type": "authorization_code"}
    try:
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session, \
                session.post(signin.token_url, data=form) as response:
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SignInFailed(f"Slack could not be asked to confirm the sign-in "
                           f"({type(exc).__name__}); try again.") from exc
    if not isinstance(body, dict) or not body.get("ok"):
        error = body.get("error") if isinstance(body, dict) else None
        raise SignInFailed(f"Slack refused the sign-in ({error or 'no answer'}). Sign in again.")
    token = body.get("id_token")
    if not isinstance(token, str):
        raise SignInFailed("Slack's answer has no id_token.")
    return id_token_claims(token)


def id_token_claims(token: str) -> dict[str, Any]:
    """The claims (payload) of a JWT, unverified: see `exchange` for why that is sound here."""
    parts = token.split(".")
    if len(parts) != 3:
        raise SignInFailed("Slack's id_token is not a JWT.")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise SignInFailed("Slack's id_token cannot be read.") from exc
    if not isinstance(claims, dict):
        raise SignInFailed("Slack's id_token cannot be read.")
    return claims



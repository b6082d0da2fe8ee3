"""The Slack app manifest of this deployment: the `/job` command, the bot scopes of the Web API
methods the bot calls, interactivity and the request URLs, or Socket Mode."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from bot.app import EVENTS_PATH
from core.errors import BadInput

COMMAND = "/job"
# Where Sign in with Slack comes back to, and the user scopes it asks for (web/signin.py; the
# bot may not import web).
SIGNIN_CALLBACK_PATH = "/auth/slack/callback"
SIGNIN_SCOPES = ("openid", "profile")

# The bot scopes each Slack Web API method the bot calls needs: the one place to add a method
# (a test finds the calls in bot/ and fails for a method missing here).
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "conversations.join": ("channels:join",),
    "conversations.list": ("channels:read",),
    "usergroups.users.list": ("usergroups:read",),
    # A modal needs no scope: the trigger_id of the person's own command or click is the grant.
    "views.open": (),
}
# Scopes a feature needs without a Web API call: the slash command.
FEATURE_SCOPES = ("commands",)
USAGE_HINT = "run JOB [KEY=VALUE ...] | list | status | logs RUN | cancel RUN | rerun RUN | help"


def bot_scopes() -> list[str]:
    """Every bot scope jobbot needs, sorted."""
    scopes = set(FEATURE_SCOPES)
    for needed in METHOD_SCOPES.values():
        scopes.update(needed)
    return sorted(scopes)


def manifest(public_url: str | None, *, socket_mode: bool, name: str = "jobbot") -> dict[str, Any]:
    """The manifest (Slack's app manifest format) for jobbot at `public_url`; BadInput when
    Slack needs a request URL (not Socket Mode) and there is no https one."""
    base = _base(public_url, required=not socket_mode)
    command: dict[str, Any] = {"command": COMMAND, "description": "Run and follow jobs",
                               "usage_hint": USAGE_HINT, "should_escape": False}
    interactivity: dict[str, Any] = {"is_enabled": True}
    if not socket_mode:
        assert base is not None
        command["url"] = base + EVENTS_PATH
        interactivity["request_url"] = base + EVENTS_PATH
    oauth: dict[str, Any] = {"scopes": {"bot": bot_scopes()}}
    if base is not None:  # Sign in with Slack, once SLACK_CLIENT_ID and _SECRET are set
        oauth = {"redirect_urls": [base + SIGNIN_CALLBACK_PATH],
                 "scopes": {"bot": bot_scopes(), "user": list(SIGNIN_SCOPES)}}
    return {
        "display_information": {
            "name": name,
            "description": "Runs your team's jobs: /job run, logs, cancel, rerun",
        },
        "features": {
            "bot_user": {"display_name": name, "always_online": True},
            "slash_commands": [command],
        },
        "oauth_config": oauth,
        "settings": {
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }


def _base(public_url: str | None, *, required: bool) -> str | None:
    if not public_url:
        if required:
            raise BadInput("JOBBOT_PUBLIC_URL is not set: Slack sends commands and clicks to "
                           "JOBBOT_PUBLIC_URL/slack/events; set it to jobbot's public https "
                           "URL, or pass --socket-mode (no public URL needed)")
        return None
    parts = urlsplit(public_url)
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        if not required:
            return None  # Socket Mode: the URL only serves sign-in, which needs https too
        raise BadInput(f"JOBBOT_PUBLIC_URL must be an https:// URL for Slack to send requests "
                       f"to, not {public_url[:200]!r}; or pass --socket-mode")
    return public_url.rstrip("/")

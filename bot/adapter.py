"""The HTTP edge: a signed aiohttp request to a Bolt request, and a Bolt response back.

The signature is checked on the raw bytes before anything is decoded or parsed; the body is
then parsed once, here, and only a body of the shapes Slack sends reaches Bolt. Bolt's own
signature check is off for HTTP requests: this is the one check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.request import payload_utils
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

# Slack's timestamp is Unix seconds; its signature `v0=` and 64 hex digits.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
# Slack refuses to be believed about requests older than this (a replay).
MAX_AGE = 300
# Fields Slack sends as objects; a payload with another type there is not Slack's.
_OBJECT_FIELDS = ("user", "channel", "team", "enterprise", "container", "view", "event",
                  "message", "state")
# Fields Slack sends as strings, at the top and in `user` and `channel`: the listeners answer
# to response_url and name people and channels by them.
_TEXT_FIELDS = ("type", "response_url", "trigger_id", "user_id", "user_name", "channel_id",
                "text", "command")
_ID_FIELDS = ("id", "name", "username", "team_id")
# What Bolt reads from every request to match it to a listener: a body they cannot read
# would fail inside Bolt's dispatch.
_BOLT_VIEWS = (payload_utils.to_options, payload_utils.to_shortcut, payload_utils.to_action,
               payload_utils.to_view, payload_utils.to_command, payload_utils.to_event,
               payload_utils.to_message, payload_utils.to_step)
# A form has a few dozen fields at most; Slack's payloads are far below this.
_MAX_FIELDS = 100


class Refused(Exception):
    """The request is not Slack's, or not of a shape Slack sends: answered `status`."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def signed(secret: bytes, raw: bytes, timestamp: str, signature: str) -> bool:
    """Slack's v0 signature: HMAC-SHA256 of `v0:TIMESTAMP:BODY`, on the bytes as received
    (slack_sdk's verifier decodes them as UTF-8 first, and raises on anything else)."""
    if not (_TIMESTAMP.fullmatch(timestamp) and _SIGNATURE.fullmatch(signature)):
        return False
    if abs(time.time() - int(timestamp)) > MAX_AGE:
        return False
    expected = hmac.new(secret, b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256)
    return hmac.compare_digest(f"v0={expected.hexdigest()}".encode(), signature.encode())


async def to_bolt_request(request: web.Request, secret: bytes) -> AsyncBoltRequest:
    """The request for Bolt, once its signature is good and its body is Slack's shape."""
    raw = await request.read()
    if not signed(secret, raw, request.headers.get("X-Slack-Request-Timestamp", ""),
                  request.headers.get("X-Slack-Signature", "")):
        raise Refused(401, "the X-Slack-Signature signature is missing, wrong or too old")
    body = _parse(raw, request.content_type)
    headers: dict[str, str | Sequence[str]] = {
        name.lower(): request.headers.getall(name) for name in request.headers}
    try:
        # Bolt takes a parsed body only in its "socket_mode" mode, which otherwise only skips
        # Bolt's signature check: checked here already.
        bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=headers,
                                        mode="socket_mode")
        for view in _BOLT_VIEWS:
            view(body)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError):
        # Bolt reads a request's ids and payload from a dozen places of Slack's bodies (user,
        # channel, team, authorizations, event, actions[0]...) and trusts their shape there.
        raise Refused(400, "the body is not of a shape Slack sends") from None
    return bolt_request


def to_aiohttp_response(bolt_response: BoltResponse) -> web.Response:
    headers = bolt_response.first_headers_without_set_cookie()
    content_type = headers.pop("content-type", None) or (
        "application/json" if bolt_response.body.startswith("{") else "text/plain")
    return web.Response(status=bolt_response.status, body=bolt_response.body.encode(),
                        headers=headers, content_type=content_type.split(";")[0].strip())


def refusal(exc: Refused) -> web.Response:
    return web.json_response({"error": str(exc)}, status=exc.status)


def _parse(raw: bytes, content_type: str) -> dict[str, Any]:
    """A form (slash commands; clicks as its `payload` field) or a JSON object (events)."""
    try:
        text = raw.decode("utf-8")
        if content_type == "application/json":
            body = json.loads(text)
        else:
            form = {name: values[0] for name, values in parse_qs(
                text, keep_blank_values=True, max_num_fields=_MAX_FIELDS).items()}
            body = json.loads(form["payload"]) if "payload" in form else form
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError: JSON that does not parse, or a form with too many fields.
        raise Refused(400, "the body is not a Slack form or JSON object") from None
    if not isinstance(body, dict) or not _slack_shaped(body):
        raise Refused(400, "the body is not of a shape Slack sends")
    return body


def _slack_shaped(body: Mapping[str, Any]) -> bool:
    """The fields Bolt and the listeners read have the types Slack gives them."""
    if not _texts(body, _TEXT_FIELDS):
        return False
    if "command" in body and not body.get("user_id"):
        return False  # Slack names who typed every slash command
    if any(not isinstance(body.get(name), dict | None) for name in _OBJECT_FIELDS):
        return False
    if "event" in body and not isinstance(body["event"], dict):
        return False  # Bolt's middleware reads body.get("event", {}) as an object
    if not all(_texts(body.get(name) or {}, _ID_FIELDS) for name in ("user", "channel")):
        return False
    actions = body.get("actions", [])
    # Bolt matches a block action to its listener by its action_id, which Slack always sends.
    needed = ("action_id",) if body.get("type") == "block_actions" else ()
    return isinstance(actions, list) and all(
        isinstance(action, dict) and all(name in action for name in needed)
        and _texts(action, ("action_id", "value", "block_id", "action_ts"))
        for action in actions)


def _texts(fields: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    return all(isinstance(fields.get(name, ""), str) for name in names)

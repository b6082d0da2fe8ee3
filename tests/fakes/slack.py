"""A fake Slack on 127.0.0.1: the Web API and response_url as Slack answers them, and Slack's
side of the Events API (slash commands and button clicks, signed as Slack signs them)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
SIGNING_SECRET = "fake-signing-secret-8f14e45fceea167a"
# The app's OAuth client, for Sign in with Slack (OpenID Connect).
CLIENT_ID = "1111111111.2222222222"
CLIENT_SECRET = "fake-client-secret-c4ca4238a0b9"
# Slack's limits, enforced as Slack does (invalid_blocks / msg_too_long).
MAX_BLOCKS, MAX_SECTION_TEXT, MAX_BUTTON_VALUE, MAX_MESSAGE_TEXT = 50, 3000, 2000, 40000


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    # When the call arrived (time.time()), for benchmarks; not part of a call's equality.
    at: float = field(default_factory=time.time, compare=False)


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    history: list[str] = field(default_factory=list)  # earlier texts, oldest first


@dataclass(frozen=True)
class Person:
    """Who is signed in to Slack in the browser that visits the authorize page."""

    user: str = "U0ALICE"
    team: str = "T0FAKE"
    name: str = "Alice"


@dataclass
class _Grant:
    """An authorization code handed out by the authorize page, until traded (once)."""

    client_id: str
    redirect_uri: str
    nonce: str
    person: Person
    used: bool = False


@dataclass
class _Failure:
    error: str
    status: int
    retry_after: int | None
    times: int


class FakeSlack:
    """Answers chat.postMessage (to channels and, by user id, to the app's DM), chat.update,
    chat.postEphemeral, views.open, auth.test, usergroups.users.list, conversations.list,
    conversations.join, openid.connect.token and response_url posts, and Sign in with
    Slack's authorize page; records every call."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: list[Message] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        # Channel names and ids the bot may post to; others get channel_not_found.
        self.channels: dict[str, str] = {"#deploys": "C0DEPLOYS", "#general": "C0GENERAL"}
        self.channel_ids: set[str] = {"C0DEPLOYS", "C0GENERAL", "C0COMMAND", "C0OTHER"}
        self.not_in: set[str] = set()
        # Private channels cannot be joined by the app (it must be invited).
        self.private: set[str] = set()
        # DMs between the app and a person, opened by posting to the person's user id.
        self.dms: set[str] = set()
        # Messages refused for breaking Slack's limits: (method, error).
        self.refused: list[tuple[str, str]] = []
        self.usergroups: dict[str, list[str]] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        # Socket Mode: the connected app, and its acks of envelopes, by envelope id.
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_acks: dict[str, dict[str, Any]] = {}
        self._envelopes = itertools.count(1)
        # Sign in with Slack: the person at the browser (None: they press Cancel), codes.
        self.person: Person | None = Person()
        self.grants: dict[str, _Grant] = {}
        # Modals opened (views.open) and updated (views.update), as Slack holds them, by id;
        # trigger_ids already used (Slack takes each once).
        self.views: dict[str, dict[str, Any]] = {}
        self.used_triggers: set[str] = set()
        self._view_ids = itertools.count(1)

    # -- control --------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        # Most methods are POSTed; a few (usergroups.users.list) are GETs with a query string.
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/openid/connect/authorize", self._authorize)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def fail(self, method: str, error: str, *, status: int = 200, retry_after: int | None = None,
             times: int = 1) -> None:
        """The next `times` calls of `method` fail as Slack would fail them."""
        self._failures.setdefault(method, []).append(_Failure(error, status, retry_after, times))

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def parents(self, channel: str | None = None) -> list[Message]:
        return [m for m in self.messages if m.thread_ts is None
                and (channel is None or m.channel == channel)]

    def replies(self, parent: Message) -> list[Message]:
        return [m for m in self.messages if m.thread_ts == parent.ts]

    def texts_sent(self) -> list[str]:
        """Every mrkdwn text jobbot sent (message texts, section and context texts, fields,
        answers through response_url), as Slack reads them."""
        bodies = [c.params for c in self.calls]
        bodies += [r for rs in self.responses.values() for r in rs]
        texts: list[str] = []
        for body in bodies:
            texts += [str(body["text"])] if body.get("text") else []
            texts += _mrkdwn_texts(_blocks(body.get("blocks")))
        return texts

    def everything_sent(self) -> str:
        """Every text Slack received from jobbot, for checks that no secret got out."""
        parts = [json.dumps(c.params) for c in self.calls]
        parts += [json.dumps(r) for rs in self.responses.values() for r in rs]
        return "\n".join(parts)

    async def wait_for(self, check: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; calls: "
                                     f"{[c.method for c in self.calls]}")
            await asyncio.sleep(0.02)

    # -- the Web API ----------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append(Call(method, params))
        token = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        # openid.connect.token authenticates with the app's client id and secret instead.
        if (method != "openid.connect.token"
                and request.headers.get("Authorization") != f"Bearer {token}"):
            return _error("invalid_auth")
        failures = self._failures.get(method) or []
        if failures:
            failure = failures[0]
            failure.times -= 1
            if failure.times <= 0:
                failures.pop(0)
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
            return web.json_response({"ok": False, "error": failure.error},
                                     status=failure.status, headers=headers)
        handler = {
            "auth.test": self._auth_test, "chat.postMessage": self._post_message,
            "chat.update": self._update, "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._views_open, "views.update": self._views_update,
            "usergroups.users.list": self._usergroup_users,
            "apps.connections.open": self._connections_open,
            "openid.connect.token": self._openid_token,
            "conversations.join": self._join, "conversations.list": self._list_channels,
        }.get(method)
        if handler is None:
            return _error("unknown_method")
        return handler(params)

    def _auth_test(self, params: dict[str, Any]) -> web.Response:
        return web.json_response({"ok": True, "url": "https://fake.slack.test/", "team": "Fake",
                                  "user": "jobbot", "team_id": "T0FAKE", "user_id": "U0BOT",
                                  "bot_id": "B0BOT", "is_enterprise_install": False})

    def _channel(self, given: str) -> str | None:
        if given.startswith("U") and given[1:].isalnum():
            self.dms.add("D" + given[1:])
            return "D" + given[1:]  # a user id: Slack posts in the app's DM with them
        if given in self.dms:
            return given
        channel = self.channels.get(given, given)
        return channel if channel in self.channel_ids else None

    def _name_of(self, channel: str) -> str:
        names = {v: k.lstrip("#") for k, v in self.channels.items()}
        return names.get(channel, channel.lower())

    def _conversation(self, channel: str) -> dict[str, Any]:
        private = channel in self.private
        return {"id": channel, "name": self._name_of(channel), "is_channel": not private,
                "is_group": private, "is_im": False, "is_private": private,
                "is_archived": False, "is_general": channel == "C0GENERAL",
                "is_member": channel not in self.not_in, "created": 1700000000,
                "creator": "U0ADMIN", "num_members": 3}

    def _join(self, params: dict[str, Any]) -> web.Response:
        channel = str(params.get("channel", ""))
        if channel not in self.channel_ids:  # conversations.join takes an id, never a name
            return _error("channel_not_found")
        if channel in self.private:
            return _error("method_not_supported_for_channel_type")
        body: dict[str, Any] = {"ok": True, "channel": self._conversation(channel)}
        if channel not in self.not_in:
            body["warning"] = "already_in_channel"
            body["response_metadata"] = {"warnings": ["already_in_channel"]}
        self.not_in.discard(channel)
        body["channel"]["is_member"] = True
        return web.json_response(body)

    def _list_channels(self, params: dict[str, Any]) -> web.Response:
        # Public channels only unless asked for more; one small page at a time, with a cursor.
        types = str(params.get("types") or "public_channel").split(",")
        ids = sorted(c for c in self.channel_ids
                     if ("private_channel" in types) == (c in self.private)
                     or ("public_channel" in types and c not in self.private))
        start = int(params.get("cursor") or 0)
        limit = int(params.get("limit") or 100)
        page = ids[start:start + limit]
        cursor = str(start + limit) if start + limit < len(ids) else ""
        return web.json_response({"ok": True,
                                  "channels": [self._conversation(c) for c in page],
                                  "response_metadata": {"next_cursor": cursor}})

    def _check_message(self, params: dict[str, Any]) -> str | None:
        text = str(params.get("text") or "")
        problem = "msg_too_long" if len(text) > MAX_MESSAGE_TEXT else _invalid_blocks(
            params.get("blocks"))
        if problem:
            self.refused.append(("chat", problem))
        return problem

    def _post_message(self, params: dict[str, Any]) -> web.Response:
        channel = self._channel(str(params.get("channel", "")))
        if channel is None:
            return _error("channel_not_found")
        if channel in self.not_in:
            return _error("not_in_channel")
        problem = self._check_message(params)
        if problem:
            return _error(problem)
        thread = params.get("thread_ts")
        if thread and not any(m.ts == thread and m.channel == channel for m in self.messages):
            return _error("thread_not_found")
        ts = f"{1700000000 + next(self._ts)}.000100"
        message = Message(channel, ts, str(params.get("text") or ""),
                          _blocks(params.get("blocks")), thread)
        self.messages.append(message)
        return web.json_response({"ok": True, "channel": channel, "ts": ts,
                                  "message": _wire(message)})

    def _update(self, params: dict[str, Any]) -> web.Response:
        channel = self._channel(str(params.get("channel", "")))
        if channel is None:
            return _error("channel_not_found")
        found = next((m for m in self.messages
                      if m.channel == channel and m.ts == params.get("ts")), None)
        if found is None:
            return _error("message_not_found")
        problem = self._check_message(params)
        if problem:
            return _error(problem)
        found.history.append(found.text)
        found.text = str(params.get("text") or "")
        found.blocks = _blocks(params.get("blocks"))
        return web.json_response({"ok": True, "channel": channel, "ts": found.ts,
                                  "text": found.text, "message": _wire(found)})

    def _post_ephemeral(self, params: dict[str, Any]) -> web.Response:
        if self._channel(str(params.get("channel", ""))) is None:
            return _error("channel_not_found")
        problem = self._check_message(params)
        if problem:
            return _error(problem)
        return web.json_response({"ok": True, "message_ts": f"{time.time():.6f}"})

    def _views_open(self, params: dict[str, Any]) -> web.Response:
        trigger = str(params.get("trigger_id") or "")
        if not trigger:
            return _error("invalid_arguments")
        if trigger in self.used_triggers:
            return _error("expired_trigger_id")
        view, problem = _view(params.get("view"))
        if problem:
            self.refused.append(("views.open", problem))
            return _error(problem)
        self.used_triggers.add(trigger)
        view_id = f"V0FAKE{next(self._view_ids)}"
        opened = {"id": view_id, "team_id": "T0FAKE", "app_id": "A0JOBBOT",
                  "bot_id": "B0BOT", "hash": f"{time.time_ns()}.fakehash", "state":
                  {"values": {}}, "root_view_id": view_id, "previous_view_id": None,
                  "external_id": "", **view}
        self.views[view_id] = opened
        return web.json_response({"ok": True, "view": opened})

    def _views_update(self, params: dict[str, Any]) -> web.Response:
        view_id = str(params.get("view_id") or "")
        if view_id not in self.views:
            return _error("not_found")
        if params.get("hash") and params["hash"] != self.views[view_id]["hash"]:
            return _error("hash_conflict")
        view, problem = _view(params.get("view"))
        if problem:
            self.refused.append(("views.update", problem))
            return _error(problem)
        self.views[view_id] = {**self.views[view_id], **view,
                               "hash": f"{time.time_ns()}.fakehash"}
        return web.json_response({"ok": True, "view": self.views[view_id]})

    def _usergroup_users(self, params: dict[str, Any]) -> web.Response:
        group = str(params.get("usergroup", ""))
        if group not in self.usergroups:
            return _error("no_such_subteam")
        return web.json_response({"ok": True, "users": self.usergroups[group]})

    def _connections_open(self, params: dict[str, Any]) -> web.Response:
        ws_url = self.url.replace("http://", "ws://", 1) + "/socket"
        return web.json_response({"ok": True, "url": ws_url})

    # -- Sign in with Slack (OpenID Connect) ----------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        """The browser's stop at Slack: the person agrees, Slack sends it back with a code."""
        query = request.query
        if query.get("client_id") != CLIENT_ID:
            return web.Response(status=400, text="invalid_client_id")
        redirect = query.get("redirect_uri", "")
        if (query.get("response_type") != "code" or not redirect
                or "openid" not in query.get("scope", "").split()):
            return web.Response(status=400, text="invalid_request")
        state = query.get("state", "")
        if self.person is None:
            answer = {"error": "access_denied", "state": state}
        else:
            code = f"{next(self._ts)}.{time.time_ns()}.code"
            self.grants[code] = _Grant(CLIENT_ID, redirect, query.get("nonce", ""), self.person)
            answer = {"code": code, "state": state}
        raise web.HTTPFound(f"{redirect}?{urllib.parse.urlencode(answer)}")

    def _openid_token(self, params: dict[str, Any]) -> web.Response:
        if params.get("client_id") != CLIENT_ID:
            return _error("invalid_client_id")
        if params.get("client_secret") != CLIENT_SECRET:
            return _error("bad_client_secret")
        grant = self.grants.get(str(params.get("code", "")))
        if grant is None or grant.used:
            return _error("invalid_code")
        if params.get("redirect_uri") != grant.redirect_uri:
            return _error("bad_redirect_uri")
        grant.used = True
        person, now = grant.person, int(time.time())
        claims = {
            "iss": "https://slack.com", "sub": person.user, "aud": grant.client_id,
            "exp": now + 300, "iat": now, "auth_time": now, "nonce": grant.nonce,
            "at_hash": "fake-at-hash", "https://slack.com/team_id": person.team,
            "https://slack.com/user_id": person.user, "locale": "en-US", "name": person.name,
            "given_name": person.name, "family_name": "",
            "https://slack.com/team_name": "Fake", "https://slack.com/team_domain": "fake",
        }
        return web.json_response({"ok": True, "access_token": f"xoxp-fake-{person.user}",
                                  "token_type": "Bearer", "id_token": _jwt(claims)})

    # -- Socket Mode ----------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "A0JOBBOT"},
                            "debug_info": {"host": "fake", "approximate_connection_time": 3600}})
        self.sockets.append(ws)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                self.socket_acks[str(data.get("envelope_id"))] = data
        self.sockets.remove(ws)
        return ws

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Deliver a request to the app over Socket Mode; returns the envelope id."""
        envelope_id = f"env-{next(self._envelopes)}"
        ws = await self.wait_for(lambda: self.sockets and self.sockets[-1])
        await ws.send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                            "accepts_response_payload": kind != "events_api",
                            "retry_attempt": 0, "retry_reason": ""})
        return envelope_id

    # -- response_url ---------------------------------------------------------------------

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        problem = _invalid_blocks(body.get("blocks"))
        if problem:
            self.refused.append(("response_url", problem))
            return web.Response(status=400, text=problem)
        self.responses.setdefault(request.match_info["key"], []).append(body)
        return web.Response(text="ok")


# -- Slack's side of the Events API: signed requests into jobbot ------------------------


class SlackSender:
    """Sends slash commands and button clicks to jobbot, signed with the signing secret."""

    def __init__(self, fake: FakeSlack, target_url: str, *, secret: str = SIGNING_SECRET,
                 session: aiohttp.ClientSession | None = None):
        self.fake = fake
        self.target = target_url
        self.secret = secret
        self._ids = itertools.count(1)
        self.session = session or aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    def command_body(self, text: str, *, user: str = "U0ALICE", channel: str = "C0COMMAND",
                     trigger_id: str | None = None, command: str = "/job") -> tuple[str, str]:
        """A form-encoded slash command as Slack sends it, and its trigger_id."""
        trigger = trigger_id or f"{next(self._ids)}.{time.time_ns()}.fake"
        fields = {
            "token": "deprecated-verification-token", "team_id": "T0FAKE",
            "team_domain": "fake", "channel_id": channel, "channel_name": "commands",
            "user_id": user, "user_name": user.lower(), "command": command, "text": text,
            "api_app_id": "A0JOBBOT", "is_enterprise_install": "false",
            "response_url": f"{self.fake.url}/response/{trigger}", "trigger_id": trigger,
        }
        return urllib.parse.urlencode(fields), trigger

    def action_body(self, action_id: str, value: str, *, user: str = "U0ALICE",
                    channel: str = "C0COMMAND") -> tuple[str, str]:
        """A block_actions payload (a button click) as Slack sends it, and its response key."""
        trigger = f"{next(self._ids)}.{time.time_ns()}.fake"
        payload = {
            "type": "block_actions", "team": {"id": "T0FAKE", "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0FAKE"},
            "api_app_id": "A0JOBBOT", "token": "deprecated-verification-token",
            "container": {"type": "message", "channel_id": channel, "message_ts": "1.1"},
            "trigger_id": trigger, "channel": {"id": channel, "name": "commands"},
            "response_url": f"{self.fake.url}/response/{trigger}",
            "actions": [{"action_id": action_id, "block_id": "b1", "value": value,
                         "type": "button", "action_ts": f"{time.time():.6f}",
                         "text": {"type": "plain_text", "text": "x"}}],
        }
        return urllib.parse.urlencode({"payload": json.dumps(payload)}), trigger

    def view_submission(self, view: dict[str, Any], values: dict[str, str], *,
                        user: str = "U0ALICE") -> str:
        """A view_submission payload as Slack sends it when `user` presses the modal's
        submit button, with `values` typed or chosen in its input blocks (by block_id)."""
        state: dict[str, dict[str, Any]] = {}
        for block in view.get("blocks") or []:
            if block.get("type") != "input":
                continue
            element = block["element"]
            value = values.get(block["block_id"])
            kind = element["type"]
            if kind == "static_select":
                option = next((o for o in element["options"] if o["value"] == value), None)
                entry: dict[str, Any] = {"type": kind, "selected_option": option}
            else:
                entry = {"type": kind, "value": value}
            state[block["block_id"]] = {element["action_id"]: entry}
        payload = {
            "type": "view_submission", "team": {"id": "T0FAKE", "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(),
                     "team_id": "T0FAKE"},
            "api_app_id": "A0JOBBOT", "token": "deprecated-verification-token",
            "trigger_id": f"{next(self._ids)}.{time.time_ns()}.fake",
            "view": {**view, "state": {"values": state}},
            "response_urls": [], "is_enterprise_install": False, "enterprise": None,
        }
        return urllib.parse.urlencode({"payload": json.dumps(payload)})

    async def submit(self, view: dict[str, Any], values: dict[str, str],
                     **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
        """Submit a modal; (HTTP status, the JSON answer, or None for an empty one)."""
        body = self.view_submission(view, values, **kwargs)
        status, text = await self.post(body, self.headers(body))
        return status, (json.loads(text) if text.strip() else None)

    def view_action_body(self, view: dict[str, Any], block_id: str, value: str, *,
                         user: str = "U0ALICE") -> str:
        """A block_actions payload from inside a modal (a field changed), as Slack sends it."""
        block = next(b for b in view["blocks"] if b.get("block_id") == block_id)
        element = block["element"]
        action: dict[str, Any] = {"action_id": element["action_id"], "block_id": block_id,
                                  "type": element["type"], "action_ts": f"{time.time():.6f}"}
        if element["type"] == "static_select":
            action["selected_option"] = next(o for o in element["options"]
                                             if o["value"] == value)
        else:
            action["value"] = value
        payload = {
            "type": "block_actions", "team": {"id": "T0FAKE", "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0FAKE"},
            "api_app_id": "A0JOBBOT", "token": "deprecated-verification-token",
            "container": {"type": "view", "view_id": view["id"]},
            "trigger_id": f"{next(self._ids)}.{time.time_ns()}.fake",
            "view": view, "actions": [action],
        }
        return urllib.parse.urlencode({"payload": json.dumps(payload)})

    def headers(self, body: str | bytes, *, timestamp: int | None = None,
                retry_num: int | None = None) -> dict[str, str]:
        """Slack's headers for `body`; bytes are signed as they are (Slack signs the raw body,
        which is how a body that is not UTF-8 gets signed too)."""
        ts = str(timestamp if timestamp is not None else int(time.time()))
        raw = body.encode() if isinstance(body, str) else body
        mac = hmac.new(self.secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={mac.hexdigest()}",
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return headers

    async def post(self, body: str, headers: dict[str, str]) -> tuple[int, str]:
        async with self.session.post(self.target, data=body.encode(), headers=headers) as resp:
            return resp.status, await resp.text()

    async def command(self, text: str, **kwargs: Any) -> tuple[int, str, str]:
        """Send `/job text`; (HTTP status, body of the ack, trigger_id)."""
        body, trigger = self.command_body(text, **kwargs)
        status, answer = await self.post(body, self.headers(body))
        return status, answer, trigger

    async def click(self, action_id: str, value: str, **kwargs: Any) -> tuple[int, str]:
        body, trigger = self.action_body(action_id, value, **kwargs)
        status, _ = await self.post(body, self.headers(body))
        return status, trigger

    async def answer(self, key: str, timeout: float = 15.0) -> dict[str, Any]:
        """The first response_url post jobbot made for the request `key`."""
        answers = await self.fake.wait_for(lambda: self.fake.responses.get(key), timeout)
        return dict(answers[0])


# -- helpers ------------------------------------------------------------------------------


async def _params(request: web.Request) -> dict[str, Any]:
    # Slack reads arguments from the query string as well as the body (slack_sdk sends some
    # methods, e.g. conversations.join, as a POST with the arguments in the query).
    query = dict(request.query)
    if request.method == "GET":
        return query
    if request.content_type == "application/json":
        return {**query, **dict(await request.json())}
    form = await request.post()
    return {**query, **{k: v for k, v in form.items() if isinstance(v, str)}}


def _blocks(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    return list(json.loads(raw) if isinstance(raw, str) else raw)


def _view(raw: Any) -> tuple[dict[str, Any], str | None]:
    """A modal as views.open/views.update take it, or the error Slack gives for it."""
    try:
        view = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}, "invalid_arguments"
    if not isinstance(view, dict) or view.get("type") != "modal":
        return {}, "invalid_arguments"
    blocks = view.get("blocks") or []
    titles = [view.get(k) for k in ("title", "submit", "close") if view.get(k) is not None]
    if (not view.get("title") or any(len(str((t or {}).get("text", ""))) > 24 for t in titles)
            or len(blocks) > 100 or len(str(view.get("private_metadata", ""))) > 3000
            or len(str(view.get("callback_id", ""))) > 255):
        return {}, "invalid_arguments"
    block_ids = [b.get("block_id") for b in blocks if b.get("block_id")]
    if len(block_ids) != len(set(block_ids)) or _invalid_blocks(blocks):
        return {}, "invalid_blocks"
    for block in blocks:
        if block.get("type") == "input":
            element = block.get("element") or {}
            if not block.get("label") or not element.get("action_id") or (
                    element.get("type") not in ("plain_text_input", "number_input",
                                                "static_select")):
                return {}, "invalid_blocks"
            if element.get("type") == "static_select" and not element.get("options"):
                return {}, "invalid_blocks"
    if any(b.get("type") == "input" for b in blocks) and not view.get("submit"):
        return {}, "invalid_arguments"
    return view, None


def _invalid_blocks(raw: Any) -> str | None:
    """invalid_blocks where Slack would reject the blocks."""
    try:
        blocks = _blocks(raw)
    except (TypeError, ValueError):
        return "invalid_blocks_format"
    if len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        texts = [block.get("text") or {}, *(block.get("fields") or [])]
        if any(len(str(t.get("text", ""))) > MAX_SECTION_TEXT for t in texts):
            return "invalid_blocks"
        for element in block.get("elements") or []:
            if len(str(element.get("value", ""))) > MAX_BUTTON_VALUE:
                return "invalid_blocks"
    return None


def _mrkdwn_texts(node: Any) -> list[str]:
    if isinstance(node, list):
        return [text for item in node for text in _mrkdwn_texts(item)]
    if not isinstance(node, dict):
        return []
    found = [str(node["text"])] if node.get("type") == "mrkdwn" else []
    return found + [text for value in node.values() for text in _mrkdwn_texts(value)]


_CONTROL = re.compile(r"<([^<>]*)>")
_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)


def live_markup(text: str) -> list[str]:
    """What Slack reads as markup in a mrkdwn text, in code or not: the insides of its `<...>`
    (`!channel`, `@U123`, `#C123`, `!subteam^S1`, `https://x|label`)."""
    return _CONTROL.findall(text)


def outside_code(text: str) -> str:
    """A mrkdwn text without its code blocks and inline code, as Slack pairs the backticks."""
    return _CODE.sub("", text)


def inline_code(text: str) -> list[str]:
    """The insides of a mrkdwn text's inline code (outside code blocks)."""
    return [m[1:-1] for m in _CODE.findall(text) if not m.startswith("```")]


def _wire(message: Message) -> dict[str, Any]:
    return {"type": "message", "subtype": "bot_message", "text": message.text,
            "ts": message.ts, "user": "U0BOT", "bot_id": "B0BOT", "blocks": message.blocks,
            **({"thread_ts": message.thread_ts} if message.thread_ts else {})}


def _jwt(claims: dict[str, Any]) -> str:
    """A JWT shaped as Slack's id_token (RS256 there; any signature here, jobbot reads it
    straight from the token endpoint)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    header = part(json.dumps({"typ": "JWT", "alg": "RS256", "kid": "fake"}).encode())
    body = part(json.dumps(claims).encode())
    signature = part(hmac.new(b"fake-slack-key", f"{header}.{body}".encode(),
                              hashlib.sha256).digest())
    return f"{header}.{body}.{signature}"


def _error(error: str) -> web.Response:
    # Slack answers most API errors with HTTP 200 and ok: false.
    return web.json_response({"ok": False, "error": error})

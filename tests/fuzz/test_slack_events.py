"""POST /slack/events with bodies of every shape, signed as Slack signs them and not.

Slash commands with any text and fields missing or odd, block_actions payloads drifted from
Slack's shape, JSON events, invalid UTF-8, deep nesting and big bodies. Unsigned requests get
401; nothing gets a 5xx or logs a traceback; a refused request writes, sends and runs nothing.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bot import render
from bot.commands import USAGE
from tests.fakes.slack import SlackSender
from tests.fuzz.cases import fuzz
from tests.fuzz.strategies import ODD, drifted, dumps, header_text, odd_text, quoted, words
from tests.fuzz.target import JOB_NAMES, Jobbot, check_case, start_case

FORM = "application/x-www-form-urlencoded"
ACTIONS = [render.CANCEL_ACTION, render.RERUN_ACTION, render.CONFIRM_ACTION,
           render.DECLINE_ACTION, "jobbot_view_logs", "other_action"]
CONTENT_TYPES = [FORM, f"{FORM}; charset=utf-8", "application/json", "text/plain", "",
                 "multipart/form-data; boundary=x", "application/x-www-form-urlencoded\u00e9"]
# Bodies that broke the edge before (issue 24) and a few more of the kind.
RAW = [b"payload={not json", b"payload=[1]", b"payload=" + b"[" * 100_000 + b"]" * 100_000,
       b"\xff\xfe\xfd", b"payload=%ff%fe", b"text=%ff&user_id=U1", b"&" * 5000,
       b"&".join(b"f%d=1" % i for i in range(2000)), b"{}", b"[]", b"null", b'"x"',
       b"payload=null", b'payload={"type":"block_actions","actions":[1]}',
       b'payload={"type":"block_actions","actions":[{"action_id":["x"]}]}',
       b'payload={"type":"block_actions","user":"U1","actions":[]}']


@pytest.fixture(scope="module")
def sender(jobbot: Jobbot) -> Iterator[SlackSender]:
    async def make() -> SlackSender:
        return SlackSender(jobbot.slack, f"http://{jobbot.host}:{jobbot.port}/slack/events")

    made = jobbot.loop.run(make())
    yield made
    jobbot.loop.run(made.close())


command_text = quoted(words([*USAGE, *JOB_NAMES, "--ref", "--ref=", "--tail", "-n", "--x",
                             "hello#1", "hello#" + "9" * 30, "#", "run hello", "/job"]))


def _form(fields: list[tuple[str, str]]) -> bytes:
    return urllib.parse.urlencode(fields, errors="surrogatepass").encode()


def _safe_response_url(payload: Any, fake_url: str) -> None:
    """Keep jobbot's answers on the fake Slack: a drifted response_url never names a host."""
    if isinstance(payload, dict):
        url = payload.get("response_url")
        if isinstance(url, str) and "://" in url and not url.startswith(fake_url):
            payload["response_url"] = f"{fake_url}/response/drifted"


@st.composite
def command_body(draw: st.DrawFn, sender: SlackSender) -> tuple[bytes, str]:
    body, _ = sender.command_body("", user=draw(st.sampled_from(["U0ALICE", "U0BOSS", "W1"])),
                                  command=draw(st.sampled_from(["/job", "/deploy", "/"])))
    text = draw(command_text)  # may hold lone surrogates: set here, encoded below
    fields = [(name, text if name == "text" else value)
              for name, value in urllib.parse.parse_qsl(body, keep_blank_values=True)]
    kept = [field for field in fields if draw(st.integers(0, 9)) > 0]  # some go missing
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([*(n for n, _ in fields), "payload", "x"]))
        kept.append((name, draw(odd_text)))
    for index, (name, value) in enumerate(kept):
        if name == "response_url" and "://" in value and not value.startswith(sender.fake.url):
            kept[index] = (name, f"{sender.fake.url}/response/drifted")
    return _form(kept), draw(st.sampled_from([FORM] * 4 + CONTENT_TYPES))


@st.composite
def action_body(draw: st.DrawFn, sender: SlackSender, jobbot: Jobbot) -> tuple[bytes, str]:
    run_ids = [run_id for run_id, _, _ in jobbot.runs]
    body, _ = sender.action_body(draw(st.sampled_from(ACTIONS)),
                                 draw(st.one_of(st.sampled_from(run_ids), odd_text)),
                                 user=draw(st.sampled_from(["U0ALICE", "U0BOSS"])))
    payload = json.loads(urllib.parse.parse_qs(body)["payload"][0])
    payload = draw(drifted(payload))
    _safe_response_url(payload, sender.fake.url)
    raw = dumps(payload, ascii_only=draw(st.booleans()))
    return b"payload=" + urllib.parse.quote_from_bytes(raw).encode(), draw(
        st.sampled_from([FORM] * 4 + CONTENT_TYPES))


@st.composite
def event_body(draw: st.DrawFn) -> tuple[bytes, str]:
    base = {"type": draw(st.sampled_from(["url_verification", "event_callback",
                                          "app_rate_limited", *ODD[:5]])),
            "token": "deprecated", "challenge": "c", "team_id": "T0FAKE",
            "event_id": f"Ev{time.time_ns()}", "event_time": int(time.time()),
            "event": {"type": "app_mention", "user": "U0ALICE", "text": "run hello",
                      "channel": "C0COMMAND", "ts": "1.1"}}
    payload = draw(drifted(base))
    return dumps(payload, ascii_only=draw(st.booleans())), draw(
        st.sampled_from(["application/json"] * 4 + CONTENT_TYPES))


def raw_body() -> st.SearchStrategy[tuple[bytes, str]]:
    return st.tuples(st.one_of(st.sampled_from(RAW), st.binary(max_size=300)),
                     st.sampled_from(CONTENT_TYPES))


SIGNING = ["signed", "signed", "signed", "unsigned", "wrong secret", "stale", "odd headers",
           "retry"]


@dataclass(frozen=True)
class Known:
    """A request that once failed, sent before the drawn ones."""

    body: bytes
    content_type: str
    signing: str


def _headers(sender: SlackSender, body: bytes, signing: str,
             odd: tuple[str, str] = ("", "")) -> dict[str, str | bytes]:
    headers: dict[str, str | bytes]
    if signing == "wrong secret":
        headers = dict(SlackSender(sender.fake, sender.target, secret="not-the-secret",
                                   session=sender.session).headers(body))
    elif signing == "stale":
        headers = dict(sender.headers(body, timestamp=int(time.time()) - 301))
    elif signing == "odd headers":
        headers = {"X-Slack-Request-Timestamp": odd[0].encode("utf-8", "replace"),
                   "X-Slack-Signature": odd[1].encode("utf-8", "replace")}
    elif signing == "unsigned":
        headers = {}
    else:
        headers = dict(sender.headers(body, retry_num=1 if signing == "retry" else None))
    return headers


@st.composite
def slack_request(draw: st.DrawFn, sender: SlackSender, jobbot: Jobbot) -> Known:
    body, content_type = draw(st.one_of(command_body(sender), action_body(sender, jobbot),
                                        event_body(), raw_body()))
    return Known(body, content_type, draw(st.sampled_from(SIGNING)))


@fuzz(bounded=200)
@given(data=st.data())
# slack_sdk's check decoded the body as UTF-8 before comparing: 500 and a traceback.
@example(data=Known(b"\x80", FORM, "wrong secret"))
@example(data=Known(b"\xff\xfe", FORM, "signed"))
# Bolt read the user of an event (a bool here) and raised: 500 and a traceback.
@example(data=Known(b'{"type": "event_callback", "event": {"user": false}}', "application/json",
                    "signed"))
# A click without actions: Bolt read actions[0] while matching listeners, 500.
@example(data=Known(b'payload={"type": "block_actions", "user": {"id": "U0ALICE"}, "actions": []}',
                    FORM, "signed"))
@example(data=Known(b'{"type": "event_callback", "event": {}}', "application/json", "signed"))
# A click whose action has no action_id: Bolt's matcher failed on it, 503.
@example(data=Known(b'payload={"type": "block_actions", "user": {"id": "U0ALICE"}, '
                    b'"actions": [{"value": "x"}]}', FORM, "signed"))
# An event of null: Bolt's middleware failed on it, 503 and a traceback.
@example(data=Known(b'{"type": "event_callback", "event": null}', "application/json", "signed"))
# A command without user_id was recorded, then its work failed with a traceback.
@example(data=Known(b"command=%2Fjob&text=help&trigger_id=1.2.fuzz", FORM, "signed"))
# A run number beyond SQLite's 64-bit integers: OverflowError in the command's work.
@example(data=Known(b"command=%2Fjob&user_id=U0ALICE&trigger_id=3.3.fuzz&text=logs+hello%23"
                    + b"9" * 30, FORM, "signed"))
# A click whose response_url was a number: its work failed with a traceback.
@example(data=Known(b"payload=" + urllib.parse.quote(json.dumps({
    "type": "block_actions", "user": {"id": "U0ALICE"}, "response_url": 5, "trigger_id": "9.9",
    "actions": [{"action_id": render.CANCEL_ACTION, "value": "x"}]})).encode(), FORM, "signed"))
def test_slack_events_never_fail(jobbot: Jobbot, sender: SlackSender, data: Any) -> None:
    sent = data if isinstance(data, Known) else data.draw(slack_request(sender, jobbot))
    odd = ("", "")
    if sent.signing == "odd headers":
        odd = (data.draw(header_text), data.draw(st.one_of(header_text,
                                                           st.just("v0=" + "0" * 64))))
    headers = _headers(sender, sent.body, sent.signing, odd)
    headers["Content-Type"] = sent.content_type.encode("utf-8", "replace")
    signed = sent.signing in ("signed", "retry")
    case = start_case(jobbot)
    answer = jobbot.request("POST", "/slack/events", sent.body, headers)
    if not signed:
        assert answer.status in (401, 413), answer.body[:300]  # 413: over 1 MB, unread
    check_case(jobbot, case, answer.status, refused=not signed or answer.status >= 400)

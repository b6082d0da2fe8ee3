"""The pages' routes (and any other path) with odd paths, queries, headers and cookies.

Run pages and logs (attempt, follow, from, t, event streams with Last-Event-ID), the page
buttons and Run now (odd forms, keys, overrides, Origin and Referer), `/`, the job list and
history (?before=), /metrics (odd Authorization), health, and Sign in with Slack (odd state
and code). No answer is a 5xx, none logs a traceback, and only a button press that is let
through (303) writes anything.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.cases import fuzz
from tests.fuzz.strategies import (
    digits_or_not,
    field_value,
    header_bytes,
    header_text,
    odd_text,
)
from tests.fuzz.target import JOB_NAMES, METRICS_TOKEN, WEB_TOKEN, Jobbot, check_case, start_case

ROUTES = ["run", "logs", "cancel", "rerun", "runnow", "home", "jobs", "job", "metrics",
          "healthz", "readyz", "signin", "callback", "signout", "static", "any"]


@dataclass(frozen=True)
class Page:
    """A request to the pages, as sent (its path already encoded)."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    host: str | None = None


def _segment(text: str) -> str:
    return urllib.parse.quote(text, safe="", errors="surrogatepass")


def _query(params: list[tuple[str, str]]) -> str:
    return "?" + urllib.parse.urlencode(params, errors="surrogatepass") if params else ""


@st.composite
def page(draw: st.DrawFn, jobbot: Jobbot) -> Page:
    runs = jobbot.runs
    run_id, label, token = draw(st.sampled_from(runs))
    other_token = runs[(runs.index((run_id, label, token)) + 1) % len(runs)][2]
    run = draw(st.one_of(st.sampled_from([run_id, label]), odd_text,
                         digits_or_not.map(lambda n: f"hello#{n}")))
    given_token = draw(st.one_of(st.sampled_from([token, token, other_token, token[:-1] + "A"]),
                                 odd_text))
    route = draw(st.sampled_from(ROUTES))
    params: list[tuple[str, str]] = []
    if draw(st.booleans()):
        params.append(("t", given_token))
    if draw(st.integers(0, 4)) == 0:
        params.append(("token", draw(st.one_of(st.just(WEB_TOKEN), odd_text))))
    headers: dict[str, str] = {}
    method, body = "GET", b""
    if route in ("run", "logs"):
        path = f"/runs/{_segment(run)}" + ("/logs" if route == "logs" else "")
        for name in ("attempt", "follow", "from"):
            if draw(st.booleans()):
                params.append((name, draw(digits_or_not)))
        if route == "logs" and draw(st.booleans()):
            headers["Accept"] = "text/event-stream"
            if draw(st.booleans()):
                headers["Last-Event-ID"] = field_value(draw(st.one_of(digits_or_not,
                                                                      header_text)))
    elif route in ("cancel", "rerun", "signout", "runnow"):
        method = "POST"
        path = "/auth/signout" if route == "signout" else f"/runs/{_segment(run)}/{route}"
        fields = [("t", given_token)] if draw(st.booleans()) else []
        if route == "runnow":
            job = draw(st.one_of(st.sampled_from(JOB_NAMES), odd_text))
            path = f"/jobs/{_segment(job)}/run"
            fields = [("key", draw(st.one_of(st.just("k" * 22), odd_text)))]
            fields += [("env:" + draw(st.one_of(st.just("GREETING"), odd_text)),
                        draw(odd_text)) for _ in range(draw(st.integers(0, 2)))]
            if draw(st.booleans()):
                fields.append(("confirmed", "yes"))
        fields += draw(st.lists(st.tuples(odd_text, odd_text), max_size=3))
        body = draw(st.one_of(st.just(urllib.parse.urlencode(fields, errors="surrogatepass")
                                      .encode()), st.binary(max_size=64)))
        headers["Content-Type"] = draw(st.sampled_from(
            ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain", ""]))
        origin = draw(st.sampled_from(["same", "other", "null", "odd", "none", "referer"]))
        here = f"http://{jobbot.host}:{jobbot.port}"
        if origin == "same":
            headers["Origin"] = here
        elif origin == "referer":
            headers["Referer"] = f"{here}/runs/{run_id}"
        elif origin == "other":
            headers["Origin"] = "http://evil.invalid"
        elif origin == "null":
            headers["Origin"] = "null"
        elif origin == "odd":
            headers[draw(st.sampled_from(["Origin", "Referer"]))] = draw(header_text)
    elif route == "jobs":
        path = "/jobs"
    elif route == "home":
        path = "/"
    elif route == "job":
        path = f"/jobs/{_segment(draw(st.one_of(st.sampled_from(JOB_NAMES), odd_text)))}"
        if draw(st.booleans()):
            params.append(("before", draw(digits_or_not)))
    elif route == "metrics":
        path = "/metrics"
        headers["Authorization"] = draw(st.one_of(
            st.sampled_from([f"Bearer {METRICS_TOKEN}", f"bearer  {METRICS_TOKEN} ", "Bearer",
                             "Basic Zm9vOmJhcg==", ""]),
            header_text, header_text.map(lambda s: f"Bearer {s}")))
    elif route in ("healthz", "readyz"):
        path = f"/{route}"
    elif route == "signin":
        path = "/auth/slack"
        params.append(("next", draw(st.one_of(odd_text, st.sampled_from(
            ["/jobs", "//evil.invalid", "/\t/evil", "https://evil.invalid", "/runs/x"])))))
    elif route == "callback":
        path = "/auth/slack/callback"
        params += [(name, draw(odd_text)) for name in ("state", "code", "error")
                   if draw(st.booleans())]
    elif route == "static":
        path = "/static/" + "/".join(_segment(s) for s in draw(st.lists(
            st.one_of(st.sampled_from(["..", ".", "%2e%2e", "style.css", "app.js"]), odd_text),
            min_size=1, max_size=3)))
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]))
        path = "/" + "/".join(_segment(s) for s in draw(st.lists(odd_text, max_size=3)))
    query = _query(params)
    if draw(st.integers(0, 9)) == 0:  # a malformed query string, sent as it is
        query = "?" + draw(st.sampled_from(["%", "t=%zz", "attempt=%ff", "&&==", "t=" + "A" * 5000,
                                            "t", "from=1:%00"]))
    headers["Cookie"] = _cookies(draw, jobbot)
    host = draw(st.one_of(st.none(), header_text)) if draw(st.integers(0, 5)) == 0 else None
    # aiohttp answers a request line over 8 KB with 400 before any route runs.
    return Page(method, (path + query)[:8000], headers, body, host)


def _cookies(draw: st.DrawFn, jobbot: Jobbot) -> str:
    """jobbot's cookies, valid, forged, odd or huge, and others."""
    cookies = []
    valid = {"jobbot_session": jobbot.session_cookie(), "jobbot_user": jobbot.user_cookie()}
    for name in ("jobbot_session", "jobbot_user", "jobbot_signin", "other"):
        choice = draw(st.sampled_from(["absent", "absent", "valid", "odd", "huge"]))
        if choice == "valid" and name in valid:
            cookies.append(f"{name}={valid[name]}")
        elif choice == "odd":
            cookies.append(f"{name}={draw(header_text).replace(';', '')}")
        elif choice == "huge":  # up to 4 KB: aiohttp refuses a header line over 8 KB itself
            cookies.append(f"{name}={draw(st.sampled_from(['A', 'é', '໑', '😀'])) * 1000}")
    # aiohttp answers a header line over 8 KB with 400 before any route runs.
    return header_bytes("; ".join(cookies))[:8000].decode("utf-8", "surrogateescape")


def _known(jobbot: Jobbot, page: Page) -> Page:
    """A known case with this server's values in: {run} and {token}, the id and a link token
    of hello#1, {here}, the server's origin, and {session}, the browsing cookie."""
    run_id, _, token = jobbot.runs[0]
    values = {"{run}": run_id, "{token}": token, "{here}": f"http://{jobbot.host}:{jobbot.port}",
              "{session}": jobbot.session_cookie()}

    def filled(text: str) -> str:
        for name, value in values.items():
            text = text.replace(name, value)
        return text

    return Page(page.method, filled(page.path),
                {name: filled(value) for name, value in page.headers.items()}, page.body,
                page.host)


@fuzz(bounded=300)
@given(data=st.data())
# compare_digest on a str with non-ASCII characters raised TypeError: 500.
@example(data=Page("GET", "/jobs?token=%C3%A9"))
@example(data=Page("GET", "/jobs", {"Cookie": "jobbot_session=\u00e9"}))
# isdigit() is true for superscripts that int() refuses, and int() refuses 5,000 digits: 500
# or an aborted stream.
@example(data=Page("GET", "/jobs/hello?before=%C2%B2", {"Cookie": "jobbot_session={session}"}))
@example(data=Page("GET", "/runs/{run}/logs?t={token}&attempt=%C2%B2"))
@example(data=Page("GET", "/runs/{run}/logs?t={token}",
                   {"Accept": "text/event-stream", "Last-Event-ID": "1:" + "9" * 5000}))
# A run number beyond SQLite's 64-bit integers: OverflowError.
@example(data=Page("GET", "/runs/hello%23" + "9" * 30, {"Cookie": "jobbot_session={session}"}))
# A file name longer than the file system takes: OSError from the static files' lookup.
@example(data=Page("GET", "/static/" + "9" * 5000))
# A form that aiohttp cannot read (no multipart boundary; not UTF-8): 500.
@example(data=Page("POST", "/runs/{run}/cancel", {"Content-Type": "multipart/form-data",
                                                      "Origin": "{here}"}))
@example(data=Page("POST", "/runs/{run}/rerun", {
    "Content-Type": "application/x-www-form-urlencoded", "Origin": "{here}"}, b"\x80"))
def test_pages_never_fail(jobbot: Jobbot, data: Any) -> None:
    sent = _known(jobbot, data) if isinstance(data, Page) else data.draw(page(jobbot))
    headers: dict[str, str | bytes] = {name: header_bytes(value)
                                       for name, value in sent.headers.items()}
    case = start_case(jobbot)
    answer = jobbot.request(sent.method, sent.path, sent.body, headers,
                            host=header_bytes(sent.host) if sent.host is not None else None)
    let_through = sent.method == "POST" and answer.status == 303
    denied = answer.status == 403 and b"You may not" in answer.body
    check_case(jobbot, case, answer.status, refused=not let_through, denied=denied)

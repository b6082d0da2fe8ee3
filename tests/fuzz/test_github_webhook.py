"""POST /github/webhook with deliveries of every event jobbot subscribes to, drifted.

Each delivery starts from one of GitHub's published shapes (tests/fakes/github_payloads.py),
then loses fields, has them retyped, oversized, made odd or nested deep. Correctly signed
deliveries are answered 2xx (400 for a body that is not a JSON object), recorded, and handled
without a traceback; unsigned ones get 401 and change nothing.
"""

from __future__ import annotations

import copy
import functools
import json
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from github_app.signature import sign
from tests.fakes import github_payloads as p
from tests.fuzz.cases import fuzz
from tests.fuzz.strategies import (
    drifted,
    dumps,
    header_bytes,
    header_text,
    odd_text,
    quoted,
    words,
)
from tests.fuzz.target import HEAD, JOB_NAMES, PR, REPO, Jobbot, check_case, start_case
from tests.support.github import SECRET

EVENTS = ["push", "pull_request", "issue_comment", "check_run", "check_suite", "installation",
          "installation_repositories", "ping"]
SHAS = [HEAD, "2" * 40, "0" * 40, "abc"]
LOGINS = ["alice", "root", "reader", "mallory", "dependabot[bot]"]
comment_text = quoted(words(["/run", "/rerun", "/cancel", "/jobs", "/ok-to-test", "/help",
                             *JOB_NAMES, "shop/hello", "ops/deploy", "```", "> /run check",
                             "    /run check", HEAD, "\n"]))


@dataclass(frozen=True)
class Sent:
    """A delivery as sent: the event header, the body and how it is signed."""

    event: str
    body: bytes
    content_type: str = "application/json"
    signing: str = "signed"
    # The X-Hub-Signature-256 header as sent, when `signing` is "given".
    signature: bytes = b""


@functools.cache
def _shape(event: str, variant: str) -> dict[str, Any]:
    """GitHub's payload of `event` (checked against GitHub's schema once, then reused)."""
    if event == "push":
        return p.push(REPO, "main", HEAD)
    if event == "pull_request":
        action, fork = variant.split(":")
        return p.pull_request_event(action, REPO, PR, HEAD,
                                    head_repo="mallory/shop" if fork == "fork" else None)
    if event == "issue_comment":
        action, where = variant.split(":")
        return p.issue_comment(REPO, PR, "", action=action, comment_id=1,
                               on_pull_request=where == "pr")
    if event == "check_run":
        return p.check_run(REPO, HEAD, 1, "", action=variant)
    if event == "check_suite":
        return p.check_suite(REPO, HEAD)
    if event == "installation":
        return p.installation_event(variant, 77, [REPO])
    if event == "installation_repositories":
        return p.installation_repositories(77, [REPO] if variant == "added" else [],
                                           [REPO] if variant == "removed" else [])
    return p.ping()


VARIANTS = {
    "push": [""],
    "pull_request": [f"{action}:{fork}" for action in ("opened", "synchronize", "reopened",
                                                       "closed") for fork in ("same", "fork")],
    "issue_comment": [f"{action}:{where}" for action in ("created", "edited", "deleted")
                      for where in ("pr", "issue")],
    "check_run": ["rerequested", "requested_action", "created"],
    "check_suite": [""],
    "installation": ["created", "deleted", "suspend", "unsuspend", "new_permissions_accepted"],
    "installation_repositories": ["added", "removed"],
    "ping": [""],
}


def base_payload(draw: st.DrawFn, event: str, run_ids: list[str]) -> dict[str, Any]:
    """A payload of `event` as GitHub sends it, with drawn values where jobbot reads them."""
    payload = copy.deepcopy(_shape(event, draw(st.sampled_from(VARIANTS[event]))))
    sha = draw(st.sampled_from(SHAS))
    login = draw(st.sampled_from(LOGINS))
    if "sender" in payload:
        payload["sender"]["login"] = login
    if event == "push":
        payload["ref"] = f"refs/heads/{draw(st.sampled_from(['main', 'feature', 'a/b']))}"
        payload["after"] = payload["head_commit"]["id"] = sha
    elif event == "pull_request":
        payload["pull_request"]["head"]["sha"] = sha
        payload["pull_request"]["user"]["login"] = login
    elif event == "issue_comment":
        payload["comment"].update(body=draw(comment_text), id=draw(st.integers(1, 2**31)))
        payload["comment"]["user"]["login"] = login
    elif event == "check_run":
        payload["check_run"].update(head_sha=sha, id=draw(st.integers(1, 2**31)),
                                    external_id=draw(st.one_of(st.sampled_from(run_ids),
                                                               odd_text)))
        if "requested_action" in payload:
            payload["requested_action"]["identifier"] = draw(st.sampled_from(["rerun", "x"]))
    elif event == "check_suite":
        payload["check_suite"]["head_sha"] = sha
    return payload


@st.composite
def delivery(draw: st.DrawFn, run_ids: list[str]) -> Sent:
    event = draw(st.sampled_from([*EVENTS, *EVENTS, "star", "check_run "]))
    payload = draw(drifted(base_payload(draw, event if event in EVENTS else "ping", run_ids)))
    body = dumps(payload, ascii_only=draw(st.booleans()))
    shape = draw(st.sampled_from(["json"] * 6 + ["form", "not an object", "bytes"]))
    content_type = "application/json"
    if shape == "form":
        body, content_type = b"payload=" + urllib.parse.quote_from_bytes(body).encode(), \
            "application/x-www-form-urlencoded"
    elif shape == "not an object":
        body = draw(st.sampled_from([b"[]", b"1", b'"x"', b"null", b"{", b"[" * 5000,
                                     b"\xff\xfe", b"{}" * 2]))
    elif shape == "bytes":
        body = draw(st.binary(max_size=200))
    signing = draw(st.sampled_from(["signed"] * 5 + ["unsigned", "wrong secret", "sha1",
                                                     "odd"]))
    return Sent(event, body, content_type, signing)


def _object(body: bytes, content_type: str) -> bool:
    """Whether jobbot can read `body` as a JSON object (the test's own reading of it)."""
    try:
        text = body.decode("utf-8")
        if content_type == "application/x-www-form-urlencoded":
            text = urllib.parse.parse_qs(text).get("payload", [""])[0]
        data = json.loads(text)
        json.dumps(data, ensure_ascii=False).encode()  # no lone surrogate from a `\ud800`
        return isinstance(data, dict)
    except (UnicodeError, ValueError, RecursionError):
        return False


@fuzz(bounded=120)
@given(data=st.data())
# Known drifts: an issue_comment without its issue number, a ping that is a list.
@example(data=Sent("issue_comment", b'{"action": "created", "issue": {"number": "x"}}'))
@example(data=Sent("ping", b"[1]"))
# Half a surrogate pair, escaped: the action could not be stored, 503 and a traceback.
@example(data=Sent("pull_request", b'{"action": "\\ud800", "number": 7}'))
# A signature header that is not UTF-8: verify() could not encode it, 500.
@example(data=Sent("ping", b"{}", signing="given", signature=b"sha256=\xff"))
def test_github_deliveries_never_fail(jobbot: Jobbot, data: Any) -> None:
    run_ids = [run_id for run_id, _, _ in jobbot.runs]
    sent = data if isinstance(data, Sent) else data.draw(delivery(run_ids))
    delivery_id = str(uuid.uuid4())
    headers: dict[str, str | bytes] = {
        "X-GitHub-Event": sent.event, "X-GitHub-Delivery": delivery_id,
        "Content-Type": sent.content_type, "User-Agent": "GitHub-Hookshot/fuzz"}
    if sent.signing == "signed":
        headers["X-Hub-Signature-256"] = sign(SECRET, sent.body)
    elif sent.signing == "wrong secret":
        headers["X-Hub-Signature-256"] = sign(b"not-the-secret", sent.body)
    elif sent.signing == "sha1":
        headers["X-Hub-Signature"] = "sha1=" + "0" * 40
    elif sent.signing == "given":
        headers["X-Hub-Signature-256"] = sent.signature
    elif sent.signing == "odd":
        headers["X-Hub-Signature-256"] = data.draw(st.one_of(
            header_text.map(header_bytes),
            st.binary(max_size=80).map(lambda raw: bytes(b for b in raw if 0x20 <= b != 0x7F))))
    signed = sent.signing == "signed"
    case = start_case(jobbot)
    answer = jobbot.request("POST", "/github/webhook", sent.body, headers)
    if len(sent.body) > 1024**2:
        assert answer.status == 413
    elif not signed:
        assert answer.status == 401, answer.body[:300]
    elif not _object(sent.body, sent.content_type):
        assert answer.status == 400, answer.body[:300]
    else:
        assert answer.status in (200, 202), answer.body[:300]
    check_case(jobbot, case, answer.status, refused=answer.status >= 400)
    if answer.status == 202:
        recorded = jobbot.served.runtime.store.delivery(delivery_id)
        assert recorded is not None and recorded.outcome, "answered but not recorded"


@fuzz(bounded=20)
@given(event=header_text, delivery_id=header_text)
@example(event="ping", delivery_id="\udcff")
def test_github_delivery_headers_never_fail(jobbot: Jobbot, event: str, delivery_id: str) -> None:
    body = json.dumps(p.ping()).encode()
    headers: dict[str, str | bytes] = {
        "X-GitHub-Event": header_bytes(event), "X-GitHub-Delivery": header_bytes(delivery_id),
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(SECRET, body)}
    case = start_case(jobbot)
    answer = jobbot.request("POST", "/github/webhook", body, headers)
    assert answer.status in (200, 202, 400), answer.body[:300]
    check_case(jobbot, case, answer.status, refused=answer.status >= 400)

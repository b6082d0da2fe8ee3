"""Pure parts of Sign in with Slack: signed cookie values, redirects, id_token claims, settings."""

from __future__ import annotations

import base64
import json

import pytest

from core.errors import BadInput
from jobbot.server import web_settings
from jobbot.settings import Settings
from web.oidc import SignInFailed, SlackSignIn, id_token_claims
from web.sessions import Signer, Viewer
from web.signin import safe_next

KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_signed_values_round_trip_until_they_expire() -> None:
    clock = Clock()
    signer = Signer(KEY, "user", clock=clock)
    text = signer.dumps({"u": "U1"}, 60)
    assert signer.loads(text) == {"u": "U1", "exp": 1_000_060}
    clock.now += 60
    assert signer.loads(text) is None


@pytest.mark.parametrize("text", [None, "", "a", "a.b.c", "!!.!!", "e30.AAAA"])
def test_garbage_is_nobody(text: str | None) -> None:
    assert Signer(KEY, "user").loads(text) is None


def test_a_value_signed_for_one_purpose_or_key_fails_for_another() -> None:
    text = Signer(KEY, "login").dumps({"u": "U1"}, 60)
    assert Signer(KEY, "user").loads(text) is None
    assert Signer(b"x" * 32, "login").loads(text) is None
    mac = text.split(".")[1]
    changed = base64.urlsafe_b64encode(b'{"u":"U2","exp":9999999999}').decode().rstrip("=")
    assert Signer(KEY, "login").loads(f"{changed}.{mac}") is None


def test_viewer_needs_every_field() -> None:
    assert Viewer.from_values({"u": "U1", "tm": "T1", "n": "Ann"}) == Viewer("U1", "T1", "Ann")
    assert Viewer.from_values({"u": "U1", "tm": "T1"}) is None
    assert Viewer.from_values(None) is None


@pytest.mark.parametrize(("given", "goes"), [
    ("/runs/abc?t=x", "/runs/abc?t=x"), (None, "/jobs"), ("https://evil.example/", "/jobs"),
    ("//evil.example/x", "/jobs"), ("/\\evil.example", "/jobs"), ("jobs", "/jobs"),
    ("/\t/evil.example", "/jobs"), ("/\n/evil.example", "/jobs"), ("/ /x", "/jobs"),
])
def test_after_signing_in_only_paths_on_this_site(given: str | None, goes: str) -> None:
    assert safe_next(given) == goes


def test_slack_urls_follow_the_api_url() -> None:
    slack = SlackSignIn("id", "secret")
    assert slack.authorize_url == "https://slack.com/openid/connect/authorize"
    assert slack.token_url == "https://slack.com/api/openid.connect.token"
    fake = SlackSignIn("id", "secret", "http://127.0.0.1:9/api/")
    assert fake.authorize_url == "http://127.0.0.1:9/openid/connect/authorize"


def test_id_token_claims_are_read_and_bad_tokens_refused() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "U1"}).encode()).decode().rstrip("=")
    assert id_token_claims(f"h.{payload}.s") == {"sub": "U1"}
    for bad in ("nodots", "h.!!!.s", "h.WzFd.s"):  # WzFd is [1]: not an object
        with pytest.raises(SignInFailed):
            id_token_claims(bad)


class Directory:
    async def team_id(self) -> str | None:
        return "T1"

    async def groups_of(self, user: str, groups: tuple[str, ...]) -> frozenset[str]:
        return frozenset()


def test_sign_in_settings_need_id_secret_and_the_bot() -> None:
    plain = web_settings(Settings(), None)
    assert plain.slack_signin is None
    assert plain.metrics_token is None and not plain.metrics_open
    with pytest.raises(BadInput, match="both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET"):
        web_settings(Settings(SLACK_CLIENT_ID="1.2"), Directory())
    with pytest.raises(BadInput, match="needs the Slack bot"):
        web_settings(Settings(SLACK_CLIENT_ID="1.2", SLACK_CLIENT_SECRET="s"), None)
    on = web_settings(Settings(SLACK_CLIENT_ID="1.2", SLACK_CLIENT_SECRET="s",
                               JOBBOT_PUBLIC_URL="https://jobbot.example",
                               JOBBOT_METRICS_TOKEN="m"), Directory())
    assert on.slack_signin == SlackSignIn("1.2", "s", "https://slack.com/api/")
    assert on.secure_cookies
    assert on.metrics_token == "m"

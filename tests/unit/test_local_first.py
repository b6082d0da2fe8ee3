"""When `serve` prints a browse link: loopback addresses, and no sign-in configured."""

from __future__ import annotations

import pytest

from core.models import Source
from core.policy import Action, Actor, decide
from core.spec import JobSpec
from jobbot.settings import Settings, is_loopback


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
    ("10.0.0.1", False), ("jobbot.example.com", False), ("localhost.evil.example", False),
    ("", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_link_is_printed_only_on_loopback_without_sign_in() -> None:
    assert Settings().local_browsing
    assert Settings(JOBBOT_HOST="::1").local_browsing
    assert not Settings(JOBBOT_HOST="0.0.0.0").local_browsing
    assert not Settings(JOBBOT_WEB_TOKEN="shared-token").local_browsing  # type: ignore[arg-type]
    assert not Settings(SLACK_CLIENT_ID="123.456").local_browsing


def test_an_ipv6_listening_address_makes_a_usable_url() -> None:
    assert Settings(JOBBOT_HOST="::1", JOBBOT_PORT=9000).public_url == "http://[::1]:9000"
    assert Settings(JOBBOT_PUBLIC_URL="https://j.example/").public_url == "https://j.example"


def test_the_local_operator_may_act_as_the_cli_does() -> None:
    job = JobSpec.model_validate({"name": "guarded", "image": "x", "command": ["true"],
                                  "allow": {"slack_users": ["U0BOSS"]}})
    operator = Actor(id="local:ada", source=Source.WEB, display="ada", operator=True)
    stranger = Actor(id="web:link-holder", source=Source.WEB)
    for action in Action:
        assert decide(job, action, operator).allowed
        assert not decide(job, action, stranger).allowed

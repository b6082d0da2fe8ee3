"""Who may run, cancel, pause and resume a job."""

from __future__ import annotations

import pytest

from core.models import Source
from core.policy import Action, Actor, decide, needs_confirmation
from core.spec import parse_app

APP = parse_app("""app: a
jobs:
  - {name: open, image: x, command: [x]}
  - name: guarded
    image: x
    command: [x]
    confirm: true
    allow: {slack_users: [U1], slack_usergroups: [S1], slack_channels: [C1],
            github_permission: maintain}
  - name: channel-only
    image: x
    command: [x]
    allow: {slack_channels: [C1]}
""")


def slack(user: str, channel: str = "C1", groups: frozenset[str] = frozenset()) -> Actor:
    return Actor(id=f"slack:{user}", source=Source.SLACK, slack_user=user, slack_channel=channel,
                 slack_usergroups=groups)


def github(permission: str | None) -> Actor:
    return Actor(id="github:octo", source=Source.GITHUB, github_login="octo",
                 github_permission=permission)


def test_a_job_without_allow_is_open_to_everyone() -> None:
    assert decide(APP.job("open"), Action.RUN, slack("U9", "C9")).allowed
    assert decide(APP.job("open"), Action.RUN, github("write")).allowed


@pytest.mark.parametrize(("actor", "allowed"), [
    (slack("U1"), True),
    (slack("U2", groups=frozenset({"S1"})), True),
    (slack("U2"), False),
    (slack("U1", channel="C2"), False),
])
def test_slack_users_groups_and_channels(actor: Actor, allowed: bool) -> None:
    assert decide(APP.job("guarded"), Action.RUN, actor).allowed is allowed


def test_a_denial_says_who_may() -> None:
    decision = decide(APP.job("guarded"), Action.CANCEL, slack("U2"))
    assert decision.reason == ("you may not cancel guarded: only users <@U1> and members of "
                               "<!subteam^S1> in <#C1> may")


def test_channel_only_rules() -> None:
    assert decide(APP.job("channel-only"), Action.RUN, slack("U7", "C1")).allowed
    denied = decide(APP.job("channel-only"), Action.PAUSE, slack("U7", "C2"))
    assert denied.reason == "you may not pause channel-only: anyone in <#C1> may"


@pytest.mark.parametrize(("permission", "allowed"), [
    ("admin", True), ("maintain", True), ("write", False), ("read", False), (None, False),
])
def test_github_permission_levels(permission: str | None, allowed: bool) -> None:
    decision = decide(APP.job("guarded"), Action.RUN, github(permission))
    assert decision.allowed is allowed
    if not allowed:
        assert f"needs maintain permission on the repository (you have {permission or 'none'})" \
            in decision.reason


def test_the_default_github_permission_is_write() -> None:
    assert decide(APP.job("open"), Action.RUN, github("write")).allowed
    assert not decide(APP.job("open"), Action.RUN, github("triage")).allowed


def test_cli_and_schedule_are_operators() -> None:
    assert decide(APP.job("guarded"), Action.RUN, Actor.cli("ada")).allowed
    assert decide(APP.job("guarded"), Action.RUN, Actor.scheduler()).allowed


def test_an_anonymous_web_actor_is_refused() -> None:
    anonymous = Actor(id="web:?", source=Source.WEB)
    assert not decide(APP.job("open"), Action.RUN, anonymous).allowed


def test_confirmation_is_for_people_not_the_schedule() -> None:
    assert needs_confirmation(APP.job("guarded"), slack("U1"))
    assert not needs_confirmation(APP.job("guarded"), Actor.scheduler())
    assert not needs_confirmation(APP.job("open"), slack("U1"))


PUSHED = parse_app("""app: a
defaults: {allow: {slack_channels: [C1]}}
jobs:
  - {name: deploy, image: x, command: [x]}
  - {name: guarded, image: x, command: [x], allow: {github_permission: maintain}}
  - {name: readers, image: x, command: [x], allow: {github_permission: read}}
""")
RESTRICTED_BY_DEFAULT = parse_app("""app: b
defaults: {allow: {github_permission: admin}}
jobs:
  - {name: deploy, image: x, command: [x]}
""")


def pusher(permission: str | None) -> Actor:
    return Actor(id="github:github-merge-queue[bot]", source=Source.GITHUB,
                 display="github-merge-queue[bot]", github_login="github-merge-queue[bot]",
                 github_permission=permission, pushed=True)


def test_a_push_runs_jobs_whoever_pushed_unless_allow_writes_out_a_permission() -> None:
    assert decide(PUSHED.job("deploy"), Action.RUN, pusher(None)).allowed
    assert decide(PUSHED.job("deploy"), Action.RUN, pusher("none")).allowed
    # Without the push, the same actor needs the default write permission.
    assert not decide(PUSHED.job("deploy"), Action.RUN, github("none")).allowed
    refused = decide(PUSHED.job("guarded"), Action.RUN, pusher("write"))
    assert not refused.allowed
    assert refused.reason == ("a push by github-merge-queue[bot] does not run guarded: its "
                              "allow: needs maintain permission on the repository (they have "
                              "write)")
    assert decide(PUSHED.job("guarded"), Action.RUN, pusher("admin")).allowed
    assert not decide(PUSHED.job("readers"), Action.RUN, pusher("none")).allowed
    assert decide(PUSHED.job("readers"), Action.RUN, pusher("read")).allowed
    # Written out in defaults, it restricts every job that inherits it.
    assert not decide(RESTRICTED_BY_DEFAULT.job("deploy"), Action.RUN, pusher("write")).allowed
    # A push only ever runs: cancelling still needs the permission.
    assert not decide(PUSHED.job("deploy"), Action.CANCEL, pusher("none")).allowed

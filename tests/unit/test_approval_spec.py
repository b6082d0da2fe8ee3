"""`approval:` in app.yaml: its keys and values checked with file:line errors, and the digest
an approval is bound to."""

from __future__ import annotations

import pytest

from core.approvals import spec_digest
from core.errors import ConfigError
from core.models import Source
from core.policy import Actor, may_approve
from core.spec import parse_app

BAD = """\
app: shop
jobs:
  - name: migrate
    image: python:3.12-slim
    command: [x]
    approval:
      required: 0
      from: {slack_users: [U1], github_permission: read, colour: red}
      self: maybe
      expires: 10 minutes
      quorum: 2
  - name: other
    image: python:3.12-slim
    command: [x]
    approval: {expires: 0, from: [U1]}
"""


def test_bad_approval_keys_and_values_name_file_line_and_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_app(BAD, "app.yaml")
    assert str(caught.value).splitlines() == [
        "app.yaml:7: jobs[migrate].approval.required: 0 is too small: the least allowed is 1",
        "app.yaml:8: jobs[migrate].approval.from.colour: unknown key 'colour'; allowed: "
        "github_permission, slack_usergroups, slack_users",
        "app.yaml:8: jobs[migrate].approval.from.github_permission: 'read' is not allowed; "
        "input should be 'write', 'maintain' or 'admin'",
        "app.yaml:9: jobs[migrate].approval.self: 'maybe' is not true or false",
        "app.yaml:10: jobs[migrate].approval.expires: '10 minutes' is not a duration: use "
        "whole seconds (480) or a string like 90s, 15m, 1h30m or 2d",
        "app.yaml:11: jobs[migrate].approval.quorum: unknown key 'quorum'; allowed: expires, "
        "from, required, self",
        "app.yaml:15: jobs[other].approval.from: Input should be a valid dictionary or "
        "instance of ApprovalFrom",
    ]


def test_expires_of_zero_is_refused() -> None:
    text = BAD.split("    approval:")[0] + "    approval:\n      expires: 0\n"
    with pytest.raises(ConfigError) as caught:
        parse_app(text, "app.yaml")
    assert str(caught.value) == ("app.yaml:7: jobs[migrate].approval.expires: must be more "
                                 "than 0 seconds")


GOOD = """\
app: shop
jobs:
  - name: migrate
    image: python:3.12-slim
    command: [yarn, migrate]
    approval: {required: 2, from: {slack_usergroups: [S456], github_permission: maintain},
               self: false, expires: 90m}
  - name: simple
    image: python:3.12-slim
    command: [x]
    approval: {}
"""


def test_approval_reads_with_defaults() -> None:
    app = parse_app(GOOD)
    migrate, simple = app.jobs
    assert migrate.approval is not None and simple.approval is not None
    assert (migrate.approval.required, migrate.approval.from_.slack_usergroups,
            migrate.approval.from_.github_permission, migrate.approval.allow_self,
            migrate.approval.expires) == (2, ("S456",), "maintain", False, 5400)
    assert (simple.approval.required, simple.approval.allow_self,
            simple.approval.expires) == (1, False, 3600)


def test_the_digest_changes_with_the_definition_only() -> None:
    before = parse_app(GOOD).jobs[0]
    assert spec_digest(before) == spec_digest(parse_app(GOOD).jobs[0])
    changed = parse_app(GOOD.replace("[yarn, migrate]", "[yarn, migrate, --all]")).jobs[0]
    assert spec_digest(changed) != spec_digest(before)
    approvers = parse_app(GOOD.replace("maintain", "admin")).jobs[0]
    assert spec_digest(approvers) != spec_digest(before)


def test_who_may_approve() -> None:
    migrate, simple = parse_app(GOOD).jobs
    member = Actor("slack:U1", Source.SLACK, slack_user="U1", slack_usergroups=frozenset({"S456"}))
    outsider = Actor("slack:U2", Source.SLACK, slack_user="U2")
    writer = Actor("github:w", Source.GITHUB, github_login="w", github_permission="write")
    admin = Actor("github:a", Source.GITHUB, github_login="a", github_permission="admin")
    assert may_approve(migrate, member).allowed
    assert may_approve(migrate, admin).allowed
    refused = may_approve(migrate, outsider)
    assert not refused.allowed and refused.reason == (
        "you may not approve migrate: only members of <!subteam^S456> and people with "
        "maintain permission on the repository may")
    assert not may_approve(migrate, writer).allowed
    # With no `from`, whoever may run the job may approve it.
    assert may_approve(simple, outsider).allowed and may_approve(simple, writer).allowed

"""Who may do what: the `allow:` block of a job, and which jobs ask for confirmation."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from core.models import Source
from core.spec import Allow, ApprovalFrom, JobSpec

GITHUB_PERMISSIONS = ("read", "triage", "write", "maintain", "admin")


class Action(StrEnum):
    RUN = "run"
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True)
class Actor:
    """A person or system acting through one front end, with what that front end knows of them."""

    id: str
    source: Source
    display: str = ""
    slack_user: str | None = None
    slack_usergroups: frozenset[str] = field(default_factory=frozenset)
    slack_channel: str | None = None
    github_login: str | None = None
    github_permission: str | None = None
    # Holds jobbot's own keys, as the CLI does: a browser signed in with the token that
    # `jobbot serve` printed to its terminal on a loopback address.
    operator: bool = False
    # Acting through a push to a branch: GitHub's branch rules already let them push.
    pushed: bool = False

    @property
    def name(self) -> str:
        return self.display or self.id

    @classmethod
    def cli(cls, user: str) -> Actor:
        return cls(id=f"cli:{user}", source=Source.CLI, display=user)

    @classmethod
    def scheduler(cls) -> Actor:
        return cls(id="schedule", source=Source.SCHEDULE, display="schedule")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def decide(job: JobSpec, action: Action, actor: Actor) -> Decision:
    """May `actor` do `action` to `job`? A denial says who may."""
    allow = job.allow
    if actor.operator or actor.source in (Source.CLI, Source.SCHEDULE):
        # The CLI runs with direct access to jobbot's database and config: it is an operator.
        return Decision(True)
    if actor.source is Source.SLACK:
        return _slack(job, action, allow, actor)
    if actor.source is Source.GITHUB:
        return _github(job, action, allow, actor)
    # Web and API actors are mapped onto a Slack or GitHub identity by their front end.
    if actor.slack_user:
        return _slack(job, action, allow, actor)
    if actor.github_login:
        return _github(job, action, allow, actor)
    return Decision(False, f"{actor.name} is not signed in with Slack or GitHub")


def _slack(job: JobSpec, action: Action, allow: Allow, actor: Actor) -> Decision:
    people_ok = not (allow.slack_users or allow.slack_usergroups) or (
        actor.slack_user in allow.slack_users
        or bool(actor.slack_usergroups & set(allow.slack_usergroups))
    )
    channel_ok = not allow.slack_channels or actor.slack_channel in allow.slack_channels
    if people_ok and channel_ok:
        return Decision(True)
    return Decision(False, f"you may not {action.value} {job.name}: {describe_slack(allow)}")


def _github(job: JobSpec, action: Action, allow: Allow, actor: Actor) -> Decision:
    """By repository permission; a push runs the jobs that follow it whoever pushed (a person,
    a bot, a merge queue), unless the job's `allow:` writes out `github_permission`."""
    needed = allow.github_permission
    have = actor.github_permission
    if actor.pushed and action is Action.RUN and not allow.restricts_pushes:
        return Decision(True)
    if have in GITHUB_PERMISSIONS and (
        GITHUB_PERMISSIONS.index(have) >= GITHUB_PERMISSIONS.index(needed)
    ):
        return Decision(True)
    if actor.pushed:
        return Decision(False, f"a push by {actor.name} does not run {job.name}: its allow: "
                               f"needs {needed} permission on the repository (they have "
                               f"{have or 'none'})")
    return Decision(
        False,
        f"you may not {action.value} {job.name}: it needs {needed} permission on the "
        f"repository (you have {have or 'none'})",
    )


def describe_slack(allow: Allow) -> str:
    """Who may act on the job from Slack, in words."""
    who = []
    if allow.slack_users:
        who.append("users " + ", ".join(f"<@{u}>" for u in allow.slack_users))
    if allow.slack_usergroups:
        who.append("members of " + ", ".join(f"<!subteam^{g}>" for g in allow.slack_usergroups))
    text = "only " + " and ".join(who) if who else "anyone"
    if allow.slack_channels:
        text += " in " + ", ".join(f"<#{c}>" for c in allow.slack_channels)
    return text + " may"


def may_approve(job: JobSpec, actor: Actor) -> Decision:
    """May `actor` approve (or deny) runs of `job`, by its `approval.from`? Any one rule
    admits them; with no rules, whoever may run the job may. A denial says who may."""
    approval = job.approval
    if approval is None:
        return Decision(False, f"{job.name} needs no approval")
    rules = approval.from_
    if not rules.any:
        may_run = decide(job, Action.RUN, actor)
        return Decision(True) if may_run.allowed else Decision(
            False, may_run.reason.replace("you may not run", "you may not approve", 1))
    if actor.slack_user and (actor.slack_user in rules.slack_users
                             or bool(actor.slack_usergroups & set(rules.slack_usergroups))):
        return Decision(True)
    have, needed = actor.github_permission, rules.github_permission
    if needed and have in GITHUB_PERMISSIONS and (
            GITHUB_PERMISSIONS.index(have) >= GITHUB_PERMISSIONS.index(needed)):
        return Decision(True)
    return Decision(False, f"you may not approve {job.name}: {describe_approvers(rules)}")


def describe_approvers(rules: ApprovalFrom) -> str:
    """Who may approve runs of a job, in words."""
    who = []
    if rules.slack_users:
        who.append("users " + ", ".join(f"<@{u}>" for u in rules.slack_users))
    if rules.slack_usergroups:
        who.append("members of " + ", ".join(f"<!subteam^{g}>" for g in rules.slack_usergroups))
    if rules.github_permission:
        who.append(f"people with {rules.github_permission} permission on the repository")
    return ("only " + " and ".join(who) if who else "anyone who may run it") + " may"


def needs_confirmation(job: JobSpec, actor: Actor) -> bool:
    """`confirm: true` jobs ask people first; the schedule never asks."""
    return job.confirm and actor.source is not Source.SCHEDULE

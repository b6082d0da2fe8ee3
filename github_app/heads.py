"""Which head a pull request had when: recorded from pull_request events, so `/ok-to-test`
vouches for the head its author saw when writing the comment, not a later push."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import BadInput
from github_app.routing import Delivery

# `/ok-to-test SHA`: a full sha or a prefix of at least 7 hex digits (as git abbreviates).
_SHA = re.compile(r"[0-9a-f]{7,64}")
# The time each action makes its head sha the head.
_BECAME_HEAD = {"opened": "created_at", "synchronize": "updated_at", "reopened": "updated_at"}


@dataclass(frozen=True)
class Head:
    sha: str
    since: datetime


def timestamp(value: object) -> datetime | None:
    """A payload's time (ISO 8601, or seconds since the epoch as push payloads give), in UTC."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def became_head(delivery: Delivery) -> Head | None:
    """The head sha a pull_request event shows and when it became head, if it says."""
    field = _BECAME_HEAD.get(delivery.action or "")
    sha = delivery.get("pull_request", "head", "sha")
    since = timestamp(delivery.get("pull_request", field)) if field else None
    if not isinstance(sha, str) or not sha or since is None:
        return None
    return Head(sha, since)


def _how_to_approve(current: str) -> str:
    return (f"look at the commit you reviewed and comment `/ok-to-test SHA` with its sha "
            f"(the head is now {current[:7]})")


def head_when_written(heads: Sequence[Head], current: str, written: datetime | None) -> str:
    """The head current when a comment was written: the last one to become head before it.
    BadInput, saying how to approve, when jobbot cannot tell."""
    if written is None:
        raise BadInput("jobbot cannot tell when this comment was written: "
                       + _how_to_approve(current))
    if any(head.since == written for head in heads):
        # GitHub's times are whole seconds: a head and the comment of the same second.
        raise BadInput("the head changed in the second this comment was written, so jobbot "
                       "cannot tell which one you saw: " + _how_to_approve(current))
    before = [head for head in heads if head.since < written]
    if not before:
        raise BadInput("jobbot knows of no head of this pull request from before this comment "
                       "was written: " + _how_to_approve(current))
    latest = heads[-1]
    if before[-1] == latest and latest.sha != current:
        # The head moved again after the last change jobbot heard of, at a time it does not
        # know (that event is not handled yet, or was never sent): maybe before the comment.
        raise BadInput(f"the head moved to {current[:7]} and jobbot cannot tell whether that "
                       f"was before this comment: " + _how_to_approve(current))
    return before[-1].sha


def named_head(word: str, heads: Sequence[Head], current: str) -> str:
    """The head `/ok-to-test SHA` names: a full sha or an unambiguous prefix of a head the
    pull request had."""
    prefix = word.lower()
    if not _SHA.fullmatch(prefix):
        raise BadInput("`/ok-to-test` takes a commit sha: all of it, or at least its first 7 "
                       "hex digits")
    known = list(dict.fromkeys([*(head.sha for head in heads), current]))
    matches = [sha for sha in known if sha.lower().startswith(prefix)]
    if not matches:
        listed = ", ".join(sha[:7] for sha in known)
        raise BadInput(f"{prefix[:12]} is not a head this pull request had (heads: {listed})")
    if len(matches) > 1:
        raise BadInput(f"{prefix} is the start of several heads of this pull request "
                       f"({', '.join(sha[:12] for sha in matches)}): give more of it")
    return matches[0]

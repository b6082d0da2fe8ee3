"""Run idempotency keys from what a payload identifies (a comment and its edit, a pull request
head, a check run, a push), never from X-GitHub-Delivery: that header is not signed, so the
same body replayed under a new delivery id finds the runs its first delivery started."""

from __future__ import annotations

import hashlib

from github_app.routing import Delivery

# Runs' keys hold 255 characters; a handler appends `:<app>/<job>` (127 at most) and maybe
# `:build`. A longer identity (a long repository or branch name) is replaced by its digest.
_MAX_IDENTITY = 100


def _key(kind: str, *parts: object) -> str:
    identity = ":".join(str(part) for part in parts)
    if len(identity) > _MAX_IDENTITY:
        identity = hashlib.sha256(identity.encode()).hexdigest()[:40]
    return f"github:{kind}:{identity}"


def comment(delivery: Delivery) -> str:
    """A comment command: the comment (ids are unique across GitHub) as of its last edit."""
    edited = delivery.get("comment", "updated_at") or delivery.get("comment", "created_at")
    return _key("comment", delivery.number("comment", "id"), edited or "")


def pull_request(delivery: Delivery) -> str:
    """A pull_request event: the repository, the pull request, its head sha and the action,
    and when it happened (reopened twice at one sha is two events)."""
    return _key("pull", delivery.repository, delivery.number("pull_request", "number"),
                delivery.text("pull_request", "head", "sha"), delivery.action or "",
                delivery.get("pull_request", "updated_at") or "")


def check_run(delivery: Delivery) -> str:
    """A check run's Re-run button or action: the check run and what was asked of it."""
    return _key("check_run", delivery.number("check_run", "id"), delivery.action or "",
                delivery.get("requested_action", "identifier") or "")


def check_suite(delivery: Delivery) -> str:
    """"Re-run all checks": the suite as of its last change (a later request, once the
    suite's new check runs are there, is another one)."""
    return _key("check_suite", delivery.number("check_suite", "id"),
                delivery.get("check_suite", "updated_at") or "", delivery.action or "")


def push(delivery: Delivery) -> str:
    """A push: the repository, the ref, the shas it moved from and to, and when it happened
    (a branch moved back to a sha it had is deployed again)."""
    return _key("push", delivery.repository, delivery.text("ref"),
                delivery.get("before") or "", delivery.text("after"),
                delivery.get("repository", "pushed_at") or "")

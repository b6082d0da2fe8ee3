"""What the GitHub App needs (events, permissions) in one place, and its App manifest."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

# The events jobbot subscribes to: what its handlers (github_app/handlers/) take.
EVENTS = ("check_run", "check_suite", "issue_comment", "pull_request", "push")
# Sent to every App without a subscription (and not accepted in a manifest's default_events).
ALWAYS_DELIVERED = ("installation", "installation_repositories", "ping")
# The repository permissions the App asks for, by GitHub's permission names.
PERMISSIONS = {"checks": "write", "contents": "read", "issues": "write",
               "metadata": "read", "pull_requests": "write"}
# What each InstallationApi call (its metrics `kind`) needs of PERMISSIONS, after GitHub's
# REST reference ("Fine-grained access" of each endpoint).
CALL_PERMISSIONS = {
    "permission": ("metadata", "read"),
    "repositories": ("metadata", "read"),
    "react": ("issues", "write"),
    "comments": ("issues", "read"),
    "create_comment": ("issues", "write"),
    "update_comment": ("issues", "write"),
    "pull": ("pull_requests", "read"),
    "branch": ("contents", "read"),
    "file": ("contents", "read"),
    "tarball": ("contents", "read"),
    "create_check_run": ("checks", "write"),
    "update_check_run": ("checks", "write"),
}
# The permission each subscribed event needs GitHub to send it.
EVENT_PERMISSIONS = {"check_run": "checks", "check_suite": "checks",
                     "issue_comment": "issues", "pull_request": "pull_requests",
                     "push": "contents"}
LEVELS = ("none", "read", "write", "admin")
PUBLIC_API = "https://api.github.com"
PUBLIC_WEB = "https://github.com"
# GitHub's account names: letters, digits and single hyphens, 39 characters at most.
ACCOUNT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")
# An App's name on GitHub: 34 characters at most.
MAX_NAME = 34


def grants(permissions: dict[str, str], name: str, level: str) -> bool:
    """True if `permissions` hold `name` at `level` or higher."""
    have = permissions.get(name, "none")
    return have in LEVELS and LEVELS.index(have) >= LEVELS.index(level)


def app_manifest(name: str, public_url: str, redirect_url: str) -> dict[str, Any]:
    """GitHub's App manifest: webhooks to `public_url`/github/webhook, back to `redirect_url`
    once the App is made; private to its owner."""
    base = public_url.rstrip("/")
    return {
        "name": name,
        "url": base,
        "hook_attributes": {"url": f"{base}/github/webhook", "active": True},
        "redirect_url": redirect_url,
        "callback_urls": [redirect_url],
        "public": False,
        "default_permissions": dict(PERMISSIONS),
        "default_events": list(EVENTS),
    }


def web_url(api_url: str | None) -> str:
    """The web address of the GitHub whose REST API is `api_url`: github.com for the public
    API, `https://HOST` for GitHub Enterprise Server's `https://HOST/api/v3`."""
    if not api_url or api_url.rstrip("/") == PUBLIC_API:
        return PUBLIC_WEB
    base = api_url.rstrip("/")
    base = base.removesuffix("/api/v3")
    parts = urlsplit(base)
    if parts.hostname and parts.hostname.startswith("api.") and not parts.path:
        # GitHub Enterprise Cloud with data residency: api.HOST serves HOST's API.
        return f"{parts.scheme}://{parts.netloc.removeprefix('api.')}"
    return base


def new_app_url(api_url: str | None, organization: str | None) -> str:
    """Where the manifest is posted: the personal account's or an organisation's new App page."""
    base = web_url(api_url)
    if organization:
        return f"{base}/organizations/{organization}/settings/apps/new"
    return f"{base}/settings/apps/new"

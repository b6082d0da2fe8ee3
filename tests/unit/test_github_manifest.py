"""The App manifest asks for exactly what the code uses, and points at the right GitHub."""

from __future__ import annotations

import inspect
import re

import pytest

from github_app.api import InstallationApi
from github_app.app import ROUTER
from github_app.manifest import (
    ALWAYS_DELIVERED,
    CALL_PERMISSIONS,
    EVENT_PERMISSIONS,
    EVENTS,
    PERMISSIONS,
    app_manifest,
    grants,
    new_app_url,
    web_url,
)


def test_the_manifest_subscribes_to_every_event_a_handler_takes_and_no_other() -> None:
    handled = ROUTER.events() - set(ALWAYS_DELIVERED)
    assert handled == set(EVENTS)
    manifest = app_manifest("jobbot-shop", "https://jobbot.example.com", "https://x/cb")
    assert set(manifest["default_events"]) == handled
    # GitHub refuses a subscription without the permission its event needs.
    for event in EVENTS:
        assert grants(PERMISSIONS, EVENT_PERMISSIONS[event], "read"), event


def test_every_api_call_is_covered_by_the_manifests_permissions() -> None:
    source = inspect.getsource(InstallationApi)
    kinds = set(re.findall(r'self\._call\(\s*"([a-z_]+)"', source))
    assert kinds, "no calls found: InstallationApi changed shape"
    assert kinds == set(CALL_PERMISSIONS), "a call without its permission in manifest.py"
    manifest = app_manifest("jobbot-shop", "https://jobbot.example.com", "https://x/cb")
    for kind, (name, level) in CALL_PERMISSIONS.items():
        assert grants(manifest["default_permissions"], name, level), kind


def test_the_manifest_names_jobbots_urls_and_is_private() -> None:
    manifest = app_manifest("jobbot-shop", "https://jobbot.example.com/",
                            "http://localhost:8080/github/setup/callback")
    assert manifest["url"] == "https://jobbot.example.com"
    assert manifest["hook_attributes"]["url"] == "https://jobbot.example.com/github/webhook"
    assert manifest["redirect_url"] == "http://localhost:8080/github/setup/callback"
    assert manifest["callback_urls"] == ["http://localhost:8080/github/setup/callback"]
    assert manifest["public"] is False
    assert manifest["default_permissions"] == PERMISSIONS


@pytest.mark.parametrize(("api_url", "org", "expected"), [
    (None, None, "https://github.com/settings/apps/new"),
    ("https://api.github.com/", None, "https://github.com/settings/apps/new"),
    (None, "acme", "https://github.com/organizations/acme/settings/apps/new"),
    ("https://ghe.example.com/api/v3", None, "https://ghe.example.com/settings/apps/new"),
    ("https://ghe.example.com/api/v3/", "acme",
     "https://ghe.example.com/organizations/acme/settings/apps/new"),
    ("https://api.acme.ghe.com", None, "https://acme.ghe.com/settings/apps/new"),
])
def test_new_app_pages_of_github_and_enterprise_server(api_url: str | None, org: str | None,
                                                       expected: str) -> None:
    assert new_app_url(api_url, org) == expected


def test_the_web_address_of_an_enterprise_server() -> None:
    assert web_url("https://ghe.example.com/api/v3") == "https://ghe.example.com"
    assert web_url(None) == "https://github.com"

"""Fixtures serving the fakes over HTTP on 127.0.0.1: Slack, the Kubernetes API, GitHub."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from tests.fakes import github_payloads as p
from tests.fakes.github import FakeGitHub, private_key_pem
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack

# The repository and pull request the `github` fixture's fake knows (alice may write).
REPO = "acme/shop"
PR = 7
HEAD = "1" * 40


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def kube() -> AsyncIterator[FakeKubernetes]:
    fake = FakeKubernetes()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def github() -> AsyncIterator[tuple[FakeGitHub, str]]:
    """The fake GitHub and the App's private key."""
    private, public = private_key_pem()
    fake = FakeGitHub(p.APP_ID, public)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    fake.permissions[(REPO, "alice")] = "write"
    fake.add_pull(REPO, PR, HEAD)
    yield fake, private
    await server.close()

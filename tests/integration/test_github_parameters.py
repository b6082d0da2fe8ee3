"""Job parameters in pull-request comments: `/run JOB key=value` checked by the validator
every front end uses, with the same errors; secret parameters refused in public comments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.spec import load_app
from core.store import Store
from github_app.render import RUNS_MARKER
from tests.fakes import github_payloads as p
from tests.support import github as support
from tests.support.apps import python_job, write_app

REPO = "acme/shop"
HEAD = "1" * 40
PR = 7
PARAMETERS: list[dict[str, Any]] = [
    {"name": "TARGET", "type": "choice", "choices": ["staging", "production"],
     "required": True},
    {"name": "STEPS", "type": "int", "default": 1},
    {"name": "TOKEN", "pattern": "^[a-z0-9]+$", "secret": True},
]


@pytest.fixture
async def gh(tmp_path: Path, store: Store) -> AsyncIterator[support.Harness]:
    jobs = [python_job("migrate", "import os; print('to', os.environ['TARGET'], "
                                  "os.environ['STEPS'])", parameters=PARAMETERS)]
    app = load_app(write_app(tmp_path / "server", jobs, app="shop"))
    harness, closers = await support.start(tmp_path, app, store)
    harness.fake.permissions.update({(REPO, "alice"): "write"})
    harness.fake.add_pull(REPO, PR, HEAD)
    yield harness
    await support.stop(harness, closers)


async def comment(gh: support.Harness, body: str) -> dict[str, Any]:
    payload = p.issue_comment(REPO, PR, body, login="alice")
    response = await gh.deliver("issue_comment", payload)
    assert response.status == 202
    await gh.settle()
    return payload


def pr_comment(gh: support.Harness) -> str:
    [mine] = [c for c in gh.fake.comments.get((REPO, PR), []) if RUNS_MARKER in c["body"]]
    return str(mine["body"]).replace("\\_", "_")


async def test_run_comments_take_parameters_with_the_same_errors(gh: support.Harness) -> None:
    await comment(gh, "/run migrate")
    await comment(gh, "/run migrate TARGET=stagin STEPS=two")
    await comment(gh, "/run migrate TARGET=staging TOKEN=abc123")
    body = pr_comment(gh)
    assert "bad parameters for migrate: TARGET: is required" in body
    assert ("bad parameters for migrate: TARGET: 'stagin' is not one of staging, production "
            "(did you mean staging?); STEPS: 'two' is not a whole number") in body
    assert ("TOKEN of migrate is secret, and a comment is public: give it from Slack or the "
            "CLI instead") in body
    assert gh.store.list_runs(limit=10) == []
    await comment(gh, "/run migrate TARGET=production STEPS=3")
    [run] = gh.store.list_runs(limit=10)
    assert (run.state, run.overrides) == ("succeeded", {"TARGET": "production", "STEPS": "3"})
    [check] = gh.fake.checks_for("jobbot: migrate")
    assert "to production 3" in check["output"]["text"]

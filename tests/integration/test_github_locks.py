"""Locks in pull-request comments: `/run` of a job whose lock is held answers where the run
waits, and a like `/run` answers that it joined the waiting run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from core.spec import load_app
from core.store import Store
from github_app.render import RUNS_MARKER
from tests.fakes import github_payloads as p
from tests.integration.test_locks import GATED, Gates
from tests.support import github as support
from tests.support.apps import python_job, write_app

REPO = "acme/shop"
HEAD = "1" * 40
PR = 7


@pytest.fixture
async def gh(tmp_path: Path, store: Store) -> AsyncIterator[support.Harness]:
    jobs = [python_job(name, GATED, env={"GATE": ""}, lock="db-prod")
            for name in ("migrate", "seed")]
    app = load_app(write_app(tmp_path / "server", jobs, app="shop"))
    harness, closers = await support.start(tmp_path, app, store)
    harness.fake.permissions.update({(REPO, "alice"): "write"})
    harness.fake.add_pull(REPO, PR, HEAD)
    yield harness
    await support.stop(harness, closers)


def pr_comment(gh: support.Harness) -> str:
    mine = [c for c in gh.fake.comments.get((REPO, PR), []) if RUNS_MARKER in c["body"]]
    return str(mine[0]["body"]).replace("\\_", "_") if mine else ""


async def until(check: Callable[[], object]) -> None:
    async with asyncio.timeout(30):
        while not check():
            await asyncio.sleep(0.05)


async def comment(gh: support.Harness, body: str) -> None:
    response = await gh.deliver("issue_comment", p.issue_comment(REPO, PR, body, login="alice"))
    assert response.status == 202
    await gh.github.intake.join()


async def test_run_comments_say_where_the_run_waits_and_when_they_joined(
        gh: support.Harness, tmp_path: Path) -> None:
    gates = Gates(tmp_path / "gates")
    await comment(gh, f"/run migrate GATE={gates.path('a')}")
    await until(lambda: [r.state for r in gh.store.list_runs(job="migrate")] == ["running"])
    await comment(gh, f"/run seed GATE={gates.path('b')}")
    await until(lambda: "queued seed #1" in pr_comment(gh))
    assert ("queued seed #1: waiting for db-prod: 1st in line, behind migrate #1, started by "
            "github:alice") in pr_comment(gh)
    await comment(gh, f"/run seed GATE={gates.path('b')}")
    await until(lambda: "joined seed #1" in pr_comment(gh))
    assert "joined seed #1, waiting for db-prod" in pr_comment(gh)
    assert len(gh.store.list_runs(job="seed")) == 1
    gates.open("a")
    gates.open("b")
    await gh.settle()
    assert [r.state for r in gh.store.list_runs(limit=10)] == ["succeeded", "succeeded"]

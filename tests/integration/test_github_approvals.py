"""Approvals on pull requests: `/approve` and `/deny` comments decide the runs of the pull
request waiting for approval, by the commenter's permission; the check run shows the wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.models import RunState
from core.spec import load_app
from core.store import Store
from tests.integration.test_github_app import HEAD, PR, REPO, comment, pr_comment, reactions
from tests.support import github as support
from tests.support.apps import python_job, write_app


def approval_app(tmp_path: Path) -> Any:
    jobs = [
        python_job("gate", "print('through the gate')",
                   approval={"required": 2, "from": {"github_permission": "maintain"}}),
        python_job("mine", "print('mine')", approval={"from": {"github_permission": "write"}}),
        python_job("other", "print('other')",
                   approval={"from": {"github_permission": "write"}, "self": True}),
    ]
    return load_app(write_app(tmp_path / "server", jobs, app="shop"))


@pytest.fixture
async def gh(tmp_path: Path, store: Store) -> AsyncIterator[support.Harness]:
    harness, closers = await support.start(tmp_path, approval_app(tmp_path), store)
    harness.fake.permissions.update({(REPO, "alice"): "write", (REPO, "bob"): "write",
                                     (REPO, "maint"): "maintain", (REPO, "root"): "admin",
                                     (REPO, "reader"): "read"})
    harness.fake.add_pull(REPO, PR, HEAD)
    yield harness
    await support.stop(harness, closers)


def run_of(gh: support.Harness, job: str) -> Any:
    [run] = [r for r in gh.store.list_runs(limit=100) if r.job == job]
    return run


async def test_approve_by_permission_until_enough_then_it_runs(gh: support.Harness) -> None:
    await comment(gh, "/run gate")
    run = run_of(gh, "gate")
    assert run.state == RunState.NEEDS_APPROVAL
    [check] = gh.fake.checks_for("jobbot: gate")
    assert check["status"] == "queued"
    assert check["output"]["summary"] == "waiting for approval: 0 of 2"
    assert "needs_approval" in pr_comment(gh)

    refused = await comment(gh, "/approve", login="reader")
    assert reactions(gh, refused) == ["eyes", "confused"]
    assert "you may not approve gate: only people with maintain permission" in pr_comment(gh)
    await comment(gh, "/approve", login="bob")
    assert gh.store.approvals(run.id) == []

    approved = await comment(gh, "/approve", login="maint")
    assert reactions(gh, approved) == ["eyes", "rocket"]
    assert "maint approved gate #1: 1 of 2 approvals" in pr_comment(gh)
    [check] = gh.fake.checks_for("jobbot: gate")
    assert check["status"] == "queued"
    assert check["output"]["summary"] == "waiting for approval: 1 of 2 (approved by maint)"
    again = await comment(gh, "/approve", login="maint")
    assert reactions(gh, again) == ["eyes", "confused"]
    assert run_of(gh, "gate").state == RunState.NEEDS_APPROVAL

    await comment(gh, "/approve gate", login="root")
    run = run_of(gh, "gate")
    assert run.state == RunState.SUCCEEDED
    [check] = gh.fake.checks_for("jobbot: gate")
    assert check["conclusion"] == "success"
    assert check["history"][-2:] == ["in_progress", "completed"]
    audit = [(e.actor, e.action, e.result) for e in gh.store.audit_log(200)
             if e.action in ("approve", "deny")]
    assert ("github:maint", "approve", "approved") in audit
    assert ("github:root", "approve", "approved") in audit
    assert ("github:reader", "approve", "refused") in audit
    assert ("github:bob", "approve", "refused") in audit


async def test_deny_ends_the_run_denied_and_its_check_run(gh: support.Harness) -> None:
    await comment(gh, "/run gate")
    denied = await comment(gh, "/deny", login="root")
    assert reactions(gh, denied) == ["eyes", "rocket"]
    run = run_of(gh, "gate")
    assert run.state == RunState.DENIED and run.reason == "denied by root"
    [check] = gh.fake.checks_for("jobbot: gate")
    assert check["conclusion"] == "cancelled"
    assert "denied by root" in pr_comment(gh)
    assert ("github:root", "deny", "denied") in [(e.actor, e.action, e.result)
                                                 for e in gh.store.audit_log(200)]


async def test_the_requester_may_not_approve_their_own_run(gh: support.Harness) -> None:
    await comment(gh, "/run mine")
    await comment(gh, "/approve", login="alice")
    assert "you started mine #1, so someone else must approve it" in pr_comment(gh)
    assert run_of(gh, "mine").state == RunState.NEEDS_APPROVAL
    await comment(gh, "/approve", login="bob")
    assert run_of(gh, "mine").state == RunState.SUCCEEDED
    # self: true lets the requester approve.
    await comment(gh, "/run other")
    await comment(gh, "/approve other", login="alice")
    assert run_of(gh, "other").state == RunState.SUCCEEDED


async def test_with_several_runs_waiting_the_command_says_which(gh: support.Harness) -> None:
    await comment(gh, "/run gate")
    await comment(gh, "/run mine")
    await comment(gh, "/approve", login="root")
    assert "several runs wait for approval (" in pr_comment(gh)
    assert gh.store.approvals(run_of(gh, "mine").id) == []
    await comment(gh, "/approve mine#1", login="root")
    assert run_of(gh, "mine").state == RunState.SUCCEEDED
    await comment(gh, "/deny", login="root")  # one waits now: no need to say which
    assert run_of(gh, "gate").state == RunState.DENIED
    nothing = await comment(gh, "/approve", login="root")
    assert reactions(gh, nothing) == ["eyes", "confused"]
    assert "nothing of this pull request waits for approval" in pr_comment(gh)


async def test_a_new_push_needs_its_own_approvals(gh: support.Harness) -> None:
    await comment(gh, "/run mine")
    first = run_of(gh, "mine")
    gh.fake.add_pull(REPO, PR, "2" * 40)  # a push to the pull request's branch
    await comment(gh, "/run mine")
    runs = sorted((r for r in gh.store.list_runs(limit=10) if r.job == "mine"),
                  key=lambda r: r.number)
    assert [r.sha for r in runs] == [HEAD, "2" * 40]
    await comment(gh, "/approve mine#2", login="bob")
    # The approval is of run #2 (the new head) alone: #1 still waits.
    assert (await gh.service.get_run(first.id)).state == RunState.NEEDS_APPROVAL
    assert (await gh.service.get_run(runs[1].id)).state == RunState.SUCCEEDED

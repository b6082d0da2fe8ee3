"""The GitHub App end to end: signed deliveries in, the fake GitHub's recorded calls out."""

from __future__ import annotations

import errno
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

import pytest

from core.intake import abandoned
from core.models import RunState
from core.replicas import Liveness
from core.spec import load_app
from core.store import NewDelivery, NewRun, Store
from github_app.render import HELP_MARKER, RUNS_MARKER
from tests.fakes import github_payloads as p
from tests.fakes.github import mentions, render_markdown
from tests.support import github as support
from tests.support.apps import python_job, write_app

REPO = "acme/shop"
FORK = "mallory/shop"
HEAD = "1" * 40
NEW_HEAD = "2" * 40
PR = 7
PY = sys.executable
# Text that would ping a team, show an image, break a table or end a code block if it were
# taken as Markdown.
HOSTILE = "sleeps | <img src=x> @acme/admins ``` [click](https://evil.example) &#64;acme/ops"
HOSTILE_LOG = "```\n</code></pre><img src=x> @acme/admins | x\n````\nend"


def server_app(tmp_path: Path) -> Any:
    jobs = [
        python_job("check", "print('checked')", pull_requests=True),
        python_job("failing", "import sys; print('boom'); sys.exit(1)"),
        python_job("leaky", "import os; print('secret:', os.environ.get('DB_PASSWORD', 'none'))",
                   secrets=["db"], pull_requests=True),
        python_job("admin-only", "print('admin')", allow={"github_permission": "admin"}),
        python_job("slow", "import time; time.sleep(60)", description=HOSTILE),
        python_job("echo", "import os; print('greeting', os.environ.get('GREETING'))",
                   env={"GREETING": "hi"}),
        python_job("noisy", f"import sys; print({HOSTILE_LOG!r}); sys.exit(1)"),
    ]
    app = load_app(write_app(tmp_path / "server", jobs, app="shop"))
    secrets = tmp_path / "data" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "db.env").write_text("DB_PASSWORD=hunter2hunter2\n")
    return app


def server_app_again(tmp_path: Path) -> Any:
    """The server's app.yaml as a restarted process reads it (already written)."""
    return load_app(tmp_path / "server" / "app.yaml")


@pytest.fixture
async def gh(tmp_path: Path, store: Store) -> AsyncIterator[support.Harness]:
    harness, closers = await support.start(tmp_path, server_app(tmp_path), store)
    harness.fake.permissions.update({(REPO, "alice"): "write", (REPO, "root"): "admin",
                                     (REPO, "reader"): "read"})
    harness.fake.add_pull(REPO, PR, HEAD)
    yield harness
    await support.stop(harness, closers)


async def comment(gh: support.Harness, body: str, *, login: str = "alice",
                  **kwargs: Any) -> dict[str, Any]:
    payload = p.issue_comment(REPO, PR, body, login=login, **kwargs)
    response = await gh.deliver("issue_comment", payload)
    assert response.status == 202
    await gh.settle()
    return payload


def api_calls(gh: support.Harness) -> list[Any]:
    """The calls jobbot made to GitHub, but for listing the App's installations (at start-up,
    and when a delivery names a repository it did not know)."""
    return [c for c in gh.fake.calls if c.path not in ("/app/installations",
                                                       "/installation/repositories")
            and not c.path.endswith("/access_tokens")]


def pr_comment(gh: support.Harness) -> str:
    mine = [c for c in gh.fake.comments.get((REPO, PR), []) if RUNS_MARKER in c["body"]]
    assert len(mine) == 1, "exactly one jobbot comment per pull request"
    return str(mine[0]["body"])


def reactions(gh: support.Harness, payload: dict[str, Any]) -> list[str]:
    return [content for _, cid, content in gh.fake.reactions if cid == payload["comment"]["id"]]


async def runs(gh: support.Harness) -> list[Any]:
    return gh.store.list_runs(limit=100)


# -- signatures and deliveries ------------------------------------------------------------


async def test_bad_or_missing_signatures_get_401_and_change_nothing(gh: support.Harness) -> None:
    payload = p.issue_comment(REPO, PR, "/run check")
    wrong = await gh.deliver("issue_comment", payload, secret=b"not-the-secret")
    missing = await gh.deliver("issue_comment", payload, secret=b"")
    garbage = await gh.deliver("issue_comment", payload, signature="sha1=abc")
    assert (wrong.status, missing.status, garbage.status) == (401, 401, 401)
    await gh.settle()
    assert api_calls(gh) == []
    assert await runs(gh) == []


async def test_ping_and_unhandled_events_get_2xx(gh: support.Harness) -> None:
    ping = await gh.deliver("ping", p.ping(), delivery_id="d-ping")
    other = await gh.deliver("star", {"action": "created", "starred_at": None},
                             delivery_id="d-star")
    assert ping.status == 202
    assert other.status == 202
    assert (await other.json())["status"] == "ignored"
    await gh.settle()
    ping_row = gh.store.delivery("d-ping")
    star_row = gh.store.delivery("d-star")
    assert ping_row is not None
    assert ping_row.outcome == "pong"
    assert star_row is not None
    assert star_row.outcome.startswith("ignored")


async def test_a_payload_without_the_fields_needed_is_answered_and_recorded(
        gh: support.Harness) -> None:
    drifted = {"action": "created", "issue": {"number": "x", "pull_request": {}},
               "comment": {"body": "/jobs"}}
    response = await gh.deliver("issue_comment", drifted, delivery_id="d-drift")
    assert response.status == 202
    await gh.settle()
    row = gh.store.delivery("d-drift")
    assert row is not None
    assert row.outcome.startswith("failed: issue_comment payload has no")


async def test_a_delivery_that_cannot_be_written_down_gets_503_and_its_redelivery_runs(
        gh: support.Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(delivery: NewDelivery) -> bool:
        raise OSError(errno.ENOSPC, "No space left on device")

    payload = p.issue_comment(REPO, PR, "/run check")
    with monkeypatch.context() as patch:
        patch.setattr(gh.store, "record_delivery", disk_full)
        failed = await gh.deliver("issue_comment", payload, delivery_id="d-full")
        assert failed.status == 503
        assert "could not record" in (await failed.json())["error"]
    await gh.settle()
    assert gh.store.delivery("d-full") is None and await runs(gh) == []
    again = await gh.deliver("issue_comment", payload, delivery_id="d-full")
    assert again.status == 202
    await gh.settle()
    [run] = await runs(gh)
    assert (run.job, run.state) == ("check", "succeeded")


async def test_not_json_is_400(gh: support.Harness) -> None:
    response = await gh.client.post("/github/webhook", data=b"{nope", headers={
        "X-GitHub-Event": "push", "X-GitHub-Delivery": "d1",
        "X-Hub-Signature-256": support.sign(support.SECRET, b"{nope")})
    assert response.status == 400
    assert "JSON" in (await response.json())["error"]


async def test_a_redelivery_never_starts_a_second_run(gh: support.Harness) -> None:
    payload = p.issue_comment(REPO, PR, "/run check")
    first = await gh.deliver("issue_comment", payload, delivery_id="same-id")
    await gh.settle()
    again = await gh.deliver("issue_comment", payload, delivery_id="same-id")
    await gh.settle()
    assert first.status == 202
    assert again.status == 200
    assert (await again.json())["status"] == "duplicate"
    assert [r.job for r in await runs(gh)] == ["check"]


# -- PR commands --------------------------------------------------------------------------


async def test_run_command_runs_the_job_with_a_check_run_and_one_comment(
        gh: support.Harness) -> None:
    payload = await comment(gh, "/run echo GREETING=hello")
    [run] = await runs(gh)
    assert (run.job, run.state, run.sha, run.overrides) == ("echo", "succeeded", HEAD,
                                                            {"GREETING": "hello"})
    assert run.origin["pull_request"] == PR
    assert reactions(gh, payload) == ["eyes", "rocket"]
    [check] = gh.fake.checks_for("jobbot: echo")
    assert check["head_sha"] == HEAD
    assert check["external_id"] == run.id
    assert check["details_url"].startswith(f"http://jobbot.test/runs/{run.id}?t=")
    assert check["history"] == ["queued", "in_progress", "completed"]
    assert check["conclusion"] == "success"
    assert "greeting hello" in check["output"]["text"]
    body = pr_comment(gh)
    assert "echo #1" in body
    assert "succeeded" in body
    assert f"/runs/{run.id}?t=" in body


async def test_commands_in_code_blocks_quotes_or_edits_are_ignored(gh: support.Harness) -> None:
    await comment(gh, "```\n/run check\n```")
    await comment(gh, "> /run check\nI agree")
    await comment(gh, "/run check", action="edited")
    await comment(gh, "please look\n/run check")
    assert await runs(gh) == []
    assert gh.fake.reactions == []


async def test_comments_by_bots_are_ignored(gh: support.Harness) -> None:
    await comment(gh, "/run check", login="jobbot[bot]", bot=True)
    await comment(gh, f"{RUNS_MARKER}\n/run check", login="alice")
    assert await runs(gh) == []
    assert api_calls(gh) == []


async def test_failed_run_check_run_and_rerun_of_failed_runs(gh: support.Harness) -> None:
    await comment(gh, "/run failing")
    await comment(gh, "/run check")
    [check] = gh.fake.checks_for("jobbot: failing")
    assert check["conclusion"] == "failure"
    assert "boom" in check["output"]["text"]
    assert check["actions"][0]["identifier"] == "rerun"
    payload = await comment(gh, "/rerun")
    jobs = sorted((r.job, r.number) for r in await runs(gh))
    assert jobs == [("check", 1), ("failing", 1), ("failing", 2)]  # only the failed one again
    assert reactions(gh, payload) == ["eyes", "rocket"]
    assert len(gh.fake.checks_for("jobbot: failing")) == 2


async def test_rerun_job_and_nothing_to_rerun(gh: support.Harness) -> None:
    await comment(gh, "/run check")
    payload = await comment(gh, "/rerun")
    assert reactions(gh, payload) == ["eyes", "confused"]
    assert "no failed runs" in pr_comment(gh)
    await comment(gh, "/rerun check")
    assert sorted(r.number for r in await runs(gh)) == [1, 2]


async def test_cancel_stops_the_pull_requests_runs(gh: support.Harness) -> None:
    payload = p.issue_comment(REPO, PR, "/run slow")
    await gh.deliver("issue_comment", payload)
    await gh.github.intake.join()
    cancel = p.issue_comment(REPO, PR, "/cancel slow")
    await gh.deliver("issue_comment", cancel)
    await gh.settle()
    [run] = await runs(gh)
    assert run.state == "cancelled"
    assert run.reason == "cancelled by alice"
    assert gh.fake.checks_for("jobbot: slow")[0]["conclusion"] == "cancelled"
    assert reactions(gh, cancel) == ["eyes", "rocket"]


async def test_jobs_lists_jobs_with_their_last_state(gh: support.Harness) -> None:
    await comment(gh, "/run check")
    lookups = len(gh.fake.calls_to("GET", rf"/repos/{REPO}/(pulls|collaborators)/.+"))
    payload = await comment(gh, "/jobs")
    # A read-only listing: neither the PR nor the commenter's permission is looked up.
    assert len(gh.fake.calls_to("GET", rf"/repos/{REPO}/(pulls|collaborators)/.+")) == lookups
    body = pr_comment(gh)
    assert "| `check` |" in body
    assert "check #1: succeeded" in body
    assert "| `slow` |" in body
    assert "never run" in body
    assert reactions(gh, payload) == ["eyes", "rocket"]


async def test_unknown_commands_get_help_once(gh: support.Harness) -> None:
    await comment(gh, "/deploy now")
    await comment(gh, "/launch")
    helps = [c for c in gh.fake.comments[(REPO, PR)] if HELP_MARKER in c["body"]]
    assert len(helps) == 1
    assert "`/deploy`" in helps[0]["body"]
    assert "/run JOB" in helps[0]["body"]


async def test_unknown_job_and_bad_arguments_are_explained(gh: support.Harness) -> None:
    first = await comment(gh, "/run chekc")
    second = await comment(gh, "/run check NOTKEYVALUE")
    body = pr_comment(gh)
    assert "no job 'chekc' (did you mean check?)" in body
    assert "bad override 'NOTKEYVALUE': use KEY=VALUE" in body
    assert reactions(gh, first)[-1] == "confused"
    assert reactions(gh, second)[-1] == "confused"
    assert await runs(gh) == []


async def test_a_run_command_sets_only_names_the_job_declares(gh: support.Harness) -> None:
    loader = await comment(gh, "/run echo GREETING=hi LD_PRELOAD=/tmp/evil.so")
    secret = await comment(gh, "/run leaky DB_PASSWORD=x")
    body = pr_comment(gh).replace("\\_", "_")  # as GitHub shows the escaped Markdown
    assert ("LD_PRELOAD changes how programs are loaded or started: no run may set it; a run "
            "of echo may set only GREETING") in body
    assert ("DB_PASSWORD comes from the secrets of leaky: no run may set it; a run of leaky "
            "may set no variables") in body
    assert reactions(gh, loader)[-1] == "confused"
    assert reactions(gh, secret)[-1] == "confused"
    assert await runs(gh) == []


async def test_untrusted_commenters_run_nothing(gh: support.Harness) -> None:
    stranger = await comment(gh, "/run check", login="stranger")  # not a collaborator: 404
    reader = await comment(gh, "/run check", login="reader")
    writer = await comment(gh, "/run admin-only")
    assert await runs(gh) == []
    body = pr_comment(gh)
    assert "it needs write permission on the repository (you have none)" in body
    assert "(you have read)" in body
    assert "it needs admin permission" in body
    for payload in (stranger, reader, writer):
        assert reactions(gh, payload) == ["eyes", "confused"]
    asked = gh.fake.calls_to("GET", rf"/repos/{REPO}/collaborators/\w+/permission")
    assert {c.path.split("/")[-2] for c in asked} == {"stranger", "reader", "alice"}
    await comment(gh, "/run admin-only", login="root")
    assert [r.job for r in await runs(gh)] == ["admin-only"]


# -- pull requests, forks and /ok-to-test -------------------------------------------------


async def test_pull_request_runs_its_jobs_for_a_trusted_author(gh: support.Harness) -> None:
    response = await gh.deliver("pull_request", p.pull_request_event("opened", REPO, PR, HEAD))
    assert response.status == 202
    await gh.settle()
    done = {r.job: r for r in await runs(gh)}
    assert set(done) == {"check", "leaky"}
    assert all(r.state == "succeeded" and r.sha == HEAD for r in done.values())
    # Not a fork: the job gets its secret (masked in the check run's output).
    [leaky] = gh.fake.checks_for("jobbot: leaky")
    assert "secret: ********" in leaky["output"]["text"]
    assert "hunter2" not in json.dumps(gh.fake.check_runs)


async def test_untrusted_pull_request_author_runs_nothing(gh: support.Harness) -> None:
    gh.fake.permissions[(REPO, "reader")] = "read"
    await gh.deliver("pull_request",
                     p.pull_request_event("opened", REPO, PR, HEAD, author="reader"))
    await gh.settle()
    assert await runs(gh) == []


async def test_fork_pull_requests_wait_for_ok_to_test_per_head_sha(gh: support.Harness) -> None:
    gh.fake.add_pull(REPO, PR, HEAD, author="mallory", head_repo=FORK)
    gh.fake.permissions[(REPO, "mallory")] = "read"
    await gh.deliver("pull_request", p.pull_request_event("opened", REPO, PR, HEAD,
                                                          author="mallory", head_repo=FORK))
    await gh.settle()
    assert await runs(gh) == []
    assert "/ok-to-test" in pr_comment(gh)
    # A maintainer's /run does not bypass the gate either.
    await comment(gh, "/run check")
    assert await runs(gh) == []
    # Someone without write access cannot vouch.
    refused = await comment(gh, "/ok-to-test", login="reader")
    assert reactions(gh, refused) == ["eyes", "confused"]
    assert await runs(gh) == []
    approved = await comment(gh, "/ok-to-test")
    assert reactions(gh, approved) == ["eyes", "rocket"]
    done = {r.job: r for r in await runs(gh)}
    assert set(done) == {"check", "leaky"}
    assert all(r.origin["fork"] is True and r.sha == HEAD for r in done.values())
    # Fork runs never get secrets (the job does not say fork_secrets: true).
    assert "secret: none" in gh.fake.checks_for("jobbot: leaky")[0]["output"]["text"]
    # A new push needs a new approval.
    gh.fake.add_pull(REPO, PR, NEW_HEAD, author="mallory", head_repo=FORK)
    await gh.deliver("pull_request", p.pull_request_event("synchronize", REPO, PR, NEW_HEAD,
                                                          author="mallory", head_repo=FORK))
    await gh.settle()
    await comment(gh, "/run check")
    assert {r.sha for r in await runs(gh)} == {HEAD}
    await comment(gh, "/ok-to-test")
    assert {r.sha for r in await runs(gh)} == {HEAD, NEW_HEAD}


async def test_closing_the_pull_request_cancels_its_runs(gh: support.Harness) -> None:
    await gh.deliver("issue_comment", p.issue_comment(REPO, PR, "/run slow"))
    await gh.github.intake.join()
    await gh.deliver("pull_request", p.pull_request_event("closed", REPO, PR, HEAD))
    await gh.settle()
    [run] = await runs(gh)
    assert run.state == "cancelled"
    assert "closed #7" in (run.reason or "")


# -- check runs: Re-run button, suites ----------------------------------------------------


async def test_rerun_button_starts_a_new_run_with_a_new_check_run(gh: support.Harness) -> None:
    await comment(gh, "/run failing")
    [first] = await runs(gh)
    [check] = gh.fake.checks_for("jobbot: failing")
    payload = p.check_run(REPO, HEAD, check["id"], first.id)
    await gh.deliver("check_run", payload, delivery_id="rerun-1")
    await gh.settle()
    await gh.deliver("check_run", payload, delivery_id="rerun-1")  # redelivered
    await gh.settle()
    assert sorted(r.number for r in await runs(gh)) == [1, 2]
    checks = gh.fake.checks_for("jobbot: failing")
    assert len(checks) == 2
    assert checks[0]["conclusion"] == checks[1]["conclusion"] == "failure"
    action = p.check_run(REPO, HEAD, checks[1]["id"], first.id, action="requested_action")
    await gh.deliver("check_run", action)
    await gh.settle()
    assert sorted(r.number for r in await runs(gh)) == [1, 2, 3]


async def test_rerun_button_needs_permission(gh: support.Harness) -> None:
    await comment(gh, "/run failing")
    [first] = await runs(gh)
    await gh.deliver("check_run", p.check_run(REPO, HEAD, 1, first.id, login="reader"),
                     delivery_id="d-reader")
    await gh.settle()
    assert len(await runs(gh)) == 1
    row = gh.store.delivery("d-reader")
    assert row is not None
    assert "needs write permission" in row.outcome


async def test_check_suite_rerequested_reruns_the_suites_runs(gh: support.Harness) -> None:
    await comment(gh, "/run failing")
    await comment(gh, "/run check")
    await gh.deliver("check_suite", p.check_suite(REPO, HEAD))
    await gh.settle()
    assert sorted((r.job, r.number) for r in await runs(gh)) == [
        ("check", 1), ("check", 2), ("failing", 1), ("failing", 2)]


# -- API errors and rate limits -----------------------------------------------------------


async def test_rate_limits_are_waited_out_and_nothing_is_lost(gh: support.Harness) -> None:
    gh.fake.fail("POST", rf"/repos/{REPO}/check-runs", 429, headers={"Retry-After": "1"})
    gh.fake.fail("GET", rf"/repos/{REPO}/pulls/{PR}", 403,
                 headers={"Retry-After": "1", "x-ratelimit-remaining": "0"})
    payload = await comment(gh, "/run check")
    [run] = await runs(gh)
    assert run.state == "succeeded"
    [check] = gh.fake.checks_for("jobbot: check")
    assert check["conclusion"] == "success"
    assert len(gh.fake.calls_to("POST", rf"/repos/{REPO}/check-runs")) == 2
    assert reactions(gh, payload) == ["eyes", "rocket"]


async def test_a_permanent_api_error_is_recorded_with_the_delivery(gh: support.Harness) -> None:
    gh.fake.pulls.clear()
    await gh.deliver("issue_comment", p.issue_comment(REPO, PR, "/run check"),
                     delivery_id="d-404")
    await gh.settle()
    assert await runs(gh) == []
    row = gh.store.delivery("d-404")
    assert row is not None
    assert "pull request #7: GitHub answered 404" in row.outcome


async def test_installation_tokens_are_cached(gh: support.Harness) -> None:
    await comment(gh, "/run check")
    await comment(gh, "/run echo")
    assert gh.fake.tokens_issued == 1


# -- installations ------------------------------------------------------------------------


async def test_installations_record_the_served_repositories(gh: support.Harness) -> None:
    await gh.deliver("installation", p.installation_event("created", 77, [REPO, "acme/api"]))
    await gh.settle()
    assert [r.full_name for r in gh.store.served_repositories()] == ["acme/api", REPO]
    await gh.deliver("installation_repositories",
                     p.installation_repositories(77, [], ["acme/api"]))
    await gh.deliver("installation_repositories",
                     p.installation_repositories(77, ["acme/web"], []))
    await gh.settle()
    assert [r.full_name for r in gh.store.served_repositories()] == [REPO, "acme/web"]
    await gh.deliver("installation", p.installation_event("deleted", 77, []))
    await gh.settle()
    assert gh.store.served_repositories() == []


# -- pushes and builds --------------------------------------------------------------------


def repo_app_yaml(deploy_code: str = "print('version', open('VERSION').read().strip())") -> str:
    return json.dumps({
        "app": "shop",
        "builds": [{"name": "site", "image": "registry.example.com/acme/shop",
                    "branches": ["main"]}],
        "jobs": [
            {"name": "deploy", "image_from_build": "site", "run_on_image_change": "cd",
             "command": [PY, "-c", deploy_code]},
            {"name": "smoke", "image_from_build": "site", "run_on_image_change": "always",
             "command": [PY, "-c", "print('smoke ok')"]},
            {"name": "migrate", "image_from_build": "site", "run_on_image_change": "never",
             "command": [PY, "-c", "print('migrating')"]},
        ],
    })


async def installed(gh: support.Harness) -> None:
    await gh.deliver("installation", p.installation_event("created", 77, [REPO]))
    await gh.settle()


async def test_push_builds_then_runs_cd_jobs_in_the_checkout(gh: support.Harness,
                                                             tmp_path: Path) -> None:
    await installed(gh)
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "1.2.3\n"})
    response = await gh.deliver("push", p.push(REPO, "main", HEAD))
    assert response.status == 202
    await gh.settle()
    done = {r.job: r for r in await runs(gh)}
    assert set(done) == {"site", "deploy", "smoke"}  # `never` only records the image
    workspace = tmp_path / "workspaces" / "shop" / HEAD
    assert done["site"].state == "succeeded"
    assert done["site"].image == str(workspace)
    assert (workspace / "VERSION").read_text() == "1.2.3\n"
    assert done["deploy"].state == "succeeded"
    assert done["deploy"].image == str(workspace)
    [deploy] = gh.fake.checks_for("jobbot: deploy")
    assert "version 1.2.3" in deploy["output"]["text"]
    assert gh.fake.checks_for("jobbot: site")[0]["conclusion"] == "success"
    # The repository's definitions now win over the server's file.
    assert gh.service.catalog.app("shop").job("deploy").image_from_build == "site"


async def test_push_to_a_branch_without_builds_runs_nothing(gh: support.Harness) -> None:
    await installed(gh)
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "1"})
    await gh.deliver("push", p.push(REPO, "feature", HEAD))
    await gh.settle()
    assert await runs(gh) == []


async def test_invalid_app_yaml_fails_a_check_and_runs_nothing(gh: support.Harness) -> None:
    await installed(gh)
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": "app: shop\njobs:\n  - name: x\n    retries: 3\n"})
    await gh.deliver("push", p.push(REPO, "main", HEAD))
    await gh.settle()
    assert await runs(gh) == []
    [check] = gh.fake.checks_for("jobbot: app.yaml")
    assert check["conclusion"] == "failure"
    assert check["head_sha"] == HEAD
    assert "acme/shop@1111111:app.yaml:4" in check["output"]["summary"]
    assert "backoff_limit" in check["output"]["summary"]


async def test_a_newer_push_supersedes_the_older_ones_work(gh: support.Harness) -> None:
    await installed(gh)
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "1"})
    gh.fake.add_tree(REPO, NEW_HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "2"})
    # The newer push is answered before the older one's work starts (one worker, in order).
    gh.github.intake._size = 1
    await gh.deliver("push", p.push(REPO, "main", HEAD), delivery_id="old")
    await gh.deliver("push", p.push(REPO, "main", NEW_HEAD, before=HEAD), delivery_id="new")
    await gh.settle()
    assert {r.sha for r in await runs(gh)} == {NEW_HEAD}
    old = gh.store.delivery("old")
    assert old is not None
    assert "superseded" in old.outcome


async def test_a_failed_build_runs_no_jobs(gh: support.Harness) -> None:
    await installed(gh)
    gh.fake.add_file(REPO, HEAD, "app.yaml", repo_app_yaml())  # no tarball: download fails
    await gh.deliver("push", p.push(REPO, "main", HEAD))
    await gh.settle()
    [build] = await runs(gh)
    assert (build.job, build.state) == ("site", RunState.FAILED.value)
    assert "could not download the tarball" in (build.reason or "")
    assert gh.fake.checks_for("jobbot: site")[0]["conclusion"] == "failure"


# -- restarts: what jobbot knows is in the store, not only in memory ------------------------


async def test_a_delivery_answered_right_before_a_crash_is_handled_after_the_restart(
        gh: support.Harness, tmp_path: Path) -> None:
    support.die_after_answering(gh)
    payload = p.issue_comment(REPO, PR, "/run check")
    response = await gh.deliver("issue_comment", payload, delivery_id="d-crash")
    assert response.status == 202
    assert await runs(gh) == []
    await support.restart(gh, tmp_path, server_app_again(tmp_path))
    await gh.settle()
    [run] = await runs(gh)
    assert (run.job, run.state) == ("check", "succeeded")
    assert reactions(gh, payload) == ["eyes", "rocket"]
    again = await gh.deliver("issue_comment", payload, delivery_id="d-crash")
    await gh.settle()
    assert (again.status, (await again.json())["status"]) == (200, "duplicate")
    assert len(await runs(gh)) == 1


async def test_a_delivery_being_answered_by_a_live_process_is_not_taken_over(
        gh: support.Harness, tmp_path: Path) -> None:
    gh.github.intake.put = lambda key, work: None  # type: ignore[method-assign]
    response = await gh.deliver("issue_comment", p.issue_comment(REPO, PR, "/run check"),
                                delivery_id="d-live")
    assert response.status == 202
    me = support.dead_process()  # another process starting: this one still runs
    live = Liveness.read(gh.store, str(me))
    assert gh.store.take_over_deliveries(str(me), lambda owner, at: abandoned(owner, live)) == []


async def test_the_repository_app_is_known_after_a_restart(gh: support.Harness,
                                                           tmp_path: Path) -> None:
    await installed(gh)
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "1"})
    await gh.deliver("push", p.push(REPO, "main", HEAD))
    await gh.settle()
    await support.restart(gh, tmp_path, server_app_again(tmp_path))
    # The server's own app.yaml defines no builds; the repository's app is served again.
    assert gh.service.catalog.app("shop").job("deploy").image_from_build == "site"
    await gh.deliver("issue_comment", p.issue_comment(REPO, PR, "/jobs"))
    await gh.settle()
    body = pr_comment(gh)
    assert "deploy" in body
    assert "echo" not in body  # a job of the server's file, replaced by the repository's


async def test_a_newer_push_supersedes_an_older_one_across_a_restart(
        gh: support.Harness, tmp_path: Path) -> None:
    await installed(gh)
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "1"})
    gh.fake.add_tree(REPO, NEW_HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "2"})
    support.die_after_answering(gh)
    await gh.deliver("push", p.push(REPO, "main", HEAD), delivery_id="old")
    await gh.deliver("push", p.push(REPO, "main", NEW_HEAD, before=HEAD), delivery_id="new")
    await support.restart(gh, tmp_path, server_app_again(tmp_path), workers=1)
    await gh.settle()
    assert {r.sha for r in await runs(gh)} == {NEW_HEAD}
    old = gh.store.delivery("old")
    assert old is not None
    assert "superseded" in old.outcome


async def test_the_pull_request_comment_is_updated_not_searched_after_a_restart(
        gh: support.Harness, tmp_path: Path) -> None:
    await comment(gh, "/run echo")
    listed = len(gh.fake.calls_to("GET", rf"/repos/{REPO}/issues/{PR}/comments"))
    await support.restart(gh, tmp_path, server_app_again(tmp_path))
    await comment(gh, "/run check")
    assert "check" in pr_comment(gh)  # still exactly one jobbot comment
    assert len(gh.fake.calls_to("GET", rf"/repos/{REPO}/issues/{PR}/comments")) == listed


async def test_a_build_left_running_by_a_crash_is_built_again_at_start_up(
        gh: support.Harness, tmp_path: Path) -> None:
    await installed(gh)
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "1"})
    gh.store.save_repository_app(REPO, "shop", HEAD, repo_app_yaml())
    origin = {"repository": REPO, "installation_id": 77, "branch": "main"}
    build = gh.store.create_run(NewRun(
        app="shop", job="site", source="github", actor="github:alice", sha=HEAD,
        ref="refs/heads/main", origin=origin, executor="build",
        owner=str(support.dead_process()))).run
    gh.store.transition(build.id, RunState.RUNNING)
    gone = gh.store.create_run(NewRun(
        app="shop", job="old-site", source="github", actor="github:alice", sha=HEAD,
        origin=origin, executor="build", owner=str(support.dead_process()))).run
    await support.restart(gh, tmp_path, server_app_again(tmp_path))
    await gh.settle()
    rebuilt, dropped = gh.store.get_run(build.id), gh.store.get_run(gone.id)
    assert rebuilt is not None
    assert dropped is not None
    assert (rebuilt.state, rebuilt.image) == ("succeeded",
                                              str(tmp_path / "workspaces" / "shop" / HEAD))
    assert dropped.state == "failed"
    assert "no longer defined" in (dropped.reason or "")


async def test_a_second_repository_cannot_take_an_apps_name(gh: support.Harness) -> None:
    await gh.deliver("installation", p.installation_event("created", 77, [REPO, "acme/copy"]))
    await gh.settle()
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "1"})
    gh.fake.add_tree("acme/copy", NEW_HEAD, {"app.yaml": repo_app_yaml("print('copy')"),
                                             "VERSION": "2"})
    await gh.deliver("push", p.push(REPO, "main", HEAD))
    await gh.settle()
    await gh.deliver("push", p.push("acme/copy", "main", NEW_HEAD), delivery_id="d-copy")
    await gh.settle()
    [refused] = [c for c in gh.fake.checks_for("jobbot: app.yaml")]
    assert (refused["head_sha"], refused["conclusion"]) == (NEW_HEAD, "failure")
    assert "acme/shop" in refused["output"]["summary"]
    assert {r.sha for r in await runs(gh)} == {HEAD}
    row = gh.store.delivery("d-copy")
    assert row is not None
    assert row.outcome == "refused: app shop is defined by acme/shop"


# -- what people and jobs write is never markup -------------------------------------------


def assert_inert(html: str) -> None:
    """Nothing in a rendered text that the input could have put there: no image, no HTML,
    no link but jobbot's own, no mention."""
    assert "<img" not in html and "</code></pre><img" not in html
    assert re.findall(r'<a href="(?!http://jobbot\.test/)', html) == []
    assert mentions(html) == []


async def test_command_answers_quoting_input_render_inert(gh: support.Harness) -> None:
    # Words of a PR command have no spaces: the job name and a malformed KEY=VALUE.
    await comment(gh, "/run nosuch|x<img>@mallory```[a](javascript:alert(1))")
    await comment(gh, "/run check `<img>`@acme/ops|y")
    await comment(gh, "/jobs")
    html = render_markdown(pr_comment(gh))
    assert_inert(html)
    assert "'nosuch|x&lt;img&gt;@\u200dmallory```[a](javascript:alert(1))'" in html
    # Backticks pair up as GitHub pairs them: code stays code, the rest is text.
    assert ("bad override '<code>&lt;img&gt;</code>@\u200dacme/ops|y': use KEY=VALUE"
            in html)
    # The /jobs table: one row per job, three cells each, the description shown as written.
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    assert len(rows) == 1 + len(gh.service.catalog.app("shop").jobs)
    assert all(row.count("<td>") == 3 for row in rows[1:])
    assert ("sleeps | &lt;img src=x&gt; @\u200dacme/admins ``` [click](https://evil.example) "
            "&amp;#64;acme/ops") in html
    assert await runs(gh) == []


async def test_check_run_log_tails_render_inert(gh: support.Harness) -> None:
    await comment(gh, "/run noisy")
    [check] = gh.fake.checks_for("jobbot: noisy")
    output = check["output"]
    html = render_markdown(output["summary"]) + render_markdown(output["text"])
    assert_inert(html)
    # The whole tail in one code block, exactly as the job printed it.
    [block] = re.findall(r"<pre><code>(.*?)</code></pre>", html, re.S)
    assert html_unescape(block).splitlines() == HOSTILE_LOG.splitlines()


async def test_config_errors_in_check_runs_render_inert(gh: support.Harness) -> None:
    await installed(gh)
    key = "x`<img src=x>`@acme/admins|y"
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": json.dumps({"app": "shop", "jobs": [
        {"name": "x", "image": "python:3", "command": ["true"], key: 1}]})})
    await gh.deliver("push", p.push(REPO, "main", HEAD))
    await gh.settle()
    [invalid] = gh.fake.checks_for("jobbot: app.yaml")
    html = render_markdown(invalid["output"]["summary"])
    assert_inert(html)
    [problem] = re.findall(r"<li><code>(.*?)</code></li>", html, re.S)  # the line, all code
    assert key in html_unescape(problem)


# -- trust: only the repository's own app, keys from the payload, /ok-to-test, reactions --


OPS = "acme/ops"
WEB = "acme/web"
BASE = "b" * 40
OPS_SHA = "3" * 40


def app_yaml(app: str, *jobs: dict[str, object]) -> str:
    return json.dumps({"app": app, "jobs": list(jobs)})


async def other_apps(gh: support.Harness, *, shop_defines_its_own: bool = True) -> None:
    """acme/ops defines the app ops (its deploy-prod uses the db secret); acme/shop defines
    the app shop in the app.yaml on its default branch, which jobbot has not seen pushed."""
    ops = app_yaml("ops", python_job("deploy-prod", "print('deploying prod')", secrets=["db"]))
    gh.fake.add_tree(OPS, OPS_SHA, {"app.yaml": ops})
    await gh.deliver("push", p.push(OPS, "main", OPS_SHA), delivery_id="d-ops")
    await gh.settle()
    row = gh.store.delivery("d-ops")
    assert row is not None and row.outcome == "registered app ops; no build for main"
    if shop_defines_its_own:
        gh.fake.add_branch(REPO, "main", BASE)
        gh.fake.add_file(REPO, BASE, "app.yaml", app_yaml(
            "shop", python_job("check", "print('checked')", pull_requests=True)))


def notes(gh: support.Harness, repository: str = REPO, number: int = PR) -> str:
    mine = [c for c in gh.fake.comments.get((repository, number), [])
            if RUNS_MARKER in c["body"]]
    return str(mine[0]["body"]) if mine else ""


async def test_a_pull_request_command_reaches_only_its_repositorys_app(
        gh: support.Harness) -> None:
    await other_apps(gh)
    refused = await comment(gh, "/run ops/deploy-prod")
    bare = await comment(gh, "/run deploy-prod")
    assert await runs(gh) == []
    assert reactions(gh, refused)[-1] == reactions(gh, bare)[-1] == "confused"
    body = pr_comment(gh)
    assert ("'ops/deploy-prod' is not a job of acme/shop: its pull requests reach only the "
            "jobs of its app shop") in body
    assert "no job 'deploy-prod'" in body
    # acme/shop's own app, read from its default branch on first use, is what runs.
    await comment(gh, "/run shop/check")
    await comment(gh, "/run check")
    assert [(r.app, r.job, r.state) for r in await runs(gh)] == [
        ("shop", "check", "succeeded"), ("shop", "check", "succeeded")]
    [stored] = [r for r in gh.store.repository_apps() if r.repository == REPO]
    assert (stored.app, stored.sha) == ("shop", BASE)


async def test_a_repository_without_an_app_reaches_no_jobs(gh: support.Harness) -> None:
    await other_apps(gh, shop_defines_its_own=False)
    gh.fake.permissions[(WEB, "alice")] = "admin"
    gh.fake.add_pull(WEB, 3, HEAD)
    for body in ("/run deploy-prod", "/run ops/deploy-prod", "/run check", "/jobs"):
        await gh.deliver("issue_comment", p.issue_comment(WEB, 3, body))
    await gh.deliver("pull_request", p.pull_request_event("opened", WEB, 3, HEAD),
                     delivery_id="d-web-pr")
    await gh.settle()
    assert await runs(gh) == []
    body = notes(gh, WEB, 3)
    assert body.count("acme/web has no app of its own (no app.yaml on main)") == 4
    row = gh.store.delivery("d-web-pr")
    assert row is not None and row.outcome.startswith("ignored: acme/web has no app of its own")


async def test_check_run_buttons_rerun_only_runs_of_the_repositorys_app(
        gh: support.Harness) -> None:
    await other_apps(gh)
    # A failed run of another app with a check run on acme/shop (as the old lookup made).
    origin = {"repository": REPO, "installation_id": 77, "pull_request": PR}
    ops_run = gh.store.create_run(NewRun(
        app="ops", job="deploy-prod", source="github", actor="github:alice", sha=HEAD,
        ref="feature", origin=origin)).run
    gh.store.transition(ops_run.id, RunState.FAILED)
    await gh.deliver("check_run", p.check_run(REPO, HEAD, 9001, ops_run.id),
                     delivery_id="d-button")
    await gh.deliver("check_run", p.check_run(REPO, HEAD, 9001, ops_run.id,
                                              action="requested_action"),
                     delivery_id="d-action")
    await gh.deliver("check_suite", p.check_suite(REPO, HEAD), delivery_id="d-suite")
    await gh.settle()
    assert [r.id for r in await runs(gh)] == [ops_run.id]
    for delivery_id in ("d-button", "d-action"):
        row = gh.store.delivery(delivery_id)
        assert row is not None
        assert row.outcome == (f"refused: {ops_run.label} is not a run of acme/shop's app shop: "
                               f"its check runs rerun only that app's runs")
    suite = gh.store.delivery("d-suite")
    assert suite is not None and suite.outcome == "ignored: no runs of app shop in this suite"


async def test_a_replay_under_a_new_delivery_id_starts_nothing_new(gh: support.Harness) -> None:
    payload = p.issue_comment(REPO, PR, "/run check")
    for delivery_id in ("d-first", "d-replayed"):
        response = await gh.deliver("issue_comment", payload, delivery_id=delivery_id)
        assert response.status == 202
        await gh.settle()
    assert [r.job for r in await runs(gh)] == ["check"]
    row = gh.store.delivery("d-replayed")
    assert row is not None and "this comment already started check #1" in row.outcome
    # The same words in a new comment are a new command.
    await comment(gh, "/run check")
    assert len(await runs(gh)) == 2


async def test_a_replayed_pull_request_event_starts_nothing_new(gh: support.Harness) -> None:
    opened = p.pull_request_event("opened", REPO, PR, HEAD)
    await gh.deliver("pull_request", opened, delivery_id="pr-1")
    await gh.deliver("pull_request", opened, delivery_id="pr-2")
    await gh.settle()
    assert sorted(r.job for r in await runs(gh)) == ["check", "leaky"]
    # Another action on the same head is another event.
    await gh.deliver("pull_request", p.pull_request_event("reopened", REPO, PR, HEAD))
    await gh.settle()
    assert sorted(r.job for r in await runs(gh)) == ["check", "check", "leaky", "leaky"]


async def test_replayed_check_run_and_suite_requests_start_nothing_new(
        gh: support.Harness) -> None:
    await comment(gh, "/run check")
    await comment(gh, "/run failing")
    [failed] = [r for r in await runs(gh) if r.job == "failing"]
    [check] = gh.fake.checks_for("jobbot: failing")
    button = p.check_run(REPO, HEAD, check["id"], failed.id)
    suite = p.check_suite(REPO, HEAD)
    for n in (1, 2):
        await gh.deliver("check_run", button, delivery_id=f"button-{n}")
        await gh.settle()
        await gh.deliver("check_suite", suite, delivery_id=f"suite-{n}")
        await gh.settle()
    # One rerun from the button, and one of each job from the suite: not one per delivery.
    assert sorted((r.job, r.number) for r in await runs(gh)) == [
        ("check", 1), ("check", 2), ("failing", 1), ("failing", 2), ("failing", 3)]


async def test_a_replayed_push_builds_and_deploys_once(gh: support.Harness) -> None:
    await installed(gh)
    gh.fake.add_tree(REPO, HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "1"})
    pushed = p.push(REPO, "main", HEAD)
    for delivery_id in ("push-1", "push-2"):
        await gh.deliver("push", pushed, delivery_id=delivery_id)
        await gh.settle()
    assert sorted(r.job for r in await runs(gh)) == ["deploy", "site", "smoke"]
    # Moved on and back again: that push to the same sha is a new one, and deploys again.
    gh.fake.add_tree(REPO, NEW_HEAD, {"app.yaml": repo_app_yaml(), "VERSION": "2"})
    await gh.deliver("push", p.push(REPO, "main", NEW_HEAD, before=HEAD))
    await gh.settle()
    await gh.deliver("push", p.push(REPO, "main", HEAD, before=NEW_HEAD))
    await gh.settle()
    deploys = [r.sha for r in await runs(gh) if r.job == "deploy"]
    assert deploys == [HEAD, NEW_HEAD, HEAD]  # newest first


async def fork_opened(gh: support.Harness) -> None:
    gh.fake.add_pull(REPO, PR, HEAD, author="mallory", head_repo=FORK)
    gh.fake.permissions[(REPO, "mallory")] = "read"
    await gh.deliver("pull_request", p.pull_request_event(
        "opened", REPO, PR, HEAD, author="mallory", head_repo=FORK))  # created 04:00
    await gh.settle()


async def fork_pushed(gh: support.Harness, at: str) -> None:
    gh.fake.add_pull(REPO, PR, NEW_HEAD, author="mallory", head_repo=FORK)
    await gh.deliver("pull_request", p.pull_request_event(
        "synchronize", REPO, PR, NEW_HEAD, author="mallory", head_repo=FORK, updated_at=at))
    await gh.settle()


async def test_ok_to_test_approves_the_head_when_the_comment_was_written(
        gh: support.Harness) -> None:
    await fork_opened(gh)
    # The maintainer approves at 05:00; a push lands at 05:01, and is handled first.
    await fork_pushed(gh, "2026-11-22T05:01:00Z")
    approval = await comment(gh, "/ok-to-test", created_at="2026-11-22T05:00:00Z")
    assert reactions(gh, approval)[-1] == "rocket"
    assert gh.store.approval(REPO, HEAD) is not None
    assert gh.store.approval(REPO, NEW_HEAD) is None
    assert await runs(gh) == []  # the head now is the push nobody vouched for
    assert (f"alice approved {HEAD[:7]} for testing; the head is now {NEW_HEAD[:7]}, which "
            f"needs its own /ok-to-test") in pr_comment(gh)
    # A comment written after the push approves it.
    await comment(gh, "/ok-to-test", created_at="2026-11-22T05:02:00Z")
    done = {r.job: r for r in await runs(gh)}
    assert set(done) == {"check", "leaky"}
    assert {r.sha for r in done.values()} == {NEW_HEAD}


async def test_ok_to_test_with_a_sha_approves_that_head(gh: support.Harness) -> None:
    await fork_opened(gh)
    await fork_pushed(gh, "2026-11-22T05:01:00Z")
    for word in ("1234567", "zz", "2222", "2" * 41):
        await comment(gh, f"/ok-to-test {word}")
    assert await runs(gh) == []
    body = pr_comment(gh)
    assert (f"1234567 is not a head this pull request had (heads: {HEAD[:7]}, "
            f"{NEW_HEAD[:7]})") in body
    assert body.count("`/ok-to-test` takes a commit sha: all of it, or at least its first 7 "
                      "hex digits") == 2  # zz, 2222
    assert "222222222222 is not a head this pull request had" in body  # 41 digits
    await comment(gh, f"/ok-to-test {NEW_HEAD[:10]}", created_at="2026-11-22T04:30:00Z")
    assert gh.store.approval(REPO, NEW_HEAD) is not None
    assert {r.sha for r in await runs(gh)} == {NEW_HEAD}


async def test_ok_to_test_refuses_when_it_cannot_tell_which_head_was_seen(
        gh: support.Harness) -> None:
    gh.fake.add_pull(REPO, PR, HEAD, author="mallory", head_repo=FORK)
    # No pull_request event recorded yet: no head is known.
    unknown = await comment(gh, "/ok-to-test")
    await fork_opened(gh)
    # Written before the pull request was opened (04:00).
    early = await comment(gh, "/ok-to-test", created_at="2026-11-22T03:59:00Z")
    # The same second as the head it would approve.
    tie = await comment(gh, "/ok-to-test", created_at=p.PR_OPENED)
    # A push jobbot has not heard of yet: the API's head is not among the recorded ones.
    gh.fake.add_pull(REPO, PR, NEW_HEAD, author="mallory", head_repo=FORK)
    moved = await comment(gh, "/ok-to-test")
    for payload in (unknown, early, tie, moved):
        assert reactions(gh, payload)[-1] == "confused"
    assert gh.store.approval(REPO, HEAD) is None and gh.store.approval(REPO, NEW_HEAD) is None
    assert await runs(gh) == []
    body = pr_comment(gh)
    assert body.count("comment `/ok-to-test SHA` with its sha") == 4
    assert "knows of no head of this pull request from before this comment" in body
    assert "the head changed in the second this comment was written" in body
    assert f"the head moved to {NEW_HEAD[:7]} and jobbot cannot tell" in body


async def test_a_failing_reaction_never_stops_the_command(
        gh: support.Harness, caplog: pytest.LogCaptureFixture) -> None:
    reactions_path = rf"/repos/{REPO}/issues/comments/\d+/reactions"
    gh.fake.fail("POST", reactions_path, 404, times=2)  # the comment was deleted
    with caplog.at_level(logging.WARNING, logger="github_app.handlers.comments"):
        await gh.deliver("issue_comment", p.issue_comment(REPO, PR, "/run check"),
                         delivery_id="d-gone")
        await gh.settle()
    [run] = await runs(gh)
    assert (run.job, run.state) == ("check", "succeeded")
    row = gh.store.delivery("d-gone")
    assert row is not None and row.outcome == "/run: done: @alice started check #1"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("delivery d-gone: no eyes reaction on comment") and "404" in m
               for m in warned)
    assert any(m.startswith("delivery d-gone: no rocket reaction") for m in warned)


async def test_an_unexpected_reaction_answer_delays_nothing(gh: support.Harness) -> None:
    gh.fake.fail("POST", rf"/repos/{REPO}/issues/comments/\d+/reactions", 502, times=20)
    started = time.monotonic()
    await gh.deliver("issue_comment", p.issue_comment(REPO, PR, "/run check"),
                     delivery_id="d-502")
    await gh.settle(timeout=10)
    assert time.monotonic() - started < 8  # no retries with growing delays before the run
    [run] = await runs(gh)
    assert run.state == "succeeded"
    row = gh.store.delivery("d-502")
    assert row is not None and row.outcome == "/run: done: @alice started check #1"

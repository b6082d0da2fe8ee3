"""Webhook payloads in GitHub's published shapes; each builder checks its result with
githubkit's webhook models, so a test never feeds jobbot something GitHub would not send."""

from __future__ import annotations

import itertools
from typing import Any

from githubkit.webhooks import parse_obj

API = "https://api.github.com"
WEB = "https://github.com"
APP_ID = 4242
_ids = itertools.count(1000)


def checked(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    parse_obj(event, payload)  # raises if GitHub's schema would not accept it
    return payload


def user(login: str, *, bot: bool = False, user_id: int | None = None) -> dict[str, Any]:
    uid = user_id or (abs(hash(login)) % 10_000_000)
    url = f"{API}/users/{login}"
    return {
        "login": login, "id": uid, "node_id": f"U_{uid}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4", "gravatar_id": "",
        "url": url, "html_url": f"{WEB}/{login}", "followers_url": f"{url}/followers",
        "following_url": f"{url}/following{{/other_user}}", "gists_url": f"{url}/gists{{/gist_id}}",
        "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{url}/subscriptions", "organizations_url": f"{url}/orgs",
        "repos_url": f"{url}/repos", "events_url": f"{url}/events{{/privacy}}",
        "received_events_url": f"{url}/received_events",
        "type": "Bot" if bot else "User", "user_view_type": "public", "site_admin": False,
    }


def repository(full_name: str, *, repo_id: int = 1296269, private: bool = False,
               default_branch: str = "main") -> dict[str, Any]:
    owner, name = full_name.split("/")
    url = f"{API}/repos/{full_name}"
    urls = {
        f"{k}_url": f"{url}/{v}" for k, v in {
            "archive": "{archive_format}{/ref}", "assignees": "assignees{/user}",
            "blobs": "git/blobs{/sha}", "branches": "branches{/branch}",
            "collaborators": "collaborators{/collaborator}", "comments": "comments{/number}",
            "commits": "commits{/sha}", "compare": "compare/{base}...{head}",
            "contents": "contents/{+path}", "contributors": "contributors",
            "deployments": "deployments", "downloads": "downloads", "events": "events",
            "forks": "forks", "git_commits": "git/commits{/sha}", "git_refs": "git/refs{/sha}",
            "git_tags": "git/tags{/sha}", "hooks": "hooks", "issue_comment":
            "issues/comments{/number}", "issue_events": "issues/events{/number}",
            "issues": "issues{/number}", "keys": "keys{/key_id}", "labels": "labels{/name}",
            "languages": "languages", "merges": "merges", "milestones": "milestones{/number}",
            "notifications": "notifications{?since,all,participating}",
            "pulls": "pulls{/number}", "releases": "releases{/id}", "stargazers": "stargazers",
            "statuses": "statuses/{sha}", "subscribers": "subscribers",
            "subscription": "subscription", "tags": "tags", "teams": "teams",
            "trees": "git/trees{/sha}",
        }.items()
    }
    return {
        "id": repo_id, "node_id": f"R_{repo_id}", "name": name, "full_name": full_name,
        "private": private, "owner": user(owner), "html_url": f"{WEB}/{full_name}",
        "description": None, "fork": False, "url": url, **urls,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z",
        "pushed_at": "2026-11-01T00:00:00Z", "git_url": f"git://github.com/{full_name}.git",
        "ssh_url": f"git@github.com:{full_name}.git", "clone_url": f"{WEB}/{full_name}.git",
        "svn_url": f"{WEB}/{full_name}", "homepage": None, "size": 100,
        "stargazers_count": 0, "watchers_count": 0, "language": "Python",
        "has_issues": True, "has_projects": True, "has_downloads": True, "has_wiki": True,
        "has_pages": False, "has_discussions": False, "forks_count": 0, "mirror_url": None,
        "archived": False, "disabled": False, "open_issues_count": 0, "license": None,
        "allow_forking": True, "is_template": False, "web_commit_signoff_required": False,
        "topics": [], "visibility": "private" if private else "public", "forks": 0,
        "open_issues": 0, "watchers": 0, "default_branch": default_branch,
    }


def installation(installation_id: int) -> dict[str, Any]:
    return {"id": installation_id, "node_id": f"MDIzOkludGVncmF0aW9u{installation_id}"}


def _commit(sha: str, message: str, pusher: str, full_name: str) -> dict[str, Any]:
    person = {"name": pusher, "email": f"{pusher}@example.com", "username": pusher}
    return {"id": sha, "tree_id": "f" * 40, "distinct": True, "message": message,
            "timestamp": "2026-11-22T05:00:00Z", "url": f"{WEB}/{full_name}/commit/{sha}",
            "author": person, "committer": person, "added": [], "removed": [],
            "modified": ["app.yaml"]}


def push(full_name: str, branch: str, sha: str, *, pusher: str = "alice",
         before: str = "0" * 40, installation_id: int = 77,
         default_branch: str = "main") -> dict[str, Any]:
    repo = repository(full_name, default_branch=default_branch)
    # Push payloads describe the repository with timestamps as numbers, and owner name/email.
    repo.update({"created_at": 1767225600, "pushed_at": 1794000000, "stargazers": 0,
                 "master_branch": default_branch})
    repo["owner"] = {**repo["owner"], "name": repo["owner"]["login"], "email": None}
    commit = _commit(sha, "change things", pusher, full_name)
    return checked("push", {
        "ref": f"refs/heads/{branch}", "before": before, "after": sha, "created": False,
        "deleted": False, "forced": False, "base_ref": None,
        "compare": f"{WEB}/{full_name}/compare/{before[:12]}...{sha[:12]}",
        "commits": [commit], "head_commit": commit,
        "repository": repo, "pusher": {"name": pusher, "email": f"{pusher}@example.com"},
        "sender": user(pusher), "installation": installation(installation_id),
    })


def branch(full_name: str, name: str, sha: str) -> dict[str, Any]:
    """A branch as `GET /repos/{owner}/{repo}/branches/{branch}` shows it."""
    url = f"{API}/repos/{full_name}"
    person = {"name": "alice", "email": "alice@example.com", "date": "2026-11-22T05:00:00Z"}
    return {
        "name": name, "protected": False, "protection_url": f"{url}/branches/{name}/protection",
        "protection": {"enabled": False,
                       "required_status_checks": {"enforcement_level": "off", "contexts": [],
                                                  "checks": []}},
        "_links": {"self": f"{url}/branches/{name}", "html": f"{WEB}/{full_name}/tree/{name}"},
        "commit": {
            "sha": sha, "node_id": f"C_{sha[:12]}", "url": f"{url}/commits/{sha}",
            "html_url": f"{WEB}/{full_name}/commit/{sha}",
            "comments_url": f"{url}/commits/{sha}/comments", "author": user("alice"),
            "committer": user("alice"), "parents": [],
            "commit": {"author": person, "committer": person, "message": "change things",
                       "comment_count": 0, "url": f"{url}/git/commits/{sha}",
                       "tree": {"sha": "f" * 40, "url": f"{url}/git/trees/{'f' * 40}"}},
        },
    }


def _links(full_name: str, number: int) -> dict[str, Any]:
    url = f"{API}/repos/{full_name}"
    return {
        "self": {"href": f"{url}/pulls/{number}"},
        "html": {"href": f"{WEB}/{full_name}/pull/{number}"},
        "issue": {"href": f"{url}/issues/{number}"},
        "comments": {"href": f"{url}/issues/{number}/comments"},
        "review_comments": {"href": f"{url}/pulls/{number}/comments"},
        "review_comment": {"href": f"{url}/pulls/comments{{/number}}"},
        "commits": {"href": f"{url}/pulls/{number}/commits"},
        "statuses": {"href": f"{url}/statuses/{{sha}}"},
    }


PR_OPENED = "2026-11-22T04:00:00Z"
COMMENTED = "2026-11-22T05:00:00Z"


def pull_request(full_name: str, number: int, head_sha: str, *, author: str = "alice",
                 head_repo: str | None = None, state: str = "open", head_ref: str = "feature",
                 created_at: str = PR_OPENED, updated_at: str | None = None) -> dict[str, Any]:
    """A pull request as the REST API and the webhooks show it; `head_repo` for forks;
    `updated_at` (the last change, such as a push to its head) defaults to `created_at`."""
    url = f"{API}/repos/{full_name}"
    head_name = head_repo or full_name
    base = repository(full_name)
    head = repository(head_name, repo_id=base["id"] + (1 if head_repo else 0))
    if head_repo:
        head["fork"] = True
    return {
        "url": f"{url}/pulls/{number}", "id": 50_000 + number, "node_id": f"PR_{number}",
        "html_url": f"{WEB}/{full_name}/pull/{number}",
        "diff_url": f"{WEB}/{full_name}/pull/{number}.diff",
        "patch_url": f"{WEB}/{full_name}/pull/{number}.patch",
        "issue_url": f"{url}/issues/{number}", "number": number, "state": state,
        "locked": False, "title": "Change things", "user": user(author), "body": None,
        "created_at": created_at, "updated_at": updated_at or created_at,
        "closed_at": None if state == "open" else "2026-11-22T05:00:00Z", "merged_at": None,
        "merge_commit_sha": None, "assignee": None, "assignees": [],
        "requested_reviewers": [], "requested_teams": [], "labels": [], "milestone": None,
        "draft": False, "commits_url": f"{url}/pulls/{number}/commits",
        "review_comments_url": f"{url}/pulls/{number}/comments",
        "review_comment_url": f"{url}/pulls/comments{{/number}}",
        "comments_url": f"{url}/issues/{number}/comments",
        "statuses_url": f"{url}/statuses/{head_sha}",
        "head": {"label": f"{head_name.split('/')[0]}:{head_ref}", "ref": head_ref,
                 "sha": head_sha, "user": user(head_name.split("/")[0]), "repo": head},
        "base": {"label": f"{full_name.split('/')[0]}:main", "ref": "main", "sha": "b" * 40,
                 "user": user(full_name.split("/")[0]), "repo": base},
        "_links": _links(full_name, number), "author_association": "CONTRIBUTOR",
        "auto_merge": None, "active_lock_reason": None, "merged": False, "mergeable": None,
        "rebaseable": None, "mergeable_state": "unknown", "merged_by": None, "comments": 0,
        "review_comments": 0, "maintainer_can_modify": False, "commits": 1, "additions": 1,
        "deletions": 0, "changed_files": 1,
    }


def pull_request_event(action: str, full_name: str, number: int, head_sha: str, *,
                       author: str = "alice", head_repo: str | None = None,
                       installation_id: int = 77, before: str | None = None,
                       created_at: str = PR_OPENED,
                       updated_at: str | None = None) -> dict[str, Any]:
    """A pull_request event; for `synchronize`, `updated_at` is when the push landed."""
    state = "closed" if action == "closed" else "open"
    payload: dict[str, Any] = {
        "action": action, "number": number,
        "pull_request": pull_request(full_name, number, head_sha, author=author,
                                     head_repo=head_repo, state=state, created_at=created_at,
                                     updated_at=updated_at),
        "repository": repository(full_name), "sender": user(author),
        "installation": installation(installation_id),
    }
    if action == "synchronize":
        payload.update({"before": before or "c" * 40, "after": head_sha})
    return checked("pull_request", payload)


def issue_comment(full_name: str, number: int, body: str, *, login: str = "alice",
                  bot: bool = False, action: str = "created", comment_id: int | None = None,
                  installation_id: int = 77, on_pull_request: bool = True,
                  created_at: str = COMMENTED, updated_at: str | None = None) -> dict[str, Any]:
    """A comment on a pull request (or an issue); `created_at` is when it was written."""
    url = f"{API}/repos/{full_name}"
    cid = comment_id or next(_ids)
    issue: dict[str, Any] = {
        "url": f"{url}/issues/{number}", "repository_url": url,
        "labels_url": f"{url}/issues/{number}/labels{{/name}}",
        "comments_url": f"{url}/issues/{number}/comments",
        "events_url": f"{url}/issues/{number}/events",
        "html_url": f"{WEB}/{full_name}/pull/{number}", "id": 90_000 + number,
        "node_id": f"I_{number}", "number": number, "title": "Change things",
        "user": user("alice"), "labels": [], "state": "open", "locked": False,
        "assignee": None, "assignees": [], "milestone": None, "comments": 1,
        "created_at": "2026-11-22T04:00:00Z", "updated_at": "2026-11-22T04:00:00Z",
        "closed_at": None, "author_association": "CONTRIBUTOR", "active_lock_reason": None,
        "body": None, "reactions": _reactions(f"{url}/issues/{number}/reactions"),
        "timeline_url": f"{url}/issues/{number}/timeline", "performed_via_github_app": None,
        "state_reason": None,
    }
    if on_pull_request:
        issue["pull_request"] = {
            "url": f"{url}/pulls/{number}", "html_url": f"{WEB}/{full_name}/pull/{number}",
            "diff_url": f"{WEB}/{full_name}/pull/{number}.diff",
            "patch_url": f"{WEB}/{full_name}/pull/{number}.patch", "merged_at": None}
    payload: dict[str, Any] = {
        "action": action, "issue": issue,
        "comment": comment(full_name, number, cid, body, login, bot=bot, created_at=created_at,
                           updated_at=updated_at),
        "repository": repository(full_name), "sender": user(login, bot=bot),
        "installation": installation(installation_id),
    }
    if action == "edited":
        payload["changes"] = {"body": {"from": "before"}}
    return checked("issue_comment", payload)


def _reactions(url: str) -> dict[str, Any]:
    return {"url": url, "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
            "confused": 0, "heart": 0, "rocket": 0, "eyes": 0}


def comment(full_name: str, number: int, comment_id: int, body: str, login: str, *,
            bot: bool = False, created_at: str = COMMENTED,
            updated_at: str | None = None) -> dict[str, Any]:
    """An issue comment as the REST API and the webhooks show it."""
    url = f"{API}/repos/{full_name}/issues/comments/{comment_id}"
    return {
        "url": url, "html_url": f"{WEB}/{full_name}/pull/{number}#issuecomment-{comment_id}",
        "issue_url": f"{API}/repos/{full_name}/issues/{number}", "id": comment_id,
        "node_id": f"IC_{comment_id}", "user": user(login, bot=bot),
        "created_at": created_at, "updated_at": updated_at or created_at,
        "author_association": "NONE" if bot else "MEMBER", "body": body,
        "reactions": _reactions(f"{url}/reactions"), "performed_via_github_app": None,
    }


def _app() -> dict[str, Any]:
    return {"id": APP_ID, "slug": "jobbot", "node_id": "A_jobbot", "owner": user("acme"),
            "name": "jobbot", "description": "", "external_url": "https://jobbot.example.com",
            "html_url": f"{WEB}/apps/jobbot", "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "permissions": {"checks": "write"},
            "events": ["push"]}


def _suite(full_name: str, sha: str, suite_id: int) -> dict[str, Any]:
    return {
        "id": suite_id, "node_id": f"CS_{suite_id}", "head_branch": "main", "head_sha": sha,
        "status": "completed", "conclusion": "failure",
        "url": f"{API}/repos/{full_name}/check-suites/{suite_id}", "before": "0" * 40,
        "after": sha, "pull_requests": [], "app": _app(),
        "created_at": "2026-11-22T05:00:00Z", "updated_at": "2026-11-22T05:00:00Z",
    }


def check_run(full_name: str, sha: str, check_run_id: int, external_id: str, *,
              action: str = "rerequested", login: str = "alice",
              installation_id: int = 77, identifier: str = "rerun") -> dict[str, Any]:
    url = f"{API}/repos/{full_name}/check-runs/{check_run_id}"
    run: dict[str, Any] = {
        "id": check_run_id, "node_id": f"CR_{check_run_id}", "head_sha": sha,
        "external_id": external_id, "url": url,
        "html_url": f"{WEB}/{full_name}/runs/{check_run_id}",
        "details_url": "http://127.0.0.1/runs/x", "status": "completed",
        "conclusion": "failure", "started_at": "2026-11-22T05:00:00Z",
        "completed_at": "2026-11-22T05:01:00Z",
        "output": {"title": "t", "summary": "s", "text": None, "annotations_count": 0,
                   "annotations_url": f"{url}/annotations"},
        "name": "jobbot: job", "check_suite": _suite(full_name, sha, 7000),
        "app": _app(), "pull_requests": [],
    }
    payload: dict[str, Any] = {
        "action": action, "check_run": run, "repository": repository(full_name),
        "sender": user(login), "installation": installation(installation_id),
    }
    if action == "requested_action":
        payload["requested_action"] = {"identifier": identifier}
    return checked("check_run", payload)


def check_suite(full_name: str, sha: str, *, login: str = "alice",
                installation_id: int = 77) -> dict[str, Any]:
    suite = {**_suite(full_name, sha, 7001), "latest_check_runs_count": 1,
             "check_runs_url": f"{API}/repos/{full_name}/check-suites/7001/check-runs",
             "rerequestable": True, "runs_rerequestable": True,
             "head_commit": {"id": sha, "tree_id": "f" * 40, "message": "m",
                             "timestamp": "2026-11-22T05:00:00Z",
                             "author": {"name": login, "email": f"{login}@example.com"},
                             "committer": {"name": login, "email": f"{login}@example.com"}}}
    return checked("check_suite", {
        "action": "rerequested", "check_suite": suite, "repository": repository(full_name),
        "sender": user(login), "installation": installation(installation_id)})


def _installation_object(installation_id: int, account: str) -> dict[str, Any]:
    return {
        "id": installation_id, "account": user(account), "repository_selection": "selected",
        "access_tokens_url": f"{API}/app/installations/{installation_id}/access_tokens",
        "repositories_url": f"{API}/installation/repositories",
        "html_url": f"{WEB}/settings/installations/{installation_id}", "app_id": APP_ID,
        "app_slug": "jobbot", "target_id": 1, "target_type": "Organization",
        "permissions": {"checks": "write", "contents": "read", "issues": "write",
                        "pull_requests": "write", "metadata": "read"},
        "events": ["push", "pull_request", "issue_comment", "check_run", "check_suite"],
        "created_at": "2026-11-22T05:00:00Z", "updated_at": "2026-11-22T05:00:00Z",
        "single_file_name": None, "has_multiple_single_files": False,
        "single_file_paths": [], "suspended_by": None, "suspended_at": None,
    }


def installation_object(installation_id: int, account: str) -> dict[str, Any]:
    """An installation as `GET /app/installations` lists it (and events carry it)."""
    return _installation_object(installation_id, account)


def _short_repo(full_name: str, repo_id: int) -> dict[str, Any]:
    return {"id": repo_id, "node_id": f"R_{repo_id}", "name": full_name.split("/")[1],
            "full_name": full_name, "private": False}


def installation_event(action: str, installation_id: int, repositories: list[str], *,
                       account: str = "acme") -> dict[str, Any]:
    return checked("installation", {
        "action": action, "installation": _installation_object(installation_id, account),
        "repositories": [_short_repo(n, 100 + i) for i, n in enumerate(repositories)],
        "requester": None, "sender": user("alice"),
    })


def installation_repositories(installation_id: int, added: list[str],
                              removed: list[str]) -> dict[str, Any]:
    return checked("installation_repositories", {
        "action": "added" if added else "removed",
        "installation": _installation_object(installation_id, "acme"),
        "repository_selection": "selected",
        "repositories_added": [_short_repo(n, 200 + i) for i, n in enumerate(added)],
        "repositories_removed": [_short_repo(n, 300 + i) for i, n in enumerate(removed)],
        "requester": None, "sender": user("alice"),
    })


def ping(hook_id: int = 1) -> dict[str, Any]:
    return checked("ping", {
        "zen": "Keep it logically awesome.", "hook_id": hook_id,
        "hook": {"type": "App", "id": hook_id, "name": "web", "active": True,
                 "events": ["push"], "config": {"content_type": "json", "insecure_ssl": "0",
                                                "url": "https://jobbot.example.com/github/webhook"},
                 "updated_at": "2026-11-22T05:00:00Z", "created_at": "2026-11-22T05:00:00Z",
                 "app_id": APP_ID, "deliveries_url": f"{API}/app/hook/deliveries"},
    })

"""The GitHub REST calls jobbot makes, per installation, with GitHub's errors turned into ours."""

from __future__ import annotations

import asyncio
import base64
import importlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import certifi
import httpx
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub, UnauthAuthStrategy
from githubkit.cache import MemCacheStrategy
from githubkit.exception import GitHubException, RateLimitExceeded, RequestError, RequestFailed
from githubkit.response import Response

from core.errors import JobbotError, TemporaryFailure
from core.metrics import GITHUB_ERRORS, GITHUB_REQUESTS

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Transient server-side statuses worth retrying (as Airflow's generic_api_retry).
_RETRYABLE = {409, 500, 502, 503, 504}
# What a build's token may do: read the repository's contents (clone it), nothing else.
BUILD_TOKEN_PERMISSIONS = {"contents": "read"}
# Pages of a list read at most (100 items each).
MAX_PAGES = 100
# Connections kept open to GitHub: about one per worker of the work queue (8 by default).
# httpcore checks every pooled connection on each request, so a larger pool costs CPU.
POOL_CONNECTIONS = 10


class GitHubApiError(JobbotError):
    """GitHub refused a call for good (404, 422, a missing permission): retrying will not help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def split(full_name: str) -> tuple[str, str]:
    owner, _, name = full_name.partition("/")
    if not owner or not name:
        raise GitHubApiError(f"{full_name!r} is not an owner/name repository")
    return owner, name


@asynccontextmanager
async def _errors(what: str, kind: str) -> AsyncIterator[None]:
    """Rate limits and outages become TemporaryFailure(delay); other refusals GitHubApiError."""
    GITHUB_REQUESTS.labels(kind).inc()
    try:
        yield
    except RateLimitExceeded as exc:
        GITHUB_ERRORS.labels(kind, "rate_limit").inc()
        delay = max(exc.retry_after.total_seconds(), 1.0)
        raise TemporaryFailure(f"{what}: GitHub rate limit, retry in {delay:.0f}s", delay) from None
    except RequestFailed as exc:
        status = exc.response.status_code
        GITHUB_ERRORS.labels(kind, str(status)).inc()
        message = _message(exc.response)
        if status in _RETRYABLE:
            raise TemporaryFailure(f"{what}: GitHub answered {status}: {message}") from None
        raise GitHubApiError(f"{what}: GitHub answered {status}: {message}", status) from None
    except (RequestError, httpx.TransportError) as exc:
        GITHUB_ERRORS.labels(kind, "unreachable").inc()
        raise TemporaryFailure(f"{what}: cannot reach GitHub: {exc}") from None
    except GitHubException as exc:
        GITHUB_ERRORS.labels(kind, "error").inc()
        raise GitHubApiError(f"{what}: {exc}") from None


def _message(response: Response[Any]) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", ""))[:200] if isinstance(body, dict) else ""


# What githubkit imports inside the REST functions jobbot calls (`from ..models import ...`
# runs at each function's first call): their response, request-body and error models.
_MODELS_USED = (
    "AppInstallationsInstallationIdAccessTokensPostBody", "BasicError",
    "BranchWithProtection", "CheckRun", "ContentDirectoryItems", "ContentFile",
    "ContentSubmodule", "ContentSymlink", "EventsGetResponse503", "Installation",
    "InstallationRepositoriesGetResponse200", "InstallationToken", "IssueComment",
    "PullRequest",
    "Reaction",
    "ReposOwnerRepoCheckRunsCheckRunIdPatchBodyAnyof0",
    "ReposOwnerRepoCheckRunsCheckRunIdPatchBodyAnyof1", "ReposOwnerRepoCheckRunsPostBodyOneof0",
    "ReposOwnerRepoCheckRunsPostBodyOneof1", "ReposOwnerRepoIssuesCommentsCommentIdPatchBody",
    "ReposOwnerRepoIssuesCommentsCommentIdReactionsPostBody",
    "ReposOwnerRepoIssuesIssueNumberCommentsPostBody", "ValidationError",
)
_NAMESPACES_USED = ("apps", "checks", "issues", "pulls", "reactions", "repos")


def import_what_calls_need() -> None:
    """Import, at start-up, the modules githubkit would import at the first call of each
    endpoint jobbot uses: its models package is large, and an import at the first call holds
    the event loop, stalling every answer under way."""
    github = GitHub("unused")  # never calls: its namespaces hold it only weakly
    namespaces = [getattr(github.rest, name) for name in _NAMESPACES_USED]
    # e.g. githubkit_schemas.v2026_03_10.rest.repos -> githubkit_schemas.v2026_03_10.models
    models = importlib.import_module(
        type(namespaces[0]).__module__.rsplit(".", 2)[0] + ".models")
    for name in _MODELS_USED:
        getattr(models, name)


async def convert_manifest(code: str, api_url: str | None) -> dict[str, Any]:
    """The App GitHub made from a manifest (`POST /app-manifests/{code}/conversions`): its id,
    slug, html_url, pem, webhook_secret and more, as GitHub's JSON. The code is good once, for
    an hour; no credentials are needed."""
    options: dict[str, Any] = {"auto_retry": False, "timeout": 30.0, "http_cache": False}
    if api_url:
        options["base_url"] = api_url
    github = GitHub(UnauthAuthStrategy(), **options)
    async with _errors("converting the App manifest", "create_from_manifest"):
        response = await github.rest.apps.async_create_from_manifest(code)
    body: Any = response.json()
    if not isinstance(body, dict):
        raise GitHubApiError("converting the App manifest: GitHub's answer is not an object")
    return body


class _SharedPool(httpx.AsyncBaseTransport):
    """One connection pool for every GitHub call. githubkit makes an httpx client per call and
    closes it after; with its own transport each call would open (and TLS-handshake) a new
    connection, so the clients get this one, whose pool outlives them."""

    def __init__(self) -> None:
        # One TLS context: loading the CA bundle is slow, so it is loaded once.
        self._pool = httpx.AsyncHTTPTransport(
            verify=ssl.create_default_context(cafile=certifi.where()),
            limits=httpx.Limits(max_connections=POOL_CONNECTIONS,
                                max_keepalive_connections=POOL_CONNECTIONS))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._pool.handle_async_request(request)

    async def aclose(self) -> None:
        """Called by each per-call client: the pool stays open (GitHubClients.aclose ends it)."""

    async def close_pool(self) -> None:
        await self._pool.aclose()


class GitHubClients:
    """One App client (JWT) and one client per installation; githubkit caches each token
    until a minute before it expires, so a client is reused for as long as the process lives."""

    def __init__(self, app_id: str, private_key: str, api_url: str | None = None) -> None:
        self._auth = AppAuthStrategy(app_id, private_key)
        self._pool = _SharedPool()
        # Our own token cache: tokens of one App configuration are never shared with another
        # (githubkit's default cache is process-wide). No HTTP cache: githubkit's (hishel on an
        # in-memory SQLite, reached through a thread per step) never evicts, and each call
        # grows slower with the number made.
        options: dict[str, Any] = {"auto_retry": False, "timeout": 30.0,
                                   "cache_strategy": MemCacheStrategy(), "http_cache": False,
                                   "async_transport": self._pool}
        if api_url:
            options["base_url"] = api_url
        self._app = GitHub(self._auth, **options)
        self._options = options
        self._installations: dict[int, InstallationApi] = {}

    def installation(self, installation_id: int) -> InstallationApi:
        api = self._installations.get(installation_id)
        if api is None:
            auth = AppInstallationAuthStrategy(self._auth.app_id, self._auth.private_key,
                                               installation_id)
            api = InstallationApi(GitHub(auth, **self._options))
            self._installations[installation_id] = api
        return api

    async def installation_ids(self) -> list[int]:
        """Every installation of the App (`GET /app/installations`, all pages)."""
        found: list[int] = []
        for page in range(1, MAX_PAGES + 1):
            async with _errors("the App's installations", "installations"):
                response = await self._app.rest.apps.async_list_installations(
                    per_page=100, page=page)
            batch = response.json()
            found.extend(int(item["id"]) for item in batch
                         if isinstance(item, dict) and isinstance(item.get("id"), int))
            if len(batch) < 100:
                break
        return found

    async def repository_token(self, installation_id: int, repository: str) -> str:
        """A new installation token limited to `repository` and to reading its contents
        (it expires within the hour); never cached, never logged."""
        _, name = split(repository)
        async with _errors(f"a token to read {repository}", "build_token"):
            response = await self._app.rest.apps.async_create_installation_access_token(  # type: ignore[call-overload]
                installation_id, repositories=[name], permissions=BUILD_TOKEN_PERMISSIONS)
        token = response.json().get("token")
        if not isinstance(token, str) or not token:
            raise GitHubApiError(f"a token to read {repository}: GitHub gave none")
        return token

    async def aclose(self) -> None:
        """Close the pooled connections (at shutdown)."""
        await self._pool.close_pool()


class InstallationApi:
    """What jobbot asks of GitHub on behalf of one installation."""

    def __init__(self, github: GitHub[Any]) -> None:
        self.github = github
        # Until a first call has succeeded (and so fetched the installation token), calls
        # go one at a time: githubkit fetches a token for each call that finds none cached.
        self._first_call = asyncio.Lock()
        self._has_token = False

    async def _call(self, kind: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`kind` labels the metrics (a fixed name per method); `what` is for messages."""
        if not self._has_token:
            async with self._first_call:
                if not self._has_token:
                    result = await self._request(kind, what, call)
                    self._has_token = True
                    return result
        return await self._request(kind, what, call)

    async def _request(self, kind: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        async with _errors(what, kind):
            return await call()
        raise AssertionError("unreachable")  # pragma: no cover  (mypy: the context re-raises)

    async def repositories(self) -> list[str]:
        """The repositories this installation may reach (`GET /installation/repositories`)."""
        found: list[str] = []
        for page in range(1, MAX_PAGES + 1):
            response = await self._call("repositories", "the installation's repositories",
                                        lambda p=page: (  # type: ignore[misc]
                self.github.rest.apps.async_list_repos_accessible_to_installation(
                    per_page=100, page=p)))
            body = response.json()
            batch = body.get("repositories") if isinstance(body, dict) else None
            if not isinstance(batch, list):
                raise GitHubApiError("the installation's repositories: no list in the answer")
            found.extend(str(r["full_name"]) for r in batch
                         if isinstance(r, dict) and isinstance(r.get("full_name"), str))
            if len(batch) < 100:
                break
        return found

    async def permission(self, repository: str, login: str) -> str:
        """`admin`, `write`, `read` or `none`; the finer role_name (maintain, triage) if given."""
        owner, name = split(repository)
        try:
            response = await self._call("permission",
                f"permission of {login}",
                lambda: self.github.rest.repos.async_get_collaborator_permission_level(
                    owner, name, login))
        except GitHubApiError as exc:
            if exc.status == 404:  # not a collaborator at all
                return "none"
            raise
        body = response.json()
        role = str(body.get("role_name") or "")
        if role in ("maintain", "triage"):
            return role
        return str(body.get("permission") or "none")

    async def react(self, repository: str, comment_id: int, content: str) -> None:
        owner, name = split(repository)
        await self._call("react", f"reaction {content}", lambda: (
            self.github.rest.reactions.async_create_for_issue_comment(  # type: ignore[call-overload]
                owner, name, comment_id, content=content)))

    async def comments(self, repository: str, number: int) -> list[dict[str, Any]]:
        """Every comment on an issue or pull request, oldest first (all pages)."""
        owner, name = split(repository)
        found: list[dict[str, Any]] = []
        for page in range(1, 100):
            response = await self._call("comments", f"comments of #{number}", lambda p=page: (  # type: ignore[misc]
                self.github.rest.issues.async_list_comments(owner, name, number,
                                                            per_page=100, page=p)))
            batch = response.json()
            found.extend(batch)
            if len(batch) < 100:
                break
        return found

    async def create_comment(self, repository: str, number: int, body: str) -> int:
        owner, name = split(repository)
        response = await self._call("create_comment", f"comment on #{number}", lambda: (
            self.github.rest.issues.async_create_comment(owner, name, number, body=body)))
        return int(response.json()["id"])

    async def update_comment(self, repository: str, comment_id: int, body: str) -> None:
        owner, name = split(repository)
        await self._call("update_comment", f"update comment {comment_id}", lambda: (
            self.github.rest.issues.async_update_comment(owner, name, comment_id, body=body)))

    async def pull(self, repository: str, number: int) -> dict[str, Any]:
        owner, name = split(repository)
        response = await self._call("pull", f"pull request #{number}", lambda: (
            self.github.rest.pulls.async_get(owner, name, number)))
        body: Any = response.json()
        return dict(body)

    async def branch_sha(self, repository: str, branch: str) -> str | None:
        """The sha a branch points at, or None if there is no such branch."""
        owner, name = split(repository)
        try:
            response = await self._call("branch", f"branch {branch[:60]}", lambda: (
                self.github.rest.repos.async_get_branch(owner, name, branch)))
        except GitHubApiError as exc:
            if exc.status == 404:
                return None
            raise
        body = response.json()
        commit = body.get("commit") if isinstance(body, dict) else None
        sha = commit.get("sha") if isinstance(commit, dict) else None
        if not isinstance(sha, str) or not sha:
            raise GitHubApiError(f"branch {branch[:60]}: GitHub gave no commit sha")
        return sha

    async def file(self, repository: str, path: str, ref: str) -> str | None:
        """A file's text at `ref`, or None if it does not exist there."""
        owner, name = split(repository)
        try:
            response = await self._call("file", f"{path} at {ref[:12]}", lambda: (
                self.github.rest.repos.async_get_content(owner, name, path, ref=ref)))
        except GitHubApiError as exc:
            if exc.status == 404:
                return None
            raise
        body = response.json()
        if not isinstance(body, dict) or body.get("type") != "file":
            raise GitHubApiError(f"{path} at {ref[:12]} is not a file")
        if body.get("encoding") != "base64":
            raise GitHubApiError(f"{path} at {ref[:12]}: encoding {body.get('encoding')!r}")
        return base64.b64decode(str(body.get("content", ""))).decode("utf-8")

    async def tarball(self, repository: str, ref: str) -> bytes:
        """The gzipped tarball of the repository at `ref` (GitHub redirects; httpx follows)."""
        owner, name = split(repository)
        response = await self._call("tarball", f"tarball at {ref[:12]}", lambda: (
            self.github.rest.repos.async_download_tarball_archive(owner, name, ref)))
        return response.content

    async def create_check_run(self, repository: str, fields: dict[str, Any]) -> int:
        owner, name = split(repository)
        response = await self._call("create_check_run", f"check run {fields.get('name')}", lambda: (
            self.github.rest.checks.async_create(owner, name, data=fields)))  # type: ignore[call-overload]
        return int(response.json()["id"])

    async def update_check_run(self, repository: str, check_run_id: int,
                               fields: dict[str, Any]) -> None:
        owner, name = split(repository)
        await self._call("update_check_run", f"check run {check_run_id}", lambda: (
            self.github.rest.checks.async_update(  # type: ignore[call-overload]
                owner, name, check_run_id, data=fields)))

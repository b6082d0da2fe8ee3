"""What handlers share: the service, links, GitHub clients, the builder, and common steps
(who is this person, which app is this repository, start a job at a sha, update the PR comment)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from core.builds import Builder, BuildOutcome, BuildRequest
from core.catalog import JobRef
from core.errors import BadInput, ConfigError, NotFound, PermissionDenied
from core.links import Links
from core.models import RepositoryApp, Run, RunState, Source
from core.names import closest
from core.policy import Actor
from core.service import JobService, TriggerResult
from core.spec import AppSpec, parse_app
from github_app import render
from github_app.api import GitHubApiError, GitHubClients, InstallationApi
from github_app.routing import Delivery

logger = logging.getLogger(__name__)
P = ParamSpec("P")
NOTES_KEPT = 5
APP_FILE = "app.yaml"
T = TypeVar("T")


@dataclass(frozen=True)
class PullRequest:
    """The parts of a pull request jobbot acts on."""

    repository: str
    number: int
    head_sha: str
    head_ref: str
    author: str
    fork: bool
    state: str

    @classmethod
    def from_api(cls, repository: str, body: dict[str, Any]) -> PullRequest:
        return cls.from_payload(repository, Delivery("api", "pull_request", None,
                                                     {"pull_request": body}))

    @classmethod
    def from_payload(cls, repository: str, delivery: Delivery) -> PullRequest:
        head_repo = delivery.get("pull_request", "head", "repo", "full_name")
        # A deleted fork has no head repository: treat it as a fork (untrusted).
        fork = head_repo != repository
        return cls(repository, delivery.number("pull_request", "number"),
                   delivery.text("pull_request", "head", "sha"),
                   delivery.get("pull_request", "head", "ref") or "",
                   delivery.get("pull_request", "user", "login") or "",
                   fork, delivery.get("pull_request", "state") or "open")

    def origin(self, installation_id: int, delivery_id: str) -> dict[str, Any]:
        return {"repository": self.repository, "installation_id": installation_id,
                "pull_request": self.number, "fork": self.fork, "delivery": delivery_id}


@dataclass
class Context:
    """Shared by every handler of one GitHub App."""

    service: JobService
    links: Links
    clients: GitHubClients
    builder: Builder | None = None
    # Which app each repository's app.yaml defines (learnt from pushes to its build branches;
    # kept in the store, and loaded again at start-up by load_state).
    repo_apps: dict[str, str] = field(default_factory=dict)
    _comment_locks: dict[tuple[str, int], asyncio.Lock] = field(default_factory=dict)
    # jobbot's comment per pull request, as cached from the store.
    _comment_ids: dict[tuple[str, int], int] = field(default_factory=dict)
    # The latest answers to commands, shown under the runs table (kept in memory only).
    _notes: dict[tuple[str, int], deque[str]] = field(default_factory=dict)

    async def db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def load_state(self) -> None:
        """The repositories' apps, as stored, back into the catalog."""
        for row in await self.db(self.service.store.repository_apps):
            self._serve_stored(row)

    def _serve_stored(self, row: RepositoryApp) -> str | None:
        try:
            app = parse_app(row.app_yaml, f"{row.repository}@{row.sha[:7]}:{APP_FILE}")
        except ConfigError as exc:  # valid when stored; a newer jobbot may be stricter
            logger.warning("the stored app.yaml of %s is no longer valid: %s",
                           row.repository, exc)
            return None
        self.service.catalog.replace(app)
        self.repo_apps[row.repository] = app.app
        return app.app

    async def define_app(self, repository: str, app: AppSpec, sha: str, text: str) -> str | None:
        """Serve the app `repository` defines (its app.yaml at `sha`), remembered across
        restarts; if another repository defines an app of that name, that repository."""
        claimed_by = await self.db(self.service.store.save_repository_app, repository, app.app,
                                   sha, text)
        if claimed_by is None:
            self.service.catalog.replace(app)
            self.repo_apps[repository] = app.app
        return claimed_by

    def api(self, delivery: Delivery) -> InstallationApi:
        return self.clients.installation(delivery.installation_id)

    async def actor(self, api: InstallationApi, repository: str, login: str) -> Actor:
        """The person, with their permission on the repository asked of GitHub right now."""
        permission = await api.permission(repository, login)
        return Actor(id=f"github:{login}", source=Source.GITHUB, display=login,
                     github_login=login, github_permission=permission)

    async def repository_app(self, api: InstallationApi, delivery: Delivery) -> AppSpec:
        """The app of the delivery's repository, the only one its pull requests, pushes and
        check runs reach: the app its app.yaml defines (as learnt from pushes, stored by any
        replica, or read from its default branch now); failing that, the server's own
        app.yaml while it is the one app jobbot serves and no repository defines one.
        BadInput saying why when the repository has none."""
        repository = delivery.repository
        name = self.repo_apps.get(repository)
        if name is None:
            row = await self.db(self.service.store.repository_app, repository)
            name = self._serve_stored(row) if row is not None else None
        if name is None:
            name = await self._default_branch_app(api, delivery)
        if name is not None:
            return self.service.catalog.app(name)
        server = await self._only_the_server_app()
        if server is not None:
            return server
        branch = delivery.get("repository", "default_branch")
        where = f"no {APP_FILE} on {branch}" if isinstance(branch, str) else f"no {APP_FILE}"
        raise BadInput(f"{repository} has no app of its own ({where}), so it reaches no jobs "
                       f"(the server's {APP_FILE} serves every repository only while it is "
                       f"the one app jobbot serves)")

    async def _default_branch_app(self, api: InstallationApi, delivery: Delivery) -> str | None:
        """The app the repository's app.yaml on its default branch defines, now served; None
        if it has none. Its app is otherwise learnt from pushes: this covers a repository
        not pushed to since jobbot was installed."""
        repository = delivery.repository
        branch = delivery.get("repository", "default_branch")
        if not isinstance(branch, str) or not branch:
            return None
        sha = await api.branch_sha(repository, branch)
        text = await api.file(repository, APP_FILE, sha) if sha is not None else None
        if sha is None or text is None:
            return None
        try:
            app = parse_app(text, f"{repository}@{sha[:7]}:{APP_FILE}")
        except ConfigError as exc:
            raise BadInput(f"the {APP_FILE} of {repository} on {branch} is invalid "
                           f"({len(exc.problems)} problems): nothing runs until it is "
                           f"fixed") from None
        claimed_by = await self.define_app(repository, app, sha, text)
        if claimed_by is not None:
            raise BadInput(f"the {APP_FILE} of {repository} defines the app {app.app}, which "
                           f"jobbot serves from {claimed_by}: nothing runs here")
        return app.app

    async def _only_the_server_app(self) -> AppSpec | None:
        """The server's own app, while it is the one app served and no repository defines
        one (as stored by any replica): then every repository jobbot serves drives it."""
        apps = list(self.service.catalog.apps.values())
        if len(apps) != 1 or self.repo_apps:
            return None
        stored = await self.db(self.service.store.repository_apps)
        for row in stored:
            self._serve_stored(row)
        return None if stored else apps[0]

    @staticmethod
    def job_of(app: AppSpec, repository: str, name: str) -> JobRef:
        """`job`, or `app/job` naming the repository's app: never a job of another app."""
        app_name, slash, job_name = name.partition("/")
        if not slash:
            job_name = app_name
        elif app_name != app.app:
            raise PermissionDenied(
                f"{name[:130]!r} is not a job of {repository}: its pull requests reach only "
                f"the jobs of its app {app.app}")
        for job in app.jobs:
            if job.name == job_name:
                return JobRef(app, job)
        raise NotFound(f"no job {job_name[:64]!r}", closest(job_name, [j.name for j in app.jobs]))

    async def build(self, app: AppSpec, build_name: str, repository: str, sha: str, ref: str,
                    actor: Actor, key: str, origin: dict[str, Any]) -> BuildOutcome:
        """Build (recorded as a run named after the build); a finished build of the sha is
        reused."""
        if self.builder is None:
            return BuildOutcome(RunState.FAILED, None, "no builder is configured")
        spec = app.build(build_name)
        started = await self.service.record_build(app.app, build_name, actor, sha=sha, ref=ref,
                                                  idempotency_key=key, origin=origin)
        run = started.run
        if not started.created:
            run = await self.service.wait(run.id)
            return BuildOutcome(run.run_state, run.image, run.reason)
        await self.service.run_started(run.id, external_id=self.builder.name)
        outcome = await self.builder.build(BuildRequest(app, spec, sha, ref, repository,
                                                        actor=actor.id, origin=origin))
        await self.service.finish_build(run.id, outcome.state, image=outcome.image,
                                        reason=outcome.reason)
        return outcome

    async def start(self, target: JobRef, actor: Actor, *, repository: str, sha: str, ref: str,
                    key: str, origin: dict[str, Any], overrides: dict[str, str] | None = None,
                    image: str | None = None) -> TriggerResult:
        """Run a job at a sha; jobs with image_from_build get their build (made if needed).
        Overrides the job refuses are refused before anything is built."""
        await self.service.check_overrides(target, overrides)
        if target.job.image_from_build and image is None:
            outcome = await self.build(target.app, target.job.image_from_build, repository, sha,
                                       ref, actor, f"{key}:build", origin)
            if outcome.state is not RunState.SUCCEEDED:
                raise NotFound(f"build {target.job.image_from_build} of {sha[:7]} "
                               f"{outcome.state.value}: {outcome.reason or 'no image'}")
            image = outcome.image
        return await self.service.trigger(target.key, actor, ref=ref, sha=sha, image=image,
                                          overrides=overrides, idempotency_key=key,
                                          origin=origin)

    async def pr_runs(self, repository: str, number: int) -> list[Run]:
        return await self.db(self.service.store.runs_for_pull_request, repository, number)

    async def refresh_pr_comment(self, api: InstallationApi, repository: str, number: int,
                                 notes: list[str] | None = None) -> None:
        """Create or update the one jobbot comment of the pull request (found by its marker)."""
        key = (repository, number)
        lock = self._comment_locks.setdefault(key, asyncio.Lock())
        async with lock:
            kept = self._notes.setdefault(key, deque(maxlen=NOTES_KEPT))
            kept.extend(notes or ())
            runs = await self.pr_runs(repository, number)
            body = render.runs_comment(runs, self.links.run_url, list(kept))
            comment_id = self._comment_ids.get(key)
            if comment_id is None:
                comment_id = await self.db(self.service.store.pull_request_comment,
                                           repository, number)
            if comment_id is None:
                # Made before jobbot kept it (or the store was reset): find it by its marker.
                for comment in await api.comments(repository, number):
                    if render.RUNS_MARKER in str(comment.get("body") or ""):
                        comment_id = int(comment["id"])
                        break
            if comment_id is None:
                comment_id = await api.create_comment(repository, number, body)
            else:
                try:
                    await api.update_comment(repository, comment_id, body)
                except GitHubApiError as exc:
                    if exc.status != 404:
                        raise
                    # Someone deleted it: start a new one.
                    comment_id = await api.create_comment(repository, number, body)
            if self._comment_ids.get(key) != comment_id:
                await self.db(self.service.store.save_pull_request_comment, repository, number,
                              comment_id)
                self._comment_ids[key] = comment_id

    async def help_once(self, api: InstallationApi, repository: str, number: int,
                        unknown: str) -> bool:
        """Post the command help unless this pull request already has it."""
        for comment in await api.comments(repository, number):
            if render.HELP_MARKER in str(comment.get("body") or ""):
                return False
        await api.create_comment(repository, number, render.help_comment(unknown))
        return True

    async def approved(self, pr: PullRequest) -> bool:
        """Trusted to run: not a fork, or this very head sha was vouched for with /ok-to-test."""
        if not pr.fork:
            return True
        return await self.db(self.service.store.approval, pr.repository, pr.head_sha) is not None

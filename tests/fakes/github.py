"""A fake GitHub REST API on 127.0.0.1 speaking GitHub's wire format (JWT app auth,
installation tokens, branches, contents, tarballs, reactions, comments, check runs,
permissions, pulls, the App manifest flow), recording every call; failures (rate limits,
outages) can be queued per route. It answers at `/` and, as GitHub Enterprise Server does,
under `/api/v3`."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import secrets
import tarfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from markdown_it import MarkdownIt
from yarl import URL

from tests.fakes import github_payloads as shapes


def private_key_pem() -> tuple[str, str]:
    """A fresh RSA key for the App: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


# GitHub's Markdown as far as jobbot's text needs it: CommonMark with tables and
# strikethrough, raw HTML passed through (GitHub sanitizes it afterwards, but an <img> or a
# link still shows).
_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_CODE_HTML = re.compile(r"<(code|pre)[^>]*>.*?</\1>", re.S)
# A mention as GitHub links it: @login or @org/team after a non-word character.
_MENTION = re.compile(r"(?<![\w`])@[A-Za-z0-9][A-Za-z0-9-]*(?:/[A-Za-z0-9_.-]+)?")


def render_markdown(text: str) -> str:
    """A comment's or check run's Markdown as GitHub renders it (HTML)."""
    return _MARKDOWN.render(text)


def mentions(html: str) -> list[str]:
    """The people and teams a rendered text would notify (code never notifies)."""
    return _MENTION.findall(_CODE_HTML.sub("", html))


def tarball(top: str, files: dict[str, str]) -> bytes:
    """A gzipped tarball laid out as GitHub's (`<owner>-<repo>-<sha>/` holding the files)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(top)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        archive.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# What an installation token needs for each REST call jobbot's kind of App makes, after
# GitHub's REST reference ("Fine-grained access"); checked once an App made from a manifest
# holds exactly the permissions its manifest asked for.
_NEEDS = [
    ("GET", r"/installation/repositories", "metadata", "read"),
    ("GET", r"/repos/[^/]+/[^/]+/collaborators/[^/]+/permission", "metadata", "read"),
    ("POST", r"/repos/[^/]+/[^/]+/issues/comments/\d+/reactions", "issues", "write"),
    ("GET", r"/repos/[^/]+/[^/]+/issues/\d+/comments", "issues", "read"),
    ("POST", r"/repos/[^/]+/[^/]+/issues/\d+/comments", "issues", "write"),
    ("PATCH", r"/repos/[^/]+/[^/]+/issues/comments/\d+", "issues", "write"),
    ("GET", r"/repos/[^/]+/[^/]+/pulls/\d+", "pull_requests", "read"),
    ("GET", r"/repos/[^/]+/[^/]+/branches/.+", "contents", "read"),
    ("GET", r"/repos/[^/]+/[^/]+/contents/.+", "contents", "read"),
    ("GET", r"/repos/[^/]+/[^/]+/tarball/.+", "contents", "read"),
    ("POST", r"/repos/[^/]+/[^/]+/check-runs", "checks", "write"),
    ("PATCH", r"/repos/[^/]+/[^/]+/check-runs/\d+", "checks", "write"),
]
_LEVELS = ("none", "read", "write", "admin")
# The events an App may subscribe to that jobbot's kind of App could ask for, with the
# permission each needs (GitHub refuses a manifest asking for an event without it).
_EVENT_NEEDS = {"check_run": "checks", "check_suite": "checks", "issue_comment": "issues",
                "issues": "issues", "pull_request": "pull_requests",
                "pull_request_review": "pull_requests", "push": "contents",
                "create": "contents", "delete": "contents", "release": "contents",
                "status": "statuses", "workflow_run": "actions"}
_PREFIX = "/api/v3"


@dataclass
class MadeApp:
    """An App made from a manifest: who owns it, what it asked for, and its credentials."""

    owner: str
    manifest: dict[str, Any]
    state: str
    code: str
    app_id: int
    slug: str
    private_key: str
    public_key: str
    webhook_secret: str
    converted: bool = False


@dataclass
class Call:
    method: str
    path: str
    body: Any
    # When the call arrived (time.time()), for benchmarks; not part of a call's equality.
    at: float = field(default_factory=time.time, compare=False)
    # The path as sent (with GHES's /api/v3 prefix, if any).
    sent_to: str = field(default="", compare=False)


@dataclass(frozen=True)
class IssuedToken:
    """An installation token the fake issued, and what it was limited to (None: everything
    the installation may do, as GitHub gives when the request names nothing)."""

    token: str
    installation_id: int
    repositories: tuple[str, ...] | None
    permissions: dict[str, str] | None


@dataclass
class Failure:
    pattern: re.Pattern[str]
    status: int
    headers: dict[str, str]
    times: int


@dataclass
class FakeGitHub:
    """State of the fake: what tests set up, and what jobbot did to it."""

    app_id: int
    public_key: str
    files: dict[tuple[str, str, str], str] = field(default_factory=dict)
    tarballs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    permissions: dict[tuple[str, str], str] = field(default_factory=dict)
    pulls: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    branches: dict[tuple[str, str], str] = field(default_factory=dict)
    comments: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    reactions: list[tuple[str, int, str]] = field(default_factory=list)
    check_runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    # The App's installations and the repositories each reaches ("owner/name"), as
    # `GET /app/installations` and `GET /installation/repositories` list them.
    installations: dict[int, list[str]] = field(default_factory=dict)
    issued: list[IssuedToken] = field(default_factory=list)
    tokens_issued: int = 0
    failures: list[Failure] = field(default_factory=list)
    # Apps made from manifests (the browser's form posts), in order.
    made: list[MadeApp] = field(default_factory=list)
    # The installation tokens' permissions; None: every call is allowed (tests that do not
    # go through the manifest flow). Set to the manifest's once its App is converted.
    granted: dict[str, str] | None = None
    url: str = ""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5001))
    _tokens: dict[str, IssuedToken] = field(default_factory=dict)

    # -- set-up ---------------------------------------------------------------------------

    def add_file(self, repository: str, sha: str, path: str, text: str) -> None:
        self.files[(repository, sha, path)] = text

    def add_tree(self, repository: str, sha: str, files: dict[str, str]) -> None:
        for path, text in files.items():
            self.add_file(repository, sha, path, text)
        top = f"{repository.replace('/', '-')}-{sha[:7]}"
        self.tarballs[(repository, sha)] = tarball(top, files)

    def add_branch(self, repository: str, branch: str, sha: str) -> None:
        self.branches[(repository, branch)] = sha

    def add_pull(self, repository: str, number: int, head_sha: str, *, author: str = "alice",
                 head_repo: str | None = None) -> None:
        self.pulls[(repository, number)] = shapes.pull_request(
            repository, number, head_sha, author=author, head_repo=head_repo)

    def fail(self, method: str, path_regex: str, status: int, *, times: int = 1,
             headers: dict[str, str] | None = None) -> None:
        """The next `times` matching calls get `status` (e.g. 429 with Retry-After)."""
        self.failures.append(Failure(re.compile(f"^{method} {path_regex}$"), status,
                                     headers or {}, times))

    # -- what happened --------------------------------------------------------------------

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if c.method == method and pattern.fullmatch(c.path)]

    def checks_for(self, name: str) -> list[dict[str, Any]]:
        return [c for c in self.check_runs.values() if c["name"] == name]

    # -- the server -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        # The web pages a browser posts an App manifest to (github.com, or a GHES host).
        r.add_post("/settings/apps/new", self._new_app)
        r.add_post("/organizations/{org}/settings/apps/new", self._new_app)
        r.add_get("/_codeload/{owner}/{repo}/legacy.tar.gz/{ref}", self._codeload)
        base = "/repos/{owner}/{repo}"
        for prefix in ("", _PREFIX):
            r.add_post(prefix + "/app-manifests/{code}/conversions", self._conversion)
            r.add_post(prefix + "/app/installations/{id}/access_tokens", self._token)
            r.add_get(prefix + "/app/installations", self._installations)
            r.add_get(prefix + "/installation/repositories", self._installation_repositories)
            r.add_get(prefix + base + "/contents/{path:.+}", self._contents)
            r.add_get(prefix + base + "/tarball/{ref}", self._tarball)
            r.add_post(prefix + base + "/issues/comments/{id}/reactions", self._reaction)
            r.add_get(prefix + base + "/issues/{number}/comments", self._list_comments)
            r.add_post(prefix + base + "/issues/{number}/comments", self._create_comment)
            r.add_patch(prefix + base + "/issues/comments/{id}", self._update_comment)
            r.add_post(prefix + base + "/check-runs", self._create_check)
            r.add_patch(prefix + base + "/check-runs/{id}", self._update_check)
            r.add_get(prefix + base + "/collaborators/{user}/permission", self._permission)
            r.add_get(prefix + base + "/pulls/{number}", self._pull)
            r.add_get(prefix + base + "/branches/{branch:.+}", self._branch)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # Calls are recorded by their path at the API's root, as GitHub's reference names them.
        path = request.path.removeprefix(_PREFIX) if request.path.startswith(
            _PREFIX + "/") else request.path
        if request.content_type == "application/json" and request.can_read_body:
            body: Any = await request.json()
        else:
            body = dict(await request.post()) if request.can_read_body else None
        self.calls.append(Call(request.method, path, body, sent_to=request.path))
        key = f"{request.method} {path}"
        for failure in self.failures:
            if failure.times > 0 and failure.pattern.match(key):
                failure.times -= 1
                return _error(failure.status, "API rate limit exceeded" if failure.status in
                              (403, 429) else "Server Error", headers=failure.headers)
        if path.startswith(("/_codeload/", "/settings/", "/organizations/", "/app-manifests/")):
            # A signed download URL, the browser's pages, a manifest code: no token needed.
            return await handler(request)
        auth = request.headers.get("Authorization", "")
        if path.startswith("/app/"):
            if not auth.startswith("Bearer ") or not self._jwt_ok(auth[7:]):
                return _error(401, "A JSON web token could not be decoded")
        elif not auth.startswith("token ") or auth[6:] not in self._tokens:
            return _error(401, "Bad credentials")
        elif not self._permitted(request.method, path):
            return _error(403, "Resource not accessible by integration")
        elif not self._reaches(self._tokens[auth[6:]], path):
            return _error(404, "Not Found")  # GitHub hides what a token may not see
        result: web.StreamResponse = await handler(request)
        return result

    def _permitted(self, method: str, path: str) -> bool:
        if self.granted is None:
            return True
        for verb, pattern, name, level in _NEEDS:
            if verb == method and re.fullmatch(pattern, path):
                have = self.granted.get(name, "none")
                return have in _LEVELS and _LEVELS.index(have) >= _LEVELS.index(level)
        return False  # a call this fake does not know the permission of

    # -- the App manifest flow --------------------------------------------------------------

    async def _new_app(self, request: web.Request) -> web.StreamResponse:
        """The browser posts the manifest form; GitHub (once its user confirms, which the
        fake takes as given) makes the App and sends the browser to redirect_url."""
        form = await request.post()
        try:
            manifest = json.loads(str(form.get("manifest", "")))
        except ValueError:
            return web.Response(status=422, text="Invalid GitHub App configuration: manifest "
                                "is not JSON")
        problem = _manifest_problem(manifest)
        if problem:
            return web.Response(status=422, text=f"Invalid GitHub App configuration: {problem}")
        private, public = private_key_pem()
        app_id = 90000 + len(self.made) + 1
        slug = re.sub(r"[^a-z0-9]+", "-", manifest["name"].lower()).strip("-")
        made = MadeApp(owner=request.match_info.get("org", "alice"), manifest=manifest,
                       state=request.query.get("state", ""), code=secrets.token_hex(20),
                       app_id=app_id, slug=slug, private_key=private, public_key=public,
                       webhook_secret=secrets.token_hex(20))
        self.made.append(made)
        back = URL(manifest["redirect_url"]).update_query(code=made.code, state=made.state)
        raise web.HTTPFound(str(back))

    async def _conversion(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        made = next((m for m in self.made if m.code == code and not m.converted), None)
        if made is None:
            return _error(404, "Not Found")
        made.converted = True
        # From now on the fake is this App: its JWTs, its permissions.
        self.app_id, self.public_key = made.app_id, made.public_key
        self.granted = dict(made.manifest.get("default_permissions") or {})
        owner = shapes.user(made.owner)
        if made.owner != "alice":
            owner["type"] = "Organization"
        base = self.url
        return web.json_response({
            "id": made.app_id, "slug": made.slug, "node_id": f"A_{made.app_id}",
            "client_id": f"Iv23li{made.app_id}", "owner": owner,
            "name": made.manifest["name"], "description": made.manifest.get("description"),
            "external_url": made.manifest["url"], "html_url": f"{base}/apps/{made.slug}",
            "created_at": "2026-12-07T01:00:00Z", "updated_at": "2026-12-07T01:00:00Z",
            "permissions": self.granted, "events": made.manifest.get("default_events", []),
            "installations_count": 0, "client_secret": secrets.token_hex(20),
            "webhook_secret": made.webhook_secret, "pem": made.private_key,
        }, status=201)

    def _jwt_ok(self, token: str) -> bool:
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"])
        except jwt.PyJWTError:
            return False
        return str(claims.get("iss")) == str(self.app_id)

    @staticmethod
    def _reaches(issued: IssuedToken, path: str) -> bool:
        """A token limited to repositories reaches only theirs, and only to read contents."""
        if issued.repositories is None:
            return True
        parts = path.split("/")
        if len(parts) < 4 or parts[1] != "repos":
            return path == "/installation/repositories"
        return parts[3] in issued.repositories and (
            parts[4] if len(parts) > 4 else "") in ("contents", "tarball", "")

    async def _token(self, request: web.Request) -> web.Response:
        installation_id = int(request.match_info["id"])
        if self.installations and installation_id not in self.installations:
            return _error(404, "Not Found")
        # The middleware read the body already; aiohttp keeps it for a second read.
        body = await request.json() if request.body_exists else {}
        body = body if isinstance(body, dict) else {}
        repositories = body.get("repositories")
        permissions = body.get("permissions")
        self.tokens_issued += 1
        token = f"ghs_fake{self.tokens_issued:032d}"
        issued = IssuedToken(token, installation_id,
                             tuple(repositories) if isinstance(repositories, list) else None,
                             dict(permissions) if isinstance(permissions, dict) else None)
        self._tokens[token] = issued
        self.issued.append(issued)
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer: dict[str, Any] = {
            "token": token, "expires_at": expires,
            "repository_selection": "selected" if issued.repositories else "all",
            "permissions": issued.permissions or {
                "checks": "write", "contents": "read", "issues": "write",
                "pull_requests": "write", "metadata": "read"},
        }
        if issued.repositories is not None:
            owners = {r.split("/")[0] for r in self.installations.get(installation_id, [])}
            owner = next(iter(owners), "acme")
            answer["repositories"] = [shapes.repository(f"{owner}/{name}")
                                      for name in issued.repositories]
        return web.json_response(answer, status=201)

    async def _installations(self, request: web.Request) -> web.Response:
        per_page = int(request.query.get("per_page", "30"))
        page = int(request.query.get("page", "1"))
        found = [shapes.installation_object(i, (names[0].split("/")[0] if names else "acme"))
                 for i, names in sorted(self.installations.items())]
        return web.json_response(found[(page - 1) * per_page: page * per_page])

    async def _installation_repositories(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        issued = self._tokens[auth[6:]]
        names = self.installations.get(issued.installation_id, [])
        if issued.repositories is not None:
            names = [n for n in names if n.split("/")[1] in issued.repositories]
        per_page = int(request.query.get("per_page", "30"))
        page = int(request.query.get("page", "1"))
        return web.json_response({
            "total_count": len(names), "repository_selection": "selected",
            "repositories": [shapes.repository(n)
                             for n in names[(page - 1) * per_page: page * per_page]]})

    def _repo(self, request: web.Request) -> str:
        return f"{request.match_info['owner']}/{request.match_info['repo']}"

    async def _contents(self, request: web.Request) -> web.Response:
        repo, path = self._repo(request), request.match_info["path"]
        ref = request.query.get("ref", "")
        text = self.files.get((repo, ref, path))
        if text is None:
            return _error(404, "Not Found")
        data = text.encode()
        url = f"{shapes.API}/repos/{repo}/contents/{path}?ref={ref}"
        return web.json_response({
            "type": "file", "encoding": "base64", "size": len(data), "name": path.split("/")[-1],
            "path": path, "content": base64.encodebytes(data).decode(), "sha": "d" * 40,
            "url": url, "git_url": f"{shapes.API}/repos/{repo}/git/blobs/{'d' * 40}",
            "html_url": f"{shapes.WEB}/{repo}/blob/{ref}/{path}",
            "download_url": f"https://raw.githubusercontent.com/{repo}/{ref}/{path}",
            "_links": {"self": url, "git": f"{shapes.API}/repos/{repo}/git/blobs/{'d' * 40}",
                       "html": f"{shapes.WEB}/{repo}/blob/{ref}/{path}"},
        })

    async def _tarball(self, request: web.Request) -> web.Response:
        repo, ref = self._repo(request), request.match_info["ref"]
        if (repo, ref) not in self.tarballs:
            return _error(404, "Not Found")
        raise web.HTTPFound(f"{self.url}/_codeload/{repo}/legacy.tar.gz/{ref}")

    async def _codeload(self, request: web.Request) -> web.Response:
        data = self.tarballs.get((self._repo(request), request.match_info["ref"]))
        if data is None:
            return _error(404, "Not Found")
        return web.Response(body=data, content_type="application/x-gzip")

    async def _reaction(self, request: web.Request) -> web.Response:
        body = await request.json()
        comment_id = int(request.match_info["id"])
        reaction = (self._repo(request), comment_id, body["content"])
        # GitHub answers 200 with the existing reaction when the app already reacted so.
        status = 200 if reaction in self.reactions else 201
        if status == 201:
            self.reactions.append(reaction)
        return web.json_response({"id": next(self._ids), "node_id": "REA_1",
                                  "user": shapes.user("jobbot[bot]", bot=True),
                                  "content": body["content"],
                                  "created_at": "2026-11-22T05:00:00Z"}, status=status)

    async def _list_comments(self, request: web.Request) -> web.Response:
        key = (self._repo(request), int(request.match_info["number"]))
        per_page = int(request.query.get("per_page", "30"))
        page = int(request.query.get("page", "1"))
        found = self.comments.get(key, [])
        return web.json_response(found[(page - 1) * per_page: page * per_page])

    async def _create_comment(self, request: web.Request) -> web.Response:
        repo, number = self._repo(request), int(request.match_info["number"])
        body = await request.json()
        made = shapes.comment(repo, number, next(self._ids), body["body"], "jobbot[bot]",
                              bot=True)
        self.comments.setdefault((repo, number), []).append(made)
        return web.json_response(made, status=201)

    async def _update_comment(self, request: web.Request) -> web.Response:
        comment_id = int(request.match_info["id"])
        body = await request.json()
        for comments in self.comments.values():
            for found in comments:
                if found["id"] == comment_id:
                    found["body"] = body["body"]
                    return web.json_response(found)
        return _error(404, "Not Found")

    async def _create_check(self, request: web.Request) -> web.Response:
        body = await request.json()
        check_id = next(self._ids)
        check = {"id": check_id, "history": [body.get("status")], **body}
        self.check_runs[check_id] = check
        return web.json_response(_check_shape(self._repo(request), check), status=201)

    async def _update_check(self, request: web.Request) -> web.Response:
        check = self.check_runs.get(int(request.match_info["id"]))
        if check is None:
            return _error(404, "Not Found")
        body = await request.json()
        check.update(body)
        check["history"].append(body.get("status"))
        return web.json_response(_check_shape(self._repo(request), check))

    async def _permission(self, request: web.Request) -> web.Response:
        login = request.match_info["user"]
        permission = self.permissions.get((self._repo(request), login))
        if permission is None:
            return _error(404, f"{login} is not a user")
        legacy = {"maintain": "write", "triage": "read"}.get(permission, permission)
        return web.json_response({"permission": legacy, "role_name": permission,
                                  "user": {**shapes.user(login), "permissions": {}}})

    async def _pull(self, request: web.Request) -> web.Response:
        pull = self.pulls.get((self._repo(request), int(request.match_info["number"])))
        return web.json_response(pull) if pull else _error(404, "Not Found")


    async def _branch(self, request: web.Request) -> web.Response:
        repo, branch = self._repo(request), request.match_info["branch"]
        sha = self.branches.get((repo, branch))
        if sha is None:
            return _error(404, "Branch not found")
        return web.json_response(shapes.branch(repo, branch, sha))


def _manifest_problem(manifest: Any) -> str:
    """What GitHub would refuse in a manifest, or ''."""
    if not isinstance(manifest, dict):
        return "manifest is not an object"
    for key in ("name", "url", "redirect_url"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            return f"{key} is missing"
    hook = manifest.get("hook_attributes")
    if not isinstance(hook, dict) or not isinstance(hook.get("url"), str):
        return "hook_attributes.url is missing"
    permissions = manifest.get("default_permissions") or {}
    for event in manifest.get("default_events") or []:
        needed = _EVENT_NEEDS.get(event)
        if needed is None:
            return f"Default events unsupported: {event}"
        if permissions.get(needed, "none") == "none":
            return f"Default events are not supported by permissions: {event}"
    return ""


def _check_shape(repo: str, check: dict[str, Any]) -> dict[str, Any]:
    url = f"{shapes.API}/repos/{repo}/check-runs/{check['id']}"
    return {"id": check["id"], "node_id": f"CR_{check['id']}", "head_sha": check["head_sha"],
            "external_id": check.get("external_id"), "url": url,
            "html_url": f"{shapes.WEB}/{repo}/runs/{check['id']}",
            "details_url": check.get("details_url"), "status": check.get("status", "queued"),
            "conclusion": check.get("conclusion"), "started_at": "2026-11-22T05:00:00Z",
            "completed_at": None, "name": check["name"], "check_suite": {"id": 7000},
            "app": None, "pull_requests": [],
            "output": {"title": None, "summary": None, "text": None, "annotations_count": 0,
                       "annotations_url": f"{url}/annotations"}}


def _error(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    body = {"message": message,
            "documentation_url": "https://docs.github.com/rest", "status": str(status)}
    return web.json_response(body, status=status, headers=headers)

"""After start-up, no call jobbot makes to GitHub imports a module (an import holds the
event loop; githubkit's models package alone takes ~150 ms). Checked in a fresh process,
each endpoint called once against the fake GitHub."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, sys
from aiohttp.test_utils import TestServer
from github_app.api import GitHubClients, import_what_calls_need
from tests.fakes.github import FakeGitHub, private_key_pem

REPO, SHA = "acme/shop", "a" * 40


async def main() -> None:
    private, public = private_key_pem()
    fake = FakeGitHub(1, public)
    fake.add_tree(REPO, SHA, {"app.yaml": "app: shop"})
    fake.add_pull(REPO, 7, SHA)
    fake.permissions[(REPO, "alice")] = "write"
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    clients = GitHubClients("1", private, fake.url)
    api = clients.installation(1)
    if sys.argv[1] == "warm":
        import_what_calls_need()
    await api.permission(REPO, "bob")  # a 404 first: its error model too
    before = set(sys.modules)
    assert await api.permission(REPO, "alice") == "write"
    comment = await api.create_comment(REPO, 7, "hello")
    await api.react(REPO, comment, "+1")
    assert [c["id"] for c in await api.comments(REPO, 7)] == [comment]
    await api.update_comment(REPO, comment, "hello again")
    assert (await api.pull(REPO, 7))["head"]["sha"] == SHA
    assert await api.file(REPO, "app.yaml", SHA) == "app: shop"
    fake.add_branch(REPO, "main", SHA)
    assert await api.branch_sha(REPO, "main") == SHA
    assert await api.branch_sha(REPO, "gone") is None
    assert await api.tarball(REPO, SHA)
    check = await api.create_check_run(REPO, {"name": "jobbot", "head_sha": SHA,
                                              "status": "queued"})
    await api.update_check_run(REPO, check, {"status": "completed",
                                             "conclusion": "success"})
    print(sorted(m for m in set(sys.modules) - before if m.startswith("githubkit")))
    await clients.aclose()
    await server.close()

asyncio.run(main())
"""


def imported_by_calls(mode: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, text=True,
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    found: list[str] = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    return found


def test_calls_import_nothing_after_start_up() -> None:
    assert imported_by_calls("warm") == []


def test_without_the_start_up_imports_the_first_calls_import_githubkit_modules() -> None:
    # The check above can fail: without import_what_calls_need, calls import model groups.
    assert any(".models" in name for name in imported_by_calls("cold"))

"""GitHub App parts that need no server: commands, signatures, settings, rendering, builds."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.parse
from html import escape as html_escape
from pathlib import Path

import pytest

from core.builds import BuildRequest
from core.builds_local import LocalBuilder
from core.errors import JobbotError
from core.masking import Masker
from core.models import Run, RunState
from core.spec import AppSpec, BuildSpec
from github_app import commands, markdown, render
from github_app.app import _payload
from github_app.config import GitHubConfig
from github_app.signature import sign, verify
from tests.fakes import github_payloads as payloads
from tests.fakes.github import mentions, render_markdown, tarball


@pytest.mark.parametrize(("body", "name", "args", "overrides"), [
    ("/run migrate", "run", ("migrate",), {}),
    ("/run migrate A=1 B=x=y\nthanks", "run", ("migrate",), {"A": "1", "B": "x=y"}),
    ("\n\n  /rerun  ", "rerun", (), {}),
    ("/rerun tests", "rerun", ("tests",), {}),
    ("/cancel", "cancel", (), {}),
    ("/JOBS", "jobs", (), {}),
    ("/ok-to-test", "ok-to-test", (), {}),
    ("/ok-to-test 1a2b3c4", "ok-to-test", ("1a2b3c4",), {}),
    ("> quoted\n/run x", "run", ("x",), {}),
])
def test_commands_are_parsed(body: str, name: str, args: tuple[str, ...],
                             overrides: dict[str, str]) -> None:
    command = commands.parse(body)
    assert command is not None
    assert (command.name, command.args, command.overrides, command.problem) == (
        name, args, overrides, None)


@pytest.mark.parametrize("body", [
    "", "looks good", "please /run x", "```\n/run x\n```", "~~~\n/run x\n~~~",
    "> /run x", "    /run x", "text first\n/run x",
])
def test_no_command_outside_the_first_visible_line(body: str) -> None:
    assert commands.parse(body) is None


@pytest.mark.parametrize(("body", "problem"), [
    ("/run", "say which job"), ("/run x NOPE", "bad override 'NOPE': use KEY=VALUE"),
    ("/rerun a b", "at most one job"), ("/jobs all", "takes no arguments"),
    ("/ok-to-test 1a2b3c4 5d6e7f8", "at most one commit sha"),
])
def test_malformed_commands_say_what_is_wrong(body: str, problem: str) -> None:
    command = commands.parse(body)
    assert command is not None
    assert command.problem is not None
    assert problem in command.problem


def test_unknown_commands_are_reported_as_such() -> None:
    command = commands.parse("/deploy now")
    assert command is not None
    assert (command.name, command.known) == ("deploy", False)


def test_signatures() -> None:
    body = b'{"zen": "x"}'
    good = sign(b"secret", body)
    assert good.startswith("sha256=")
    assert verify(b"secret", body, good)
    assert not verify(b"secret", body + b" ", good)
    assert not verify(b"other", body, good)
    assert not verify(b"secret", body, None)
    assert not verify(b"secret", body, good.replace("sha256=", "sha1="))


def test_config_is_all_or_nothing(tmp_path: Path) -> None:
    assert GitHubConfig.from_values(None, None, None, None, None) is None
    with pytest.raises(ValueError, match="GITHUB_WEBHOOK_SECRET"):
        GitHubConfig.from_values("1", "pem", None, None, None)
    key = tmp_path / "key.pem"
    key.write_text("PEM")
    config = GitHubConfig.from_values("1", None, key, "s", "https://ghe.example.com/api/v3/")
    assert config == GitHubConfig("1", "PEM", b"s", "https://ghe.example.com/api/v3")
    with pytest.raises(ValueError, match="GITHUB_PRIVATE_KEY_PATH"):
        GitHubConfig.from_values("1", None, tmp_path / "missing.pem", "s", None)


def _run(state: RunState, reason: str | None = None) -> Run:
    return Run(id="0123456789abcdef", app="shop", job="deploy", number=3, state=state.value,
               source="github", actor="github:alice", sha="a" * 40, reason=reason,
               created_at=None)  # type: ignore[arg-type]


def test_runs_comment_has_the_marker_states_and_links() -> None:
    body = render.runs_comment([_run(RunState.FAILED, "exit | code 1")],
                               lambda run_id: f"http://x/runs/{run_id}", ["> hi"])
    assert body.startswith(render.RUNS_MARKER)
    assert "| deploy #3 | ❌ failed (exit \\| code 1) | `aaaaaaa` | alice |" in body
    assert "[logs](http://x/runs/0123456789abcdef)" in body


def test_check_output_masks_and_fences_the_log_tail() -> None:
    output = render.check_output(_run(RunState.FAILED, "token s3cr3t leaked"),
                                 ["line", "```", "s3cr3t"], Masker(["s3cr3t"]))
    assert output["title"] == "deploy #3 failed"
    assert "s3cr3t" not in output["summary"] + output["text"]
    # A fence longer than the log's own ``` : the log cannot close it.
    assert output["text"] == "````\nline\n```\n********\n````"


@pytest.mark.parametrize("value", [
    "<img src=x>", "@acme/admins and @bob", "[a](https://evil.example) ![i](x)", "a|b\nc",
    "`x` ``y`` \\`", "&#64;acme &lt;b&gt;", "*bold* _it_ ~~no~~", "```\n<b>x</b>\n```"])
def test_text_and_code_show_markdown_as_typed(value: str) -> None:
    flat = " ".join(value.splitlines())
    text = render_markdown(markdown.text(value))
    # As typed, with a zero-width joiner after each `@`: nothing pings.
    assert text == f"<p>{html_escape(flat.replace('@', '@' + markdown.ZWJ), quote=False)}</p>\n"
    code = render_markdown(markdown.code(value))
    assert code == f"<p><code>{html_escape(flat, quote=False)}</code></p>\n"
    fenced = render_markdown(markdown.fence(value))
    assert fenced == f"<pre><code>{html_escape(value, quote=False)}\n</code></pre>\n"
    for html in (text, code, fenced):
        assert mentions(html) == []


def test_a_table_cell_holds_one_cell_whatever_it_says() -> None:
    row = f"| {markdown.code('a|b', table=True)} | {markdown.text('c|d<e>')} |"
    html = render_markdown(f"| x | y |\n| - | - |\n{row}")
    assert "<td><code>a|b</code></td>\n<td>c|d&lt;e&gt;</td>" in html


def _request(sha: str = "a" * 40, context: str = ".") -> BuildRequest:
    spec = BuildSpec(name="site", image="registry.example.com/shop", context=context)
    app = AppSpec(app="shop", builds=(spec,))
    return BuildRequest(app, spec, sha, "refs/heads/main", "acme/shop")


async def test_local_builder_unpacks_the_tarball_once(tmp_path: Path) -> None:
    fetched: list[str] = []

    async def fetch(request: BuildRequest) -> bytes:
        fetched.append(request.sha)
        return tarball("acme-shop-aaaaaaa", {"VERSION": "1", "sub/x.txt": "x"})

    builder = LocalBuilder(tmp_path, fetch)
    outcome = await builder.build(_request())
    assert outcome.state is RunState.SUCCEEDED
    assert outcome.image == str(tmp_path / "shop" / ("a" * 40))
    assert (tmp_path / "shop" / ("a" * 40) / "sub" / "x.txt").read_text() == "x"
    again = await builder.build(_request())
    assert again.state is RunState.SUCCEEDED
    assert fetched == ["a" * 40]
    sub = await builder.build(_request("b" * 40, context="sub"))
    assert sub.image is not None
    assert (Path(sub.image) / "x.txt").exists()


async def test_local_builder_refuses_paths_leaving_the_workspace(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"evil"
        info = tarfile.TarInfo("top/../../escaped.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))

    async def fetch(request: BuildRequest) -> bytes:
        return buffer.getvalue()

    outcome = await LocalBuilder(tmp_path / "ws", fetch).build(_request())
    assert outcome.state is RunState.FAILED
    assert not (tmp_path / "escaped.txt").exists()
    assert "could not unpack" in (outcome.reason or "")


async def test_local_builder_reports_a_failed_download(tmp_path: Path) -> None:
    async def fetch(request: BuildRequest) -> bytes:
        raise JobbotError("GitHub answered 404")

    outcome = await LocalBuilder(tmp_path, fetch).build(_request())
    assert (outcome.state, outcome.image) == (RunState.FAILED, None)
    assert "404" in (outcome.reason or "")


def test_the_payload_comes_as_json_or_as_a_form() -> None:
    comment = json.dumps(payloads.issue_comment("acme/shop", 3, "/jobs"))
    assert _payload(comment.encode(), "application/json") == (json.loads(comment), comment)
    form = "payload=" + urllib.parse.quote(comment)
    assert _payload(form.encode(), "application/x-www-form-urlencoded") == (
        json.loads(comment), comment)


@pytest.mark.parametrize("body", [
    b'{"action": "created",', b'{"a": 1} trailing', b"[1, 2]", b'"text"', b'{"a": NaN}',
    b'{"action": "\xff"}', b"", b"[" * 100_000 + b"]" * 100_000])
def test_a_body_that_is_not_a_json_object_has_no_payload(body: bytes) -> None:
    assert _payload(body, "application/json") is None
    assert _payload(b"other=1", "application/x-www-form-urlencoded") is None

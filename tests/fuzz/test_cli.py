"""`jobbot` with any arguments, run in this process (jobbot.cli.main, as the entry point calls it).

Every command but `serve` (which serves until stopped) gets known and odd words, options and
values. It exits 0, 1 or 2, never shows a traceback, and exit 2 (bad input) writes nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jobbot.cli import main
from tests.fuzz.cases import fuzz
from tests.fuzz.strategies import ODD, digits_or_not, odd_text
from tests.fuzz.target import JOB_NAMES, JOBS, TABLES
from tests.support.apps import write_app

COMMANDS = ["validate", "run", "runs", "logs", "cancel", "pause", "resume", "schedule", "render",
            "chat", "slack-manifest", "help", ""]
OPTIONS = ["--follow", "-f", "--yes", "-y", "--ref", "--limit", "--attempt", "--count", "-n",
           "--from", "--build", "--sha", "--repository", "--socket-mode", "--format", "json",
           "--name", "--help", "-v", "--", "-"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app.yaml, and a database with one finished run of hello (made by `jobbot run`)."""
    directory = tmp_path_factory.mktemp("cli")
    write_app(directory, JOBS, app="shop")
    code, _, err = _jobbot(directory, ["run", "hello"])
    assert code == 0, err
    return directory


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    """main() sets up logging for a process of its own; give the test run's back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level
             for name in ("sqlalchemy", "alembic", "aiohttp.access", "asyncio")}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in noisy.items():
            logging.getLogger(name).setLevel(old)


def _jobbot(directory: Path, argv: list[str]) -> tuple[int, str, str]:
    """Run `jobbot ARGV` in `directory`: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, _logging_kept():
        patch.chdir(directory)
        patch.setenv("JOBBOT_RETRY_DELAY", "0.01")
        patch.setattr(sys, "stdin", io.StringIO(""))  # no terminal: nobody to ask
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: Any = main(argv)
            except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
                code = exc.code
    return (0 if code is None else code), out.getvalue(), err.getvalue()


def _state(directory: Path) -> dict[str, Any] | None:
    database = directory / ".jobbot" / "jobbot.db"
    if not database.exists():
        return None
    with contextlib.closing(sqlite3.connect(database)) as conn:
        counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in TABLES}
        counts["paused"] = sorted(conn.execute("SELECT app, job, paused FROM job_state"))
    return counts


word = st.one_of(
    st.sampled_from([*JOB_NAMES, "shop/hello", "nope", "hello#1", "hello#0", "hello#²", "#1",
                     "hello#" + "9" * 30,
                     "KEY=1", "GREETING=hi", "PATH=/tmp", "GREETING", "=x", "2026-03-29T01:00",
                     "1", "0", "-1", "10001", "\u00b2", *OPTIONS]),
    odd_text, digits_or_not, st.sampled_from(ODD))
configs = st.sampled_from([[], [], ["--config", "app.yaml"], ["--config", "missing.yaml"],
                           ["--config", "."], ["--config", "/dev/null"]])


# A case takes up to a second (a run of hello, a database opened): hundreds in the thorough
# profile keep the test inside the hang guard's ten minutes.
@fuzz(bounded=50, thorough=400)
@given(config=configs, command=st.sampled_from(COMMANDS), rest=st.lists(word, max_size=5))
# Numbers beyond SQLite's 64-bit integers: OverflowError and a traceback, exit 1.
@example(config=[], command="runs", rest=["--limit", "9" * 40])
@example(config=[], command="logs", rest=["hello#" + "9" * 30])
def test_cli_exits_0_1_or_2_without_a_traceback(workdir: Path, config: list[str], command: str,
                                                 rest: list[str]) -> None:
    before = _state(workdir)
    code, _, err = _jobbot(workdir, [*config, command, *rest])
    assert code in (0, 1, 2), f"exit {code}: {err[-2000:]}"
    assert "Traceback" not in err, err[-4000:]
    if code == 2 and before is not None:
        # `chat` answers as the Slack router does, which audits every command it answers.
        expected = {**before, "audit_log": before["audit_log"] + int(command == "chat")}
        assert _state(workdir) in (before, expected), f"exit 2, yet written: {err[-500:]}"
    elif code == 2:
        assert _state(workdir) is None, "exit 2, yet a database was made"

"""`jobbot chat "/job ..."`: the Slack command router answered in the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.apps import python_job, write_app


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_app(tmp_path, [python_job("hello", "print('hello from the job')",
                                    env={"GREETING": "hello"}),
                         python_job("risky", "print('risky')", confirm=True)])
    return tmp_path


def chat(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobbot", "chat", *args], cwd=workdir,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "JOBBOT_RETRY_DELAY": "0.01"})


def test_chat_runs_the_same_router(workdir: Path) -> None:
    started = chat(workdir, "/job run hello GREETING=hi")
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    assert "hello #1 succeeded" in started.stderr
    listing = chat(workdir, "/job list")
    assert "demo/hello" in listing.stdout
    assert "last #1 succeeded" in listing.stdout
    logs = chat(workdir, "logs hello#1")
    assert "hello from the job" in logs.stdout


def test_chat_answers_typos_and_confirmations(workdir: Path) -> None:
    typo = chat(workdir, "/job rn hello")
    assert typo.returncode == 2
    assert "did you mean run?" in typo.stdout
    asked = chat(workdir, "/job run risky")
    assert asked.returncode == 0
    assert "asks for confirmation" in asked.stdout
    confirmed = chat(workdir, "/job run risky", "--yes")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "risky #1 succeeded" in confirmed.stderr

"""A newcomer's first minutes in real headless Chromium: start `jobbot serve`, open the link it
prints, see the jobs, press Run now, watch the log arrive live, rerun."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.support.apps import python_job, write_app
from tests.support.net import free_port
from tests.support.pages import GATED

LINK = re.compile(r"(http://\S+)/\?token=([A-Za-z0-9_-]+)")


@dataclass
class Served:
    """A `jobbot serve` process, the link it printed, and everything it wrote to stderr."""

    proc: subprocess.Popen[str]
    link: str
    token: str
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.output.append(line)


def start_serve(workdir: Path) -> Served:
    env = {**os.environ, "JOBBOT_PORT": str(free_port()), "JOBBOT_RETRY_DELAY": "0.01"}
    proc = subprocess.Popen([sys.executable, "-m", "jobbot", "serve"], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    while line := proc.stderr.readline():  # the link comes once the server listens
        lines.append(line)
        found = LINK.search(line)
        if found:
            served = Served(proc, found.group(0), found.group(2), lines)
            served.reader = threading.Thread(target=served.drain, daemon=True)
            served.reader.start()
            return served
    proc.wait(timeout=10)
    proc.stderr.close()
    raise AssertionError(f"jobbot serve printed no link: {''.join(lines)}")


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return tmp_path / "gate"


@pytest.fixture
def served(tmp_path: Path, gate: Path) -> Iterator[Served]:
    workdir = tmp_path / "work"
    write_app(workdir, [
        python_job("greet", GATED, env={"GATE": str(gate)}, description="Says hello, slowly"),
        python_job("report", "print('report')", schedule="0 3 * * *"),
    ])
    server = start_serve(workdir)
    yield server
    gate.touch()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    if server.reader is not None:
        server.reader.join(timeout=10)
    assert server.proc.stderr is not None
    server.proc.stderr.close()


@pytest.fixture
def base_url(served: Served) -> str:
    # The browser fixture (conftest) depends on this, so it closes before the server stops.
    return served.link.split("/?")[0]


async def test_a_newcomer_opens_the_printed_link_runs_a_job_and_reruns_it(
        browser: Browser, served: Served, base_url: str, gate: Path) -> None:
    page = await browser.new_page()
    await page.goto(served.link)
    # Signed in by the link, which then leaves the address bar; / leads to the jobs.
    assert page.url == f"{base_url}/jobs"
    assert "token" not in page.url
    assert await page.locator("table.jobs tr.job").count() == 2
    await page.click("text=greet")
    await page.wait_for_url(f"{base_url}/jobs/greet")
    assert "Says hello, slowly" in await page.inner_text("main")
    assert "No runs yet." in await page.inner_text("table.history")

    await page.click("#run-now")
    await page.wait_for_url(re.compile(r".*/runs/\w+\?t=.*"))
    first = page.url
    assert "greet" in await page.inner_text("h1")
    assert "#1" in await page.inner_text("h1")
    # The log arrives live: lines appear without a reload.
    await page.evaluate("window.__sameDocument = true")
    await page.locator("#log-1 > div", has_text="starting").wait_for()
    shown = await page.locator("#log-1 > div").count()
    await page.locator("#log-1 > div").nth(shown + 2).wait_for()
    assert await page.inner_text("#state .word") == "running"
    await asyncio.to_thread(gate.touch)
    await page.wait_for_selector("#state.s-succeeded")
    await page.locator("#log-1 > div", has_text="done").last.wait_for()
    assert await page.evaluate("window.__sameDocument") is True

    await page.reload()  # a finished run offers Rerun
    await page.click("button:has-text('Rerun')")
    await page.wait_for_url(re.compile(r".*/runs/\w+\?t=.*"))
    assert page.url != first
    assert "#2" in await page.inner_text("h1")
    await page.wait_for_selector("#state.s-succeeded")
    await page.locator("#log-1 > div", has_text="done").last.wait_for()
    assert "Rerun of" in await page.inner_text("dl.facts")

    await page.goto(f"{base_url}/jobs/greet")
    assert await page.locator("table.history tbody tr.s-row-succeeded").count() == 2
    assert "via web" in await page.inner_text("table.history")
    await page.close()
    # The token was printed once, on the line with the link, and never logged.
    assert sum(line.count(served.token) for line in served.output) == 1

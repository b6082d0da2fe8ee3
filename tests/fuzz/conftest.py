"""The fuzz tests' server (one per session) and the case counts printed at the end."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz import cases
from tests.fuzz.target import Jobbot, LogWatch, LoopThread, start, stop


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many cases each fuzz test ran, and the seed that repeats them."""
    if not cases.TALLY:
        return
    total = sum(cases.TALLY.values())
    terminalreporter.section(f"fuzz: {total} cases, profile {cases.PROFILE}, "
                             f"seed {cases.SEED} (FUZZ_SEED={cases.SEED} repeats them)")
    for name, count in sorted(cases.TALLY.items()):
        terminalreporter.write_line(f"{count:>7}  {name}")


@pytest.fixture(scope="session")
def jobbot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobbot]:
    """jobbot serving in its own thread, its log watched for tracebacks from any thread."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    loop = LoopThread()
    watch = LogWatch()
    root = logging.getLogger()
    root.addHandler(watch)
    try:
        started = loop.run(start(tmp_path, loop, watch))
        try:
            yield started
        finally:
            loop.run(stop(started))
            started.engine.dispose()
    finally:
        root.removeHandler(watch)
        loop.close()

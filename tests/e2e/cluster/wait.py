"""Poll a condition until it holds or a deadline passes; tests never sleep as an assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold in time; an AssertionError so pytest reports it as a failure."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    on_tick: Callable[[], None] | None = None,
) -> T:
    """Call probe until it returns something truthy and return that.

    on_tick runs before every probe (e.g. to fail fast when a component died). The last
    value probe returned is included in the timeout message to make failures explainable.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        if on_tick is not None:
            on_tick()
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}"
            )
        time.sleep(interval)

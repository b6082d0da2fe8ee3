"""Full garbage collections in the quiet spells between answers, not in the middle of a burst."""

from __future__ import annotations

import asyncio
import gc

from core.answers_first import process_quiet_spell

# CPython starts a full pass on its own after ten passes over the younger objects. In `jobbot
# serve` one took 2.7-3.4 ms (bench.github_webhook, timed by gc.callbacks) while no answer
# moved: every request under way waited for it, so a pass that fell in a burst made that
# round's slowest 1% of answers. This collector makes the full passes itself, when no answer
# has been under way for `quiet` seconds.
EVERY = 10.0
QUIET = 0.05
# Under sustained load there is no quiet spell: a pass is made anyway after this long, so the
# cyclic garbage that reached the oldest generation is never held for longer.
OVERDUE = 60.0
# A threshold CPython's own full passes never reach.
NEVER = 2**30


class QuietCollector:
    """Runs CPython's full collections every `every` seconds, in a quiet spell."""

    def __init__(self, *, every: float = EVERY, quiet: float = QUIET,
                 overdue: float = OVERDUE) -> None:
        self._every = every
        self._quiet = quiet
        self._overdue = overdue

    async def run(self) -> None:
        """Until cancelled; CPython's own full passes are off meanwhile."""
        _own_full_passes_off()
        try:
            while True:
                await asyncio.sleep(self._every)
                await process_quiet_spell(self._quiet, self._overdue)
                gc.collect()
        finally:
            _own_full_passes_back()


# CPython's threshold is the process's: collectors running at once (tests, two servers in one
# process) turn it off once and back on when the last stops, to the value it had before.
_running = 0
_oldest_threshold = 0


def _own_full_passes_off() -> None:
    global _running, _oldest_threshold
    if _running == 0:
        young, middle, _oldest_threshold = gc.get_threshold()
        gc.set_threshold(young, middle, NEVER)
    _running += 1


def _own_full_passes_back() -> None:
    global _running
    _running -= 1
    if _running == 0:
        gc.set_threshold(*gc.get_threshold()[:2], _oldest_threshold)

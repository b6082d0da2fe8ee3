"""How many cases each fuzz test runs (profile `bounded` or `thorough`), its seed, and a tally.

`make test` runs the bounded profile (about a minute in all); `make fuzz` sets
HYPOTHESIS_PROFILE=thorough, which runs THOROUGH_FACTOR times as many cases (fewer for the
slowest test). FUZZ_SEED repeats a session's cases; otherwise each session draws a new seed,
printed at its end.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, seed, settings

THOROUGH_FACTOR = 10
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "bounded")
SEED = int(os.environ.get("FUZZ_SEED") or random.randrange(2**32))
# Cases run per test (examples, shrinking included), by test name.
TALLY: Counter[str] = Counter()

_COMMON: dict[str, Any] = {
    # A request to the server takes milliseconds, but the first ones warm caches.
    "deadline": None,
    "derandomize": False,
    # The seed says what ran; no example database under the checkout.
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                              HealthCheck.large_base_example],
}
settings.register_profile("bounded", **_COMMON)
settings.register_profile("thorough", **_COMMON)
if PROFILE not in ("bounded", "thorough"):
    raise ValueError(f"HYPOTHESIS_PROFILE must be bounded or thorough, not {PROFILE!r}")
settings.load_profile(PROFILE)


def fuzz(bounded: int, thorough: int | None = None) -> Callable[[Any], Any]:
    """For a @given test: `bounded` cases in the bounded profile and `thorough` in the
    thorough one (default THOROUGH_FACTOR times as many), the session's seed, and a tally of
    the cases it ran."""
    examples = (thorough or bounded * THOROUGH_FACTOR) if PROFILE == "thorough" else bounded

    def decorate(test: Any) -> Any:
        inner = test.hypothesis.inner_test
        name = test.__name__

        def counted(*args: Any, **kwargs: Any) -> Any:
            TALLY[name] += 1
            return inner(*args, **kwargs)

        test.hypothesis.inner_test = counted
        return seed(SEED)(settings(max_examples=examples)(test))

    return decorate

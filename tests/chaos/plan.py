"""The chaos run's parameters, in one place: how many replicas, requests and kills, for how long.

`make test` runs the bounded defaults; `make chaos` and bench/chaos.py set larger ones. Every
field can be set from the environment (CHAOS_SEED, CHAOS_REQUESTS, CHAOS_KILLS, CHAOS_SECONDS,
CHAOS_SETTLE, CHAOS_REPLICA_ENV), and the seed a run printed replays its random choices.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Plan:
    """What one chaos run does; the seed decides every random choice of the harness."""

    seed: int
    # `jobbot serve` processes on the one database.
    replicas: int = 3
    # Signed Slack commands and GitHub deliveries, in all, spread over `seconds`.
    requests: int = 30
    # kill -9 of a random live replica at random moments of `seconds` (never the last one).
    kills: int = 3
    # How long the requests and the kills go on.
    seconds: float = 60.0
    # The share of kills that strike the next replica to answer a request, right after its
    # answer (the work it acknowledged is then not done yet); the others strike at random.
    after_answer: float = 0.5
    # A killed replica comes back after this many seconds (uniformly between the two).
    restart_after: tuple[float, float] = (2.0, 5.0)
    # How long each pod runs (uniformly between the two), printing a line every half second.
    run_seconds: tuple[float, float] = (2.0, 10.0)
    # The share of pods that fail (exit code 3), so failed runs have threads and logs too.
    failing: float = 0.15
    # After the requests: how long every run may take to end and every thread to settle.
    settle: float = 60.0
    # A cron job fires every minute (the finest schedule app.yaml takes) on every replica.
    cron: str = "* * * * *"
    # Extra environment for every replica (e.g. lease timings), as NAME=VALUE pairs.
    replica_env: Mapping[str, str] = field(default_factory=dict)

    def rng(self, stream: str) -> random.Random:
        """A generator of its own per use, so one use drawing more leaves the others as
        they were: the same seed gives the same requests, kills and pods."""
        return random.Random(f"{self.seed}:{stream}")

    @property
    def replay(self) -> str:
        """The environment that repeats this run's random choices."""
        return (f"CHAOS_SEED={self.seed} CHAOS_REQUESTS={self.requests} "
                f"CHAOS_KILLS={self.kills} CHAOS_SECONDS={self.seconds:g}")


def from_env(environ: Mapping[str, str] | None = None, *, requests: int | None = None,
             kills: int | None = None, seconds: float | None = None,
             settle: float | None = None) -> Plan:
    """The plan: the arguments over the bounded defaults, CHAOS_* variables over both; a
    fresh random seed unless CHAOS_SEED is given."""
    env = os.environ if environ is None else environ
    seed = int(env.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
    plan = Plan(seed)
    plan = replace(
        plan,
        requests=int(env.get("CHAOS_REQUESTS") or requests or plan.requests),
        kills=int(env.get("CHAOS_KILLS") or (kills if kills is not None else plan.kills)),
        seconds=float(env.get("CHAOS_SECONDS") or seconds or plan.seconds),
        settle=float(env.get("CHAOS_SETTLE") or settle or plan.settle))
    if env.get("CHAOS_REPLICA_ENV"):
        pairs = (item.split("=", 1) for item in env["CHAOS_REPLICA_ENV"].split(",") if item)
        plan = replace(plan, replica_env={k.strip(): v.strip() for k, v in pairs})
    return plan

"""Benchmark: N kill -9 of `jobbot serve` replicas over M requests; what was lost, done twice or
left unfinished, and how soon a dead replica's runs are followed again.

The harness is the chaos suite's (tests/chaos: one module set, shared): a throwaway PostgreSQL,
three `jobbot serve` processes with the Kubernetes executor, each with a host name of its own,
the fake Slack, GitHub and Kubernetes API over HTTP, the fake cluster's pods printing numbered
lines and ending on their own. M signed Slack commands and GitHub `/run` comments go to random
replicas (a refused connection or a 5xx is retried on another, as Slack and GitHub retry), a
cron job fires every minute, and N times a live replica is killed with SIGKILL (at a random
moment, or right after it answered a request), then brought back after a few seconds, in its
pod or as a new pod with another host name and an empty data directory.

Printed, for the goal 0, 0, 0:

- lost: answered requests (2xx) that started no run, cron slots with no run, GitHub runs
  with no check run;
- duplicated: requests that started more than one run, runs with more than one check run;
- unfinished: runs not in a final state once the chaos is over and `--settle` has passed;

and, beside them, the Slack thread and log findings of the suite.

"Followed again" is measured from the outside, so it does not depend on how a takeover is
built (a lease, an owner column, a queue): the fake Kubernetes API records every request with
the bearer token of the replica life that sent it (each life has its own kubeconfig). The
runs a killed replica followed are those whose Job it created or asked about (the Job, its
pods, its pod's log) and that were not final at its death. Such a run is followed again at the
first of: another live replica holding its pod's log stream open at the death (it followed
the run already), another live replica's first request about the run after the death, or the
run's end being recorded in the database after the death. The delay from the death to that
moment is one sample; runs never followed again are counted apart. Goal: p99 under the lease
expiry plus 5 s (`--lease-expiry`, the replicas' documented default, or what
CHAOS_REPLICA_ENV sets them to).

    .venv/bin/python -m bench.chaos [--kills 6] [--requests 100] [--seconds 120]
        [--settle 120] [--lease-expiry 15] [--seed N] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from tests.chaos.checks import Report
from tests.chaos.plan import from_env
from tests.chaos.session import run_chaos


def _print(report: Report, lease_expiry: float) -> None:
    print(report.text())
    print()
    print(f"lost {len(report.lost)}   duplicated {len(report.duplicated)}   "
          f"unfinished {len(report.unfinished)}   (goal 0, 0, 0)")
    print(f"slack thread findings {len(report.threads)}   log findings {len(report.logs)}")
    p50, p99 = report.percentile(0.5), report.percentile(0.99)
    goal = lease_expiry + 5.0
    if p50 is None or p99 is None:
        print("followed again: no run was followed by a killed replica")
    else:
        verdict = "met" if p99 < goal and not report.unfollowed else "missed"
        print(f"followed again after a death: p50 {p50:.1f} s   p99 {p99:.1f} s   "
              f"over {len(report.takeovers)} runs; never followed again "
              f"{len(report.unfollowed)}   (goal p99 < {goal:.0f} s: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=6, help="kill -9 of a live replica")
    parser.add_argument("--requests", type=int, default=100,
                        help="Slack commands and GitHub deliveries, in all")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="how long the requests and kills go on")
    parser.add_argument("--settle", type=float, default=120.0,
                        help="how long runs may take to end after the chaos")
    parser.add_argument("--lease-expiry", type=float, default=15.0,
                        help="the replicas' lease expiry in seconds, for the goal")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's random choices")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (the replicas' logs)")
    args = parser.parse_args()
    # The arguments decide; of the environment only the replicas' extra settings count.
    environ = {k: v for k, v in os.environ.items() if k == "CHAOS_REPLICA_ENV"}
    if args.seed is not None:
        environ["CHAOS_SEED"] = str(args.seed)
    plan = from_env(environ, requests=args.requests, kills=args.kills, seconds=args.seconds,
                    settle=args.settle)
    print(f"chaos: {plan.kills} kills over {plan.requests} requests in {plan.seconds:g} s, "
          f"{plan.replicas} replicas, seed {plan.seed}")
    workdir = Path(tempfile.mkdtemp(prefix="jobbot-chaos-"))
    try:
        report = asyncio.run(run_chaos(plan, workdir))
    finally:
        if args.keep:
            print(f"replica logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    _print(report, args.lease_expiry)


if __name__ == "__main__":
    main()

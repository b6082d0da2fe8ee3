"""Read run and attempt outcomes from Job and pod objects, as the API reports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.durations import format_duration
from core.models import RunState

Obj = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    state: RunState
    reason: str | None


def job_outcome(job: Obj) -> Outcome | None:
    """The run's final state from the Job's conditions, or None while it is still going.

    FailureTarget and SuccessCriteriaMet come first (pods may still be stopping); Failed and
    Complete follow with the same reason, so either settles the run the same way.
    """
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []
                  if c.get("status") == "True"}
    for kind in ("Failed", "FailureTarget"):
        if kind in conditions:
            condition = conditions[kind]
            why = condition.get("reason") or ""
            if why == "DeadlineExceeded":
                limit = (job.get("spec") or {}).get("activeDeadlineSeconds")
                text = f"time limit of {format_duration(limit)} reached" if limit else (
                    "time limit reached")
                return Outcome(RunState.TIMED_OUT, text)
            if why == "BackoffLimitExceeded":
                failed = (job.get("status") or {}).get("failed") or 0
                limit = (job.get("spec") or {}).get("backoffLimit", 0)
                tries = "once" if failed == 1 else f"{failed} times"
                return Outcome(RunState.FAILED, f"failed {tries} (backoff_limit {limit})")
            message = condition.get("message") or why or "the Job failed"
            return Outcome(RunState.FAILED, message)
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return Outcome(RunState.SUCCEEDED, None)
    return None


@dataclass(frozen=True)
class PodState:
    """One attempt as its pod shows it."""

    name: str
    created: str
    started: bool
    finished: RunState | None
    exit_code: int | None
    reason: str | None


def pod_state(pod: Obj, container: str) -> PodState:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    statuses = status.get("containerStatuses") or []
    mine = next((s for s in statuses if s.get("name") == container), statuses[0] if statuses
                else {})
    state = mine.get("state") or {}
    terminated = state.get("terminated") or (mine.get("lastState") or {}).get("terminated")
    exit_code = terminated.get("exitCode") if terminated else None
    started = phase in ("Running", "Succeeded", "Failed") or bool(
        state.get("running") or terminated)
    finished: RunState | None = None
    reason: str | None = None
    if phase == "Succeeded":
        finished, exit_code = RunState.SUCCEEDED, exit_code if exit_code is not None else 0
    elif phase == "Failed":
        finished = RunState.FAILED
        why = (terminated or {}).get("reason") or status.get("reason")
        if exit_code is not None:
            reason = f"exit code {exit_code}" + (f" ({why})" if why and why != "Error" else "")
        else:
            reason = status.get("message") or why or "the pod failed"
    return PodState(meta.get("name", ""), str(meta.get("creationTimestamp") or ""), started,
                    finished, exit_code, reason)


def last_exit_code(pods: list[PodState]) -> int | None:
    failed = [p for p in pods if p.finished is RunState.FAILED and p.exit_code is not None]
    return failed[-1].exit_code if failed else None

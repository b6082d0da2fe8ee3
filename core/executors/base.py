"""The contract between JobService and an executor, in both directions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from core.models import Attempt, Run, RunState
from core.spec import AppSpec, JobSpec


@dataclass(frozen=True)
class Launch:
    """Everything an executor needs to start one run."""

    run: Run
    app: AppSpec
    job: JobSpec
    # Environment for the job's containers: job env, then run overrides (which win).
    env: dict[str, str] = field(default_factory=dict)
    # Values to mask in logs besides the executor's own secrets (sensitive env and overrides).
    sensitive_values: tuple[str, ...] = ()


def secret_names(launch: Launch) -> tuple[str, ...]:
    """The job's secrets, except for runs of fork pull requests (unless `fork_secrets`).

    Code from a fork is written by someone outside the team: handing it the job's secrets
    would let any pull request read them. Every executor hands a run these secrets only.
    """
    if launch.run.origin.get("fork") and not launch.job.fork_secrets:
        return ()
    return launch.job.secrets


class Reporter(Protocol):
    """What an executor tells the service; each call becomes a run event."""

    async def run_started(self, run_id: str, *, external_id: str | None = None) -> None: ...

    async def attempt_started(self, run_id: str, index: int, *, log_path: str | None,
                              handle: str | None) -> None: ...

    async def attempt_finished(self, run_id: str, index: int, state: RunState, *,
                               exit_code: int | None, reason: str | None = None) -> None: ...

    async def run_finished(self, run_id: str, state: RunState, *, exit_code: int | None = None,
                           reason: str | None = None) -> None: ...

    async def cancel_requested_by(self, run_id: str) -> str | None:
        """Who asked (possibly from another process) to cancel this run, if anyone."""
        ...


class Executor(Protocol):
    """Runs runs. Launch returns once the run has started; results arrive via the Reporter."""

    name: str

    def bind(self, reporter: Reporter) -> None: ...

    async def launch(self, launch: Launch) -> None: ...

    def drives(self, run_id: str) -> bool:
        """Whether this process follows the run now (launched or adopted it, not yet final)."""
        ...

    def followed(self) -> list[str]:
        """The ids of the runs this process follows now."""
        ...

    async def release(self, run_id: str) -> None:
        """Stop following a run another replica took over (this one's lease had expired),
        reporting nothing more about it; local processes of it are stopped."""
        ...

    async def cancel(self, run: Run, actor: str) -> bool:
        """Stop a run this executor drives; False if it does not drive it (another process)."""
        ...

    async def reconcile(self, runs: list[tuple[Run, list[Attempt]]]) -> None:
        """Adopt runs of processes that are gone (at start-up, or when a replica's lease
        expired), each `run.owner` still naming that process: settle or follow them, using
        the executor's truth."""
        ...

    def is_ready(self) -> bool: ...

    async def shutdown(self, reason: str) -> None:
        """Stop everything this process drives; runs end `cancelled` with `reason`."""
        ...


@runtime_checkable
class SecretKeys(Protocol):
    """An executor that can tell which variable names a job's secrets hold (never their
    values): runs may not override them."""

    async def secret_keys(self, app: AppSpec, job: JobSpec) -> frozenset[str]:
        """The keys of the job's secrets this executor can read; empty when it knows none."""
        ...


class ReporterBinding:
    """The reporter half every executor shares: bind() once, then report through `reporter`."""

    _reporter: Reporter | None = None

    def bind(self, reporter: Reporter) -> None:
        self._reporter = reporter

    @property
    def reporter(self) -> Reporter:
        if self._reporter is None:
            raise RuntimeError("executor used before bind()")
        return self._reporter

    def is_ready(self) -> bool:
        return self._reporter is not None

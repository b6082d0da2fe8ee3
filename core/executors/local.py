"""Run jobs as child processes, with the retry, time-limit and cancel rules of Kubernetes Jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field

from core.durations import format_duration
from core.envnames import RESERVED_PREFIX
from core.errors import BadInput, ExecutorError
from core.executors.base import Launch, ReporterBinding, secret_names
from core.logs import LogStore, LogWriter
from core.masking import Masker, secret_forms
from core.models import Attempt, Run, RunState
from core.overrides import run_environment
from core.procs import ProcessId
from core.secrets import LocalSecrets
from core.spec import AppSpec, JobSpec

logger = logging.getLogger(__name__)

# Passed through from jobbot's own environment; nothing else is (jobbot's tokens stay here).
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "TMPDIR", "SHELL",
                  "VIRTUAL_ENV", "PYTHONPATH")
MAX_RETRY_DELAY = 60.0
OUTPUT_DRAIN_SECONDS = 2.0


@dataclass
class _Attempt:
    index: int
    process: asyncio.subprocess.Process | None
    writer: LogWriter
    task: asyncio.Task[int]
    handle: ProcessId | None = None


@dataclass
class _LocalRun:
    launch: Launch
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_state: RunState | None = None
    stop_reason: str | None = None
    task: asyncio.Task[None] | None = None

    def request_stop(self, state: RunState, reason: str) -> None:
        if self.stop_state is None:
            self.stop_state, self.stop_reason = state, reason
        self.stop.set()


class LocalExecutor(ReporterBinding):
    """Drives runs as process groups of this jobbot process; logs go to the LogStore."""

    name = "local"

    def __init__(
        self,
        logs: LogStore,
        secrets: LocalSecrets,
        *,
        owner: ProcessId,
        retry_delay: float = 1.0,
        cancel_poll: float = 1.0,
    ) -> None:
        self._logs = logs
        self._secrets = secrets
        self.owner = owner
        self._retry_delay = retry_delay
        self._cancel_poll = cancel_poll
        self._runs: dict[str, _LocalRun] = {}
        self._released: set[str] = set()

    def drives(self, run_id: str) -> bool:
        return run_id in self._runs

    def followed(self) -> list[str]:
        return list(self._runs)

    async def release(self, run_id: str) -> None:
        """Stop the run's processes: the replica that took it over has ended it already."""
        state = self._runs.get(run_id)
        if state is not None:
            self._released.add(run_id)  # nothing more is reported about it from here
            state.request_stop(RunState.FAILED, "taken over by another replica")
            if state.task is not None:
                await asyncio.gather(state.task, return_exceptions=True)

    async def secret_keys(self, app: AppSpec, job: JobSpec) -> frozenset[str]:
        return await asyncio.to_thread(self._secrets.keys, job.secrets)

    async def launch(self, launch: Launch) -> None:
        state = _LocalRun(launch)
        self._runs[launch.run.id] = state
        state.task = asyncio.create_task(self._drive(state), name=f"run-{launch.run.id}")

    async def wait(self, run_id: str) -> None:
        """Until this process has finished driving the run."""
        state = self._runs.get(run_id)
        if state and state.task:
            await asyncio.shield(state.task)

    async def cancel(self, run: Run, actor: str) -> bool:
        state = self._runs.get(run.id)
        if state is None:
            return False
        state.request_stop(RunState.CANCELLED, f"cancelled by {actor}")
        return True

    async def shutdown(self, reason: str) -> None:
        for state in list(self._runs.values()):
            state.request_stop(RunState.CANCELLED, reason)
        tasks = [s.task for s in self._runs.values() if s.task]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def reconcile(self, runs: list[tuple[Run, list[Attempt]]]) -> None:
        """The runs' processes were children of a jobbot process that is gone: they cannot
        be followed again, so each run ends failed, saying why."""
        for run, attempts in runs:
            if run.id in self._runs:
                continue
            await self._settle_orphan(run, attempts, ProcessId.parse(run.owner or ""))

    async def _settle_orphan(self, run: Run, attempts: list[Attempt],
                             owner: ProcessId | None) -> None:
        """A run whose jobbot process died: kill what is left of it (on this host) and say so."""
        killed = []
        for attempt in attempts:
            if attempt.finished_at is not None:
                continue
            handle = ProcessId.parse(attempt.handle or "")
            if handle and handle.kill_group():
                killed.append(handle.pid)
            await self.reporter.attempt_finished(
                run.id, attempt.index, RunState.FAILED, exit_code=None,
                reason="jobbot stopped while this attempt ran")
        if owner is None:
            reason = f"the jobbot process that started it stopped while the run was {run.state}"
        elif owner.is_local:
            reason = f"jobbot process {owner.pid} stopped while the run was {run.state}"
        else:
            reason = (f"jobbot replica {owner} stopped while the run was {run.state} (its "
                      "lease expired): its processes stopped with it")
        reason += f"; marked failed by jobbot process {self.owner.pid} on {self.owner.host}"
        if killed:
            reason += f" (left-over processes {', '.join(map(str, killed))} were killed)"
        await self.reporter.run_finished(run.id, RunState.FAILED, reason=reason)

    # -- driving a run --------------------------------------------------------------------

    async def _drive(self, state: _LocalRun) -> None:
        launch = state.launch
        run, job = launch.run, launch.job
        try:
            env, secret_values = self._environment(launch)
        except ExecutorError as exc:
            await self.reporter.run_finished(run.id, RunState.FAILED, reason=str(exc))
            self._runs.pop(run.id, None)
            return
        masker = Masker(secret_forms((*secret_values, *launch.sensitive_values)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + job.time_limit if job.time_limit else None
        await self.reporter.run_started(run.id, external_id=str(self.owner))
        active: dict[asyncio.Task[int], _Attempt] = {}
        succeeded = failures = 0
        next_index, not_before = 1, 0.0
        last_exit: int | None = None
        outcome: tuple[RunState, int | None, str] | None = None
        try:
            while outcome is None:
                while (not state.stop.is_set() and loop.time() >= not_before
                       and len(active) < min(job.parallelism, job.completions - succeeded)):
                    attempt = await self._start_attempt(launch, next_index, env, masker, failures)
                    active[attempt.task] = attempt
                    next_index += 1
                timeout = self._cancel_poll
                if deadline is not None:
                    timeout = min(timeout, max(deadline - loop.time(), 0))
                if loop.time() < not_before:
                    timeout = min(timeout, not_before - loop.time())
                stop_wait = asyncio.ensure_future(state.stop.wait())
                done, _ = await asyncio.wait({*active, stop_wait}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                for task in done - {stop_wait}:
                    attempt = active.pop(task)
                    code = task.result()
                    last_exit = code
                    if code == 0:
                        succeeded += 1
                        await self._finish_attempt(run, attempt, RunState.SUCCEEDED, code, None)
                    else:
                        failures += 1
                        await self._finish_attempt(run, attempt, RunState.FAILED, code,
                                                   f"exit code {code}")
                        delay = min(self._retry_delay * 2 ** (failures - 1), MAX_RETRY_DELAY)
                        not_before = loop.time() + delay
                if succeeded >= job.completions:
                    outcome = (RunState.SUCCEEDED, 0, "")
                elif failures > job.backoff_limit:
                    outcome = (RunState.FAILED, last_exit,
                               _failure_reason(failures, job.backoff_limit, last_exit))
                elif deadline is not None and loop.time() >= deadline:
                    outcome = (RunState.TIMED_OUT, None,
                               f"time limit of {format_duration(job.time_limit or 0)} reached")
                elif state.stop.is_set():
                    outcome = (state.stop_state or RunState.CANCELLED, None,
                               state.stop_reason or "stopped")
                else:
                    # A cancel asked for in another process (CLI, another replica) arrives here.
                    actor = await self.reporter.cancel_requested_by(run.id)
                    if actor:
                        state.request_stop(RunState.CANCELLED, f"cancelled by {actor}")
            final_state, exit_code, reason = outcome
            if active:
                await self._stop_attempts(run, active, job.stop_grace_period, final_state, reason)
            if run.id not in self._released:
                await self.reporter.run_finished(run.id, final_state, exit_code=exit_code,
                                                 reason=reason or None)
        except asyncio.CancelledError:
            await self._stop_attempts(run, active, 0, RunState.CANCELLED, "jobbot stopped")
            raise
        except Exception:
            logger.exception("driving run %s failed", run.id, extra={"run_id": run.id})
            await self._stop_attempts(run, active, job.stop_grace_period, RunState.FAILED,
                                      "internal error in jobbot's local executor")
            await self.reporter.run_finished(run.id, RunState.FAILED,
                                             reason="internal error in jobbot's local executor")
        finally:
            self._runs.pop(run.id, None)
            self._released.discard(run.id)

    def _environment(self, launch: Launch) -> tuple[dict[str, str], list[str]]:
        env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        env["PYTHONUNBUFFERED"] = "1"  # so Python jobs' output reaches the live log at once
        secret_env = self._secrets.load(secret_names(launch))
        env.update(secret_env)
        try:
            env.update(run_environment(launch.job, launch.env))
        except BadInput as exc:
            raise ExecutorError(str(exc)) from None
        # The JOBBOT_ variables are jobbot's alone: none comes from a secret, the job or the run.
        for key in [k for k in env if k.upper().startswith(RESERVED_PREFIX)]:
            del env[key]
        run = launch.run
        env.update({"JOBBOT_APP": run.app, "JOBBOT_JOB": run.job, "JOBBOT_RUN_ID": run.id,
                    "JOBBOT_RUN_NUMBER": str(run.number)})
        if run.sha:
            env["JOBBOT_GIT_SHA"] = run.sha
        return env, list(secret_env.values())

    async def _start_attempt(self, launch: Launch, index: int, env: dict[str, str],
                             masker: Masker, failures: int) -> _Attempt:
        run, job = launch.run, launch.job
        writer = await self._logs.writer(run.id, index, masker)
        if failures:
            writer.line(f"retry {failures} of {job.backoff_limit}")
        process: asyncio.subprocess.Process | None = None
        handle: ProcessId | None = None
        try:
            process = await asyncio.create_subprocess_exec(
                *job.command, cwd=working_directory(launch),
                env={**env, "JOBBOT_ATTEMPT": str(index)},
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
            handle = ProcessId.of(process.pid)
            task = asyncio.create_task(_pump(process, writer))
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            writer.line(f"cannot start {job.command[0]!r}: {exc.strerror or exc}")
            task = asyncio.create_task(_constant(code))
        await self.reporter.attempt_started(run.id, index,
                                            log_path=self._logs.location(run.id, index),
                                            handle=str(handle) if handle else None)
        return _Attempt(index, process, writer, task, handle)

    async def _finish_attempt(self, run: Run, attempt: _Attempt, state: RunState,
                              code: int | None, reason: str | None) -> None:
        await attempt.writer.close()
        if run.id in self._released:
            return
        await self.reporter.attempt_finished(run.id, attempt.index, state, exit_code=code,
                                             reason=reason)

    async def _stop_attempts(self, run: Run, active: dict[asyncio.Task[int], _Attempt],
                             grace: float, state: RunState, reason: str) -> None:
        """SIGTERM every attempt's process group, SIGKILL what is left after `grace` seconds."""
        attempts = list(active.values())
        active.clear()
        for attempt in attempts:
            if attempt.process and attempt.process.returncode is None:
                _signal_group(attempt.process.pid, signal.SIGTERM)
                attempt.writer.line(f"stopping: {reason} (SIGTERM, {grace:g}s grace)")
        if attempts:
            await asyncio.wait([a.task for a in attempts], timeout=grace)
        for attempt in attempts:
            if attempt.process:
                # Also reaps children that outlived the group leader.
                _signal_group(attempt.process.pid, signal.SIGKILL)
        for attempt in attempts:
            with contextlib.suppress(asyncio.CancelledError):
                code = await attempt.task
            await self._finish_attempt(run, attempt, state, code, reason)


async def _pump(process: asyncio.subprocess.Process, writer: LogWriter) -> int:
    copy = asyncio.create_task(_copy(process, writer))
    code = await process.wait()
    # A grandchild that left the process group can hold the pipe open forever: drain briefly.
    try:
        await asyncio.wait_for(asyncio.shield(copy), OUTPUT_DRAIN_SECONDS)
    except TimeoutError:
        copy.cancel()
    # A signal death shows as 128+N, as in shells and Kubernetes (137 = SIGKILL).
    return 128 - code if code < 0 else code


async def _copy(process: asyncio.subprocess.Process, writer: LogWriter) -> None:
    assert process.stdout is not None
    while chunk := await process.stdout.read(65536):
        writer.write(chunk)


async def _constant(value: int) -> int:
    return value


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def working_directory(launch: Launch) -> str:
    """Jobs with image_from_build run in their build's checkout; others beside app.yaml."""
    image = launch.run.image
    if launch.job.image_from_build and image and os.path.isabs(image) and os.path.isdir(image):
        return image
    return launch.app.directory


def _failure_reason(failures: int, backoff_limit: int, exit_code: int | None) -> str:
    tries = "once" if failures == 1 else f"{failures} times"
    return f"failed {tries} (backoff_limit {backoff_limit}); last exit code {exit_code}"

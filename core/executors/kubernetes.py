"""Run jobs as batch/v1 Jobs: one Job per run, status from a watch, attempts and logs from pods.

The Job keeps running when jobbot stops; the next jobbot process adopts it in `reconcile()`.
Pod logs and reasons are masked with the run's sensitive env values and the values of the
Secrets it gets, which jobbot reads (in memory only) before it creates the Job.

The values of a run's secret parameters are never in its Job: they go into a Secret of the
run's own (`<Job name>-params`), created after the Job with the Job's uid as owner (so it
goes with the Job at the latest), which the container's env refers to by `secretKeyRef`; the
pod waits for it. jobbot deletes it as soon as the run ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from core.errors import BadInput, ExecutorError, JobbotError
from core.executors.base import Launch, ReporterBinding, secret_names
from core.executors.k8s.api import KubeApi, Obj, interrupt
from core.executors.k8s.manifests import (
    CONTAINER,
    CONTROLLER_UID,
    LABEL_RUN_ID,
    SELECTOR,
    RunInfo,
    job_manifest,
    job_name,
    params_secret_manifest,
    params_secret_name,
)
from core.executors.k8s.podlog import StampedLines, since_seconds
from core.executors.k8s.secrets import SecretMissing, secret_keys, secret_values
from core.executors.k8s.status import PodState, job_outcome, last_exit_code, pod_state
from core.executors.k8s.watch import JobWatch, WatchEvent
from core.logs import LogStore
from core.masking import Masker, is_sensitive_key, secret_forms
from core.models import Attempt, Run, RunState
from core.parameters import secret_names as secret_parameters
from core.spec import AppSpec, JobSpec

logger = logging.getLogger(__name__)
RUN_SELECTOR = f"{SELECTOR},{LABEL_RUN_ID}"


def run_info(run: Run) -> RunInfo:
    return RunInfo(id=run.id, number=run.number, source=run.source, actor=run.actor,
                   sha=run.sha, ref=run.ref, image=run.image)


@dataclass
class _Tracked:
    """A run whose Job this process follows."""

    run_id: str
    namespace: str
    name: str
    masker: Masker
    uid: str | None = None
    launched: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: dict[str, int] = field(default_factory=dict)  # pod name -> attempt index
    finished: set[str] = field(default_factory=set)
    log_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    latest: Obj | None = None
    syncing: asyncio.Task[None] | None = None
    done: bool = False
    # Why pod logs are not copied (a Secret of an adopted run could not be read to mask it).
    withheld: str | None = None
    # The run's Secret with its secret parameter values, deleted when the run ends.
    params_secret: str | None = None

    @property
    def external_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def mask(self, text: str | None) -> str | None:
        return self.masker.mask(text) if text else text


class KubernetesExecutor(ReporterBinding):
    """Creates one Job per run in the app's namespace and reports what the API says about it."""

    name = "kubernetes"

    def __init__(self, api: KubeApi, logs: LogStore, namespace_of: Callable[[str], str], *,
                 job_of: Callable[[str, str], JobSpec] | None = None,
                 watch_timeout: int = 300, log_drain: float = 10.0,
                 pod_annotations: Callable[[Launch], dict[str, str]] | None = None) -> None:
        """`job_of(app, job)` gives a job's current definition: an adopted run also masks the
        sensitive `env` values it has now (besides those its Job's pods got)."""
        self._pod_annotations = pod_annotations
        self._job_of = job_of
        self.api = api
        self._logs = logs
        self._namespace_of = namespace_of
        self._watch_timeout = watch_timeout
        self._log_drain = log_drain
        self._runs: dict[str, _Tracked] = {}
        self._watches: dict[str, tuple[JobWatch, asyncio.Task[None]]] = {}

    def drives(self, run_id: str) -> bool:
        return run_id in self._runs

    def followed(self) -> list[str]:
        return list(self._runs)

    async def release(self, run_id: str) -> None:
        """Stop following the run (its Job goes on, followed by the replica that took it)."""
        track = self._runs.pop(run_id, None)
        if track is None:
            return
        track.done = True
        tasks = [t for t in (*track.log_tasks.values(), track.syncing) if t and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- launching ------------------------------------------------------------------------

    async def secret_keys(self, app: AppSpec, job: JobSpec) -> frozenset[str]:
        """The names the job's Secrets hold, read from the API: runs may not override them."""
        return await secret_keys(self.api, app.namespace, job.secrets)

    async def launch(self, launch: Launch) -> None:
        run = launch.run
        hidden = secret_env(launch)
        try:
            extra = self._pod_annotations(launch) if self._pod_annotations else None
            manifest = job_manifest(launch.app, launch.job, run_info(run), env=launch.env,
                                    pod_annotations=extra, secrets=secret_names(launch),
                                    secret_env=hidden)
        except BadInput as exc:
            raise ExecutorError(str(exc)) from exc
        namespace, name = launch.app.namespace, manifest["metadata"]["name"]
        # Read before the Job exists: a Secret jobbot cannot read is a run it cannot mask.
        values = await secret_values(self.api, namespace, secret_names(launch))
        masker = Masker(secret_forms((*values, *launch.sensitive_values)))
        track = _Tracked(run.id, namespace, name, masker)
        if hidden:
            track.params_secret = params_secret_name(name)
        self._runs[run.id] = track
        await self._ensure_watch(namespace)
        try:
            created = await self.api.create_job(namespace, manifest)
        except ApiException as exc:
            self._runs.pop(run.id, None)
            raise ExecutorError(f"Kubernetes refused Job {namespace}/{name}: "
                                f"{_api_message(exc)}") from exc
        except ExecutorError:
            self._runs.pop(run.id, None)
            raise
        track.uid = created.job["metadata"].get("uid")
        if created.adopted:
            logger.info("Job %s already existed: adopted it", track.external_id,
                        extra={"run_id": run.id})
        if hidden:
            try:
                await self._give_parameters(created.job, {k: launch.env[k] for k in hidden})
            except (ExecutorError, ApiException) as exc:
                # Its pod would wait for the Secret for ever: the run ends here, and its Job.
                self._runs.pop(run.id, None)
                track.done = True
                await self._drop_job(namespace, name)
                why = masker.mask(str(exc) if isinstance(exc, ExecutorError)
                                  else _api_message(exc))
                raise ExecutorError(f"could not give Job {namespace}/{name} its secret "
                                    f"parameters (the Job is deleted): {why}") from exc
        # The Job exists: the trigger can answer now; recording `running` follows at once.
        track.syncing = asyncio.create_task(self._started(track, created.job),
                                            name=f"started-{run.id}")

    async def _give_parameters(self, job: Obj, values: dict[str, str]) -> None:
        """Make sure the Job's pods get the run's secret parameter values, through a Secret
        the Job owns. A Job found finished (a retried launch) gets none: nothing starts any
        more; one found running keeps the Secret its pods refer to, if it is there."""
        meta = job["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        secret = params_secret_name(name)
        existing = await self.api.read_secret(namespace, secret)
        if existing is not None and _owned_by(existing, uid):
            return
        if existing is not None:  # left by an earlier Job of that name: not this one's
            await self.api.delete_secret(namespace, secret)
        if job_outcome(job) is not None:
            return
        if not await self.api.create_secret(namespace, params_secret_manifest(job, values)):
            raise ExecutorError(f"Secret {namespace}/{secret} appeared while jobbot was "
                                "creating it")

    async def _drop_job(self, namespace: str, name: str) -> None:
        """Delete a Job whose pods cannot start (they would wait for their Secret)."""
        try:
            await self.api.delete_job(namespace, name)
        except (ExecutorError, ApiException) as exc:
            logger.warning("could not delete Job %s/%s: %s", namespace, name,
                           _api_message(exc))

    async def _drop_params(self, namespace: str, secret: str) -> None:
        """Delete a run's Secret of secret parameter values once the run is over; its owner
        Job would take it too, but only when the Job itself goes (its TTL, or never)."""
        try:
            if await self.api.delete_secret(namespace, secret):
                logger.info("deleted Secret %s/%s with the secret parameters of its run",
                            namespace, secret)
        except (ExecutorError, ApiException) as exc:
            logger.warning("could not delete Secret %s/%s (its Job deletes it when it goes): "
                           "%s", namespace, secret, _api_message(exc))

    async def _started(self, track: _Tracked, job: Obj) -> None:
        await self.reporter.run_started(track.run_id, external_id=track.external_id)
        track.launched.set()
        if track.latest is None:
            track.latest = job
        await self._sync_loop(track)

    async def _ensure_watch(self, namespace: str) -> None:
        if namespace in self._watches:
            return
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        watch = JobWatch(self.api, namespace, RUN_SELECTOR, queue, asyncio.get_running_loop(),
                         timeout_seconds=self._watch_timeout)
        task = asyncio.create_task(self._consume(namespace, queue), name=f"jobs-{namespace}")
        self._watches[namespace] = (watch, task)
        watch.start()

    # -- following Jobs -------------------------------------------------------------------

    async def _consume(self, namespace: str, queue: asyncio.Queue[WatchEvent]) -> None:
        while True:
            event = await queue.get()
            try:
                if event.kind == "SYNC":
                    present = set()
                    for job in event.jobs:
                        present.add(_run_id(job))
                        self._on_job(job)
                    for track in list(self._runs.values()):
                        if (track.namespace == namespace and track.launched.is_set()
                                and track.run_id not in present and not track.done):
                            await self._vanished(track, None)
                elif event.kind == "DELETED" and event.job is not None:
                    gone = self._runs.get(_run_id(event.job))
                    if gone is not None:
                        await self._vanished(gone, event.job)
                elif event.job is not None:
                    self._on_job(event.job)
            except Exception:
                logger.exception("handling a %s event for jobs in %s failed", event.kind,
                                 namespace)

    def _on_job(self, job: Obj) -> None:
        track = self._runs.get(_run_id(job))
        if track is not None:
            self._schedule(track, job)

    def _schedule(self, track: _Tracked, job: Obj) -> None:
        """Sync a run with its newest Job object; bursts of events coalesce into one sync."""
        track.latest = job
        if track.syncing is None or track.syncing.done():
            track.syncing = asyncio.create_task(self._sync_loop(track),
                                                name=f"sync-{track.run_id}")

    async def _sync_loop(self, track: _Tracked) -> None:
        await track.launched.wait()
        while track.latest is not None and not track.done:
            job, track.latest = track.latest, None
            try:
                await self._sync(track, job)
            except ExecutorError as exc:
                logger.warning("following run %s: %s", track.run_id, exc,
                               extra={"run_id": track.run_id})
            except Exception:
                logger.exception("following run %s failed", track.run_id,
                                 extra={"run_id": track.run_id})

    async def _sync(self, track: _Tracked, job: Obj) -> None:
        track.uid = job["metadata"].get("uid") or track.uid
        status = job.get("status") or {}
        if not status and not track.attempts:
            return  # a new Job: no pods yet, and the controller's status update will come
        pods = await self._pods(track)
        for pod in pods:
            await self._sync_pod(track, pod)
        outcome = job_outcome(job)
        if outcome is None:
            return
        code = last_exit_code(pods)
        if outcome.state is RunState.SUCCEEDED:
            code = 0
        reason = outcome.reason
        if outcome.state is RunState.FAILED and code is not None and reason:
            reason += f"; last exit code {code}"
        await self._finish(track, outcome.state, reason, code)

    async def _pods(self, track: _Tracked) -> list[PodState]:
        if not track.uid:
            return []
        items = await self.api.list_pods(track.namespace, f"{CONTROLLER_UID}={track.uid}")
        states = [pod_state(p, CONTAINER) for p in items]
        return sorted(states, key=lambda p: (p.created, p.name))

    async def _sync_pod(self, track: _Tracked, pod: PodState) -> None:
        if pod.name not in track.attempts:
            index = max(track.attempts.values(), default=0) + 1
            track.attempts[pod.name] = index
            await self.reporter.attempt_started(
                track.run_id, index, log_path=self._logs.location(track.run_id, index),
                handle=pod.name)
        index = track.attempts[pod.name]
        if (pod.started or pod.finished) and pod.name not in track.log_tasks and (
                pod.name not in track.finished):
            track.log_tasks[pod.name] = asyncio.create_task(
                self._copy_log(track, pod.name, index, follow=pod.finished is None),
                name=f"log-{pod.name}")
        if pod.finished is not None and pod.name not in track.finished:
            await self._drain(track, pod.name)
            track.finished.add(pod.name)
            await self.reporter.attempt_finished(track.run_id, index, pod.finished,
                                                 exit_code=pod.exit_code,
                                                 reason=track.mask(pod.reason))

    async def _copy_log(self, track: _Tracked, pod: str, index: int, *, follow: bool) -> None:
        """Copy one pod's log into the LogStore (masked), following it while it runs; after a
        restart or on another replica, from the line after the last one kept."""
        if track.withheld:
            writer = await self._logs.writer(track.run_id, index, track.masker)
            writer.line(f"the log of pod {pod} is not copied: {track.withheld}")
            await writer.close()
            return
        end = await self._logs.stored_end(track.run_id, index)
        if end is not None and end.full:
            return  # the attempt's log reached its limit: nothing more is kept
        after = end.stamp if end is not None else None
        loop = asyncio.get_running_loop()
        try:
            response = await self.api.open_log(
                track.namespace, pod, CONTAINER, follow=follow, timestamps=True,
                since_seconds=since_seconds(after) if after else None)
        except (ApiException, ExecutorError) as exc:
            if end is None:
                writer = await self._logs.writer(track.run_id, index, track.masker)
                writer.line(f"log of pod {pod} not available: {_api_message(exc)}")
                await writer.close()
            return
        if end is not None and after is None:
            # Kept without timestamps (only jobbot's own lines): the pod's log is the whole
            # truth while it exists, so copy it again whole.
            await self._logs.clear(track.run_id, index)
        writer = await self._logs.writer(track.run_id, index, track.masker)
        lines = StampedLines(writer, after)
        stopped = threading.Event()

        def pump() -> None:
            try:
                for chunk in response.stream(65536):
                    loop.call_soon_threadsafe(lines.feed, chunk)
            except Exception as exc:  # noqa: BLE001  (the stream was closed or dropped)
                if not stopped.is_set():  # not closed by us: say so in the log
                    loop.call_soon_threadsafe(writer.line,
                                              f"log stream ended: {type(exc).__name__}")
            finally:
                response.release_conn()

        try:
            await asyncio.to_thread(pump)
        except asyncio.CancelledError:
            stopped.set()
            interrupt(response)
            raise
        finally:
            lines.close()
            await writer.close()

    async def _drain(self, track: _Tracked, pod: str) -> None:
        """Let a finished pod's log copy end, so the attempt's log is whole when it is final."""
        task = track.log_tasks.get(pod)
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=self._log_drain)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _finish(self, track: _Tracked, state: RunState, reason: str | None,
                      exit_code: int | None) -> None:
        if track.done:
            return
        track.done = True
        reason = track.mask(reason)
        for pod, index in sorted(track.attempts.items(), key=lambda item: item[1]):
            if pod in track.finished:
                continue
            await self._drain(track, pod)
            track.finished.add(pod)
            await self.reporter.attempt_finished(track.run_id, index, state, exit_code=None,
                                                 reason=reason)
        if track.params_secret:
            await self._drop_params(track.namespace, track.params_secret)
        await self.reporter.run_finished(track.run_id, state, exit_code=exit_code, reason=reason)
        self._runs.pop(track.run_id, None)

    async def _vanished(self, track: _Tracked, job: Obj | None) -> None:
        """The Job is gone: by our cancel, someone else's, its TTL, or a hand in kubectl."""
        if track.done:
            return
        outcome = job_outcome(job) if job else None
        if outcome is not None:
            await self._finish(track, outcome.state, outcome.reason, None)
            return
        actor = await self.reporter.cancel_requested_by(track.run_id)
        if actor:
            await self._finish(track, RunState.CANCELLED, f"cancelled by {actor}", None)
        else:
            await self._finish(track, RunState.FAILED,
                               f"its Kubernetes Job {track.external_id} was deleted before it "
                               "finished (not by jobbot)", None)

    # -- cancel, restart, stop ------------------------------------------------------------

    def _where(self, run: Run) -> tuple[str, str]:
        if run.external_id and "/" in run.external_id:
            namespace, name = run.external_id.split("/", 1)
            return namespace, name
        return self._namespace_of(run.app), job_name(run.job, run.number, run.id)

    async def cancel(self, run: Run, actor: str) -> bool:
        track = self._runs.get(run.id)
        namespace, name = (track.namespace, track.name) if track else self._where(run)
        await self.api.delete_job(namespace, name)
        if track is None:
            if run.secret_parameters:  # the Job's deletion takes it too, in the background
                await self._drop_params(namespace, params_secret_name(name))
            return False  # the service settles it: nobody here follows it
        await self._finish(track, RunState.CANCELLED, f"cancelled by {actor}", None)
        return True

    async def reconcile(self, runs: list[tuple[Run, list[Attempt]]]) -> None:
        for run, attempts in runs:
            if run.id in self._runs:
                continue
            namespace, name = self._where(run)
            job = await self.api.get_job(namespace, name)
            if job is None:
                if run.secret_parameters:  # gone with its Job, unless the Job was orphaned
                    await self._drop_params(namespace, params_secret_name(name))
                for attempt in attempts:
                    if attempt.finished_at is None:
                        await self.reporter.attempt_finished(
                            run.id, attempt.index, RunState.FAILED, exit_code=None,
                            reason="its pod is gone")
                what = "was never created" if run.state == RunState.QUEUED.value else (
                    "no longer exists (deleted, or removed by its TTL)")
                await self.reporter.run_finished(
                    run.id, RunState.FAILED,
                    reason=f"its Kubernetes Job {namespace}/{name} {what} while jobbot was "
                           "not watching; marked failed at start-up")
                continue
            params = _params_secret(job)
            # (A Job being deleted lost its Secret to a cancel: it vanishes, as cancels do.)
            if params and job_outcome(job) is None and not job["metadata"].get(
                    "deletionTimestamp") and (await self.api.read_secret(namespace,
                                                                        params)) is None:
                await self._never_given(run, attempts, namespace, name, params)
                continue
            masker, withheld = await self._adopted_masker(run, namespace, job)
            track = _Tracked(run.id, namespace, name, masker, uid=job["metadata"].get("uid"),
                             withheld=withheld, params_secret=params)
            for attempt in attempts:
                if attempt.handle:
                    track.attempts[attempt.handle] = attempt.index
                    if attempt.finished_at is not None:
                        track.finished.add(attempt.handle)
            self._runs[run.id] = track
            await self._ensure_watch(namespace)
            if run.state == RunState.QUEUED.value:
                await self.reporter.run_started(run.id, external_id=track.external_id)
            logger.info("adopted Job %s of run %s", track.external_id, run.id,
                        extra={"run_id": run.id})
            track.launched.set()
            self._schedule(track, job)

    async def _never_given(self, run: Run, attempts: list[Attempt], namespace: str, name: str,
                           secret: str) -> None:
        """Fail an adopted run whose Job waits for a Secret of secret parameters that was never
        made (jobbot stopped between the two creates): jobbot has no way to give it the
        values now, and its pods would wait for ever."""
        await self._drop_job(namespace, name)
        reason = (f"its Secret {namespace}/{secret} with the values of its secret parameters "
                  "was never created (jobbot stopped while starting it); its Job was deleted "
                  "at start-up")
        for attempt in attempts:
            if attempt.finished_at is None:
                await self.reporter.attempt_finished(run.id, attempt.index, RunState.FAILED,
                                                     exit_code=None, reason=reason)
        await self.reporter.run_finished(run.id, RunState.FAILED, reason=reason)

    async def _adopted_masker(self, run: Run, namespace: str,
                              job: Obj) -> tuple[Masker, str | None]:
        """The masker a launch would have built, rebuilt after a restart: sensitive values of
        the job's `env` (as defined now, and as its Job's pods got it) and of the run's
        overrides, and the values of the Secrets its pods get (the Job's `envFrom`, which is
        what the launch gave it); and why logs are withheld if a Secret cannot be read."""
        container = _container(job)
        env = [(e.get("name", ""), e.get("value")) for e in container.get("env") or []]
        env += list(run.overrides.items())
        spec = self._job_spec(run)
        hidden: frozenset[str] = frozenset()
        if spec is not None:
            env += list(spec.env.items())
            hidden = secret_parameters(spec)
        sensitive = [v for k, v in env if isinstance(v, str)
                     and (is_sensitive_key(str(k)) or k in hidden)]
        names = [(ref.get("secretRef") or {}).get("name") for ref in container.get("envFrom")
                 or []]
        names.append(_params_secret(job))
        try:
            values = await secret_values(self.api, namespace,
                                         [n for n in names if isinstance(n, str) and n])
        except SecretMissing as exc:
            withheld = f"Secret {exc.where} no longer exists, so its values cannot be masked"
        except ExecutorError as exc:
            withheld = str(exc)
        else:
            return Masker(secret_forms((*values, *sensitive))), None
        logger.warning("adopted run %s: its pod logs are not copied: %s", run.id, withheld,
                       extra={"run_id": run.id})
        return Masker(secret_forms(sensitive)), withheld

    def _job_spec(self, run: Run) -> JobSpec | None:
        if self._job_of is None:
            return None
        try:
            return self._job_of(run.app, run.job)
        except JobbotError:
            return None  # no longer defined: the Job's own pod template still says enough

    async def shutdown(self, reason: str) -> None:
        """Stop following; the Jobs keep running and the next jobbot process adopts them."""
        tasks: list[asyncio.Task[Any]] = []
        for watch, task in self._watches.values():
            watch.stop()
            task.cancel()
            tasks.append(task)
        self._watches.clear()
        for track in self._runs.values():
            pending = [*track.log_tasks.values()] + ([track.syncing] if track.syncing else [])
            for task in pending:
                if not task.done():
                    task.cancel()
                    tasks.append(task)
        self._runs.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        logger.info("stopped following Kubernetes Jobs (%s); they keep running", reason)


def _container(job: Obj) -> Obj:
    """The job container of a Job's pod template (empty if the object is not jobbot's)."""
    spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or []
    mine = [c for c in containers if c.get("name") == CONTAINER]
    found: Obj = mine[0] if mine else {}
    return found


def secret_env(launch: Launch) -> frozenset[str]:
    """The names of the run's environment whose values go into its Secret, never its Job:
    its job's `secret: true` parameters, and those its run was given sealed."""
    names = secret_parameters(launch.job) | set(launch.run.secret_parameters)
    return frozenset(name for name in names if name in launch.env)


def _params_secret(job: Obj) -> str | None:
    """The run's Secret of secret parameters, if its Job's container refers to it."""
    wanted = params_secret_name(job["metadata"]["name"])
    for var in _container(job).get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("name") == wanted:
            return wanted
    return None


def _owned_by(obj: Obj, uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def _run_id(job: Obj) -> str:
    return str(((job.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN_ID, ""))


def _api_message(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        import json

        try:
            body = json.loads(exc.body or "{}")
        except ValueError:
            body = {}
        return f"HTTP {exc.status}: {body.get('message') or exc.reason}"
    return str(exc)

"""JobService: the one API the Slack bot, the GitHub App, the pages and the CLI call."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from core.approvals import spec_digest
from core.catalog import Catalog, JobRef
from core.errors import BadInput, Conflict, ExecutorError, NotFound, PermissionDenied
from core.events import Changes
from core.executors.base import Executor, Launch, SecretKeys
from core.locks import request_digest
from core.logs import LogStore
from core.masking import is_sensitive_key
from core.metrics import QUEUE_DEPTH, RUN_DURATION, RUNS_FINISHED, RUNS_STARTED
from core.models import Attempt, JobState, Run, RunApproval, RunState, utcnow
from core.numbers import INT32_MAX, bounded_int
from core.overrides import check_values
from core.parameters import Parameters, check_parameters
from core.policy import Action, Actor, decide, may_approve
from core.procs import ProcessId
from core.replicas import Liveness, Replica
from core.run_ids import is_run_id
from core.sealing import Sealer, Unsealable
from core.spec import JobSpec
from core.store import ActiveRun, AuditRecord, Decision, LinePlace, NewRun, ScheduleRow, Store
from core.store.approvals import APPROVED, DENIED, changed_reason

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
_RUN_NUMBER = re.compile(r"(?:(?P<app>[a-z0-9-]+)/)?(?P<job>[a-z0-9-]+)#(?P<number>[0-9]+)")
# Lines per step when reading a finished attempt in batches.
_READ_BATCH = 5000


@dataclass(frozen=True)
class TriggerResult:
    """The run a trigger produced (or found, for a repeated idempotency key)."""

    run: Run
    created: bool
    # Other runs of the job still queued or running when this one was triggered.
    active: list[ActiveRun] = field(default_factory=list)
    # The request was like one already waiting for its lock: `run` is that run, joined.
    joined: bool = False


@dataclass(frozen=True)
class ApprovalResult:
    """What an approval or denial did: `outcome` is recorded (more approvals needed),
    released (approved: the run started) or denied; `approved` names who approved so far."""

    run: Run
    outcome: str
    approved: list[str]
    required: int


@dataclass(frozen=True)
class Slot:
    """A cron slot to record in a batch: a run, or a skipped slot when `skipped` gives why."""

    job: JobRef
    scheduled_for: datetime
    idempotency_key: str
    skipped: str | None = None
    origin: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSummary:
    app: str
    name: str
    description: str
    schedule: tuple[str, ...]
    timezone: str
    paused: bool
    paused_by: str | None
    last_run: Run | None
    active: list[Run]


@dataclass(frozen=True)
class RunDetail:
    run: Run
    attempts: list[Attempt]

    def missing_attempt(self, attempt: int, *, follow: bool = False) -> str | None:
        """Why the run has no attempt `attempt` to show the log of, or None if it has one (or
        may still start it: a run that is followed and not over)."""
        if any(a.index == attempt for a in self.attempts):
            return None
        if attempt >= 1 and follow and not self.run.run_state.is_final:
            return None
        count = len(self.attempts)
        has = ("no attempts yet" if count == 0 else
               f"{count} attempt" if count == 1 else f"{count} attempts")
        return f"{self.run.label} has {has}: there is no attempt {attempt}"


def unscheduled(job: JobSpec, verb: str) -> BadInput:
    """The error for pausing (or resuming) a job without a schedule: there is nothing to do."""
    return BadInput(f"{job.name} has no schedule: nothing to {verb}")


class JobService:
    """Trigger, rerun, cancel, pause, resume, list, status, history and logs of runs."""

    def __init__(
        self,
        catalog: Catalog,
        store: Store,
        executor: Executor,
        logs: LogStore,
        *,
        owner: ProcessId | None = None,
        changes: Changes | None = None,
        replica: Replica | None = None,
        sealer: Sealer | None = None,
        launches_for_others: bool = True,
    ) -> None:
        self.catalog = catalog
        self.sealer = sealer or Sealer()
        self.store = store
        self.executor = executor
        self.log_store = logs
        self.owner = owner or ProcessId.current()
        self.changes = changes or Changes()
        # This process's lease; its heartbeat takes over the runs of replicas that died.
        self.replica = replica or Replica(store, self.owner)
        self.replica.on_beat("runs", self._beat)
        self.replica.on_beat("approvals", self._expire_approvals)
        # Runs whose lock was handed to this process, launched one after the other (a launch
        # that fails hands the lock on again: a loop, not a recursion).
        self._granted: deque[Run] = deque()
        self._granting = False
        # A server launches the next run in line itself when it hands a lock on; a one-shot
        # process (`jobbot run`) would stop it on exit, so it leaves the run to its owner,
        # which launches it at its heartbeat.
        self._claimer = str(self.owner) if launches_for_others else None
        # Runs being launched here now, or due to be: a heartbeat does not launch them again.
        self._launching: set[str] = set()
        executor.bind(self)

    async def _db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        # The store is synchronous (SQLModel); keep the event loop free while it works.
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- triggering -----------------------------------------------------------------------

    async def trigger(
        self,
        job_name: str,
        actor: Actor,
        *,
        ref: str | None = None,
        sha: str | None = None,
        image: str | None = None,
        overrides: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        origin: dict[str, Any] | None = None,
        scheduled_for: datetime | None = None,
        rerun_of: str | None = None,
    ) -> TriggerResult:
        """Start a run of `job_name` (checked against policy); a known key returns its run."""
        target = self.catalog.resolve(job_name)
        await self._authorize(target, Action.RUN, actor)
        checked = await self.check_parameters(target, overrides)
        approval = target.job.approval
        lock = target.job.lock
        new = NewRun(
            app=target.app.app, job=target.job.name, source=actor.source.value, actor=actor.id,
            ref=ref, sha=sha, image=image or target.job.image, overrides=dict(checked.values),
            secret_parameters=self.sealer.seal(checked.secrets),
            origin=origin or {}, idempotency_key=idempotency_key, scheduled_for=scheduled_for,
            rerun_of=rerun_of, executor=self.executor.name,
            # This process follows the run: other replicas leave it alone while its lease lives.
            owner=str(self.owner), lock=lock,
            # A run given secret values never joins another: whether it would join would tell
            # its requester whether a guess of another run's secret was right.
            request_digest=request_digest(self.sealer, ref=ref, sha=sha,
                                          image=image or target.job.image,
                                          values=checked.values, secrets=checked.secrets)
            if lock and not checked.secrets else None,
        )
        if approval is not None:
            # It waits for its approvals, bound to the job's definition as it is now.
            new.state = RunState.NEEDS_APPROVAL
            new.spec_digest = spec_digest(target.job)
            new.approval_expires_at = utcnow() + timedelta(seconds=approval.expires)
        audit = AuditRecord(actor=actor.id, source=actor.source.value, action="run",
                            target=target.key,
                            result="started" if approval is None else "needs approval")
        outcome = await self._db(self.store.create_run, new, audit)
        if outcome.created:
            QUEUE_DEPTH.labels(outcome.run.app, outcome.run.job).inc()
            await self._launch(target, outcome.run)
            if lock:  # it may be waiting for its lock now
                latest = await self._db(self.store.get_run, outcome.run.id)
                outcome = dataclasses.replace(outcome, run=latest or outcome.run)
        elif outcome.joined:
            await self._audit(actor, "run", target.key, "joined",
                              f"{outcome.run.label} ({outcome.run.id})")
        return TriggerResult(outcome.run, outcome.created, outcome.active, outcome.joined)

    async def check_overrides(self, target: JobRef, overrides: Mapping[str, str] | None, *,
                              rerun_of: Run | None = None) -> dict[str, str]:
        """The environment a run of `target` gets from `overrides` (check_parameters), secret
        parameter values included."""
        return (await self.check_parameters(target, overrides, rerun_of=rerun_of)).env()

    async def check_parameters(self, target: JobRef, given: Mapping[str, str] | None, *,
                               rerun_of: Run | None = None) -> Parameters:
        """The checked values, if a run of `target` may have them: the names rule
        (core.overrides, with the keys of the job's secrets when the executor can read them),
        then the job's parameters (types, required, defaults). BadInput (ParameterErrors for
        parameters, by name) says what is refused and why. Every trigger passes here; front
        ends that ask something first (a confirmation, a form) call it before asking."""
        given = dict(given or {})
        if not given and not target.job.parameters:
            return Parameters()
        keys: frozenset[str] = frozenset()
        # The secrets' keys matter only for names the run would set (given, or defaults).
        sets_names = bool(given) or any(p.default is not None for p in target.job.parameters)
        if target.job.secrets and sets_names and isinstance(self.executor, SecretKeys):
            keys = await self.executor.secret_keys(target.app, target.job)
        try:
            return check_values(target.job, given, keys)
        except BadInput as exc:
            if rerun_of is None:
                raise
            raise BadInput(f"cannot rerun {rerun_of.label}: {exc}") from None

    def run_values(self, run: Run, changes: Mapping[str, str] | None = None) -> dict[str, str]:
        """What a rerun of `run` is given: its values, its secret parameters opened (unless
        `changes` gives them anew), then `changes`; BadInput if a secret cannot be opened."""
        changes = dict(changes or {})
        sealed = {k: v for k, v in run.secret_parameters.items() if k not in changes}
        try:
            secrets = self.sealer.open(sealed)
        except Unsealable as exc:
            raise BadInput(f"cannot rerun {run.label}: the value of {exc} was sealed with "
                           "another JOBBOT_SECRET_KEY; give it again") from None
        return {**run.overrides, **secrets, **changes}

    async def record_skipped(self, job_name: str, *, reason: str, scheduled_for: datetime,
                             idempotency_key: str) -> TriggerResult:
        """Record a cron slot that was not run (missed, forbidden, paused), visibly."""
        target = self.catalog.resolve(job_name)
        new = NewRun(
            app=target.app.app, job=target.job.name, source="schedule", actor="schedule",
            state=RunState.SKIPPED, reason=reason, scheduled_for=scheduled_for,
            idempotency_key=idempotency_key, executor=self.executor.name,
        )
        outcome = await self._db(self.store.create_run, new)
        if outcome.created:
            RUNS_FINISHED.labels(outcome.run.app, outcome.run.job, outcome.run.state).inc()
            self.changes.notify()
        return TriggerResult(outcome.run, outcome.created)

    async def record_refused(self, target: JobRef, actor: Actor, *, reason: str,
                             ref: str | None = None, sha: str | None = None,
                             image: str | None = None, idempotency_key: str | None = None,
                             origin: dict[str, Any] | None = None) -> TriggerResult:
        """Record a run that policy refused to start on its own (after a push), as a
        `skipped` run saying why: its run events reach the commit's check run and the job's
        Slack channel, so the refusal is seen where the run would have been."""
        new = NewRun(
            app=target.app.app, job=target.job.name, source=actor.source.value, actor=actor.id,
            state=RunState.SKIPPED, reason=reason, ref=ref, sha=sha, image=image,
            origin=origin or {}, idempotency_key=idempotency_key, executor=self.executor.name,
        )
        # No audit line here: the refusal itself was audited where policy refused it.
        outcome = await self._db(self.store.create_run, new)
        if outcome.created:
            RUNS_FINISHED.labels(outcome.run.app, outcome.run.job, outcome.run.state).inc()
            self.changes.notify()
        return TriggerResult(outcome.run, outcome.created)

    async def record_slots(self, slots: list[Slot],
                           schedule_states: Sequence[ScheduleRow] = ()) -> list[Run]:
        """Record many cron slots (and the jobs' schedule state) in one transaction and
        launch the runs among them.

        The scheduler's batch path: slots whose key another scheduler already used are left
        out, so every slot is recorded once however many schedulers run.
        """
        executor = self.executor.name
        owner = str(self.owner)
        skipped, queued = RunState.SKIPPED, RunState.QUEUED  # an enum member lookup costs
        news = [NewRun(
            app=s.job.app.app, job=s.job.job.name, source="schedule", actor="schedule",
            state=skipped if s.skipped else queued, reason=s.skipped,
            # A scheduled run gives no values: it gets its parameters' defaults.
            overrides=_defaults(s.job.job) if s.job.job.parameters and not s.skipped else {},
            image=None if s.skipped else s.job.job.image, origin=s.origin,
            scheduled_for=s.scheduled_for, idempotency_key=s.idempotency_key,
            executor=executor, owner=None if s.skipped else owner, lock=s.job.job.lock,
        ) for s in slots]
        # No audit lines: the audit log says what people did. Each slot is already a run
        # (source `schedule`, a skipped one with its reason), kept by the history limits;
        # 10,000 jobs would add 280,000 lines a day, burying every command.
        created = await self._db(self.store.create_runs, news, audit=False,
                                 schedule_states=schedule_states)
        if not created:
            return []
        self.changes.notify()
        if len(created) == len(slots):  # the usual case: the same order, nothing left out
            recorded = list(zip(slots, created, strict=True))
        else:
            by_key = {s.idempotency_key: s for s in slots}
            recorded = [(by_key[c.run.idempotency_key or ""], c) for c in created]
        for slot, outcome in recorded:
            if slot.skipped is None:  # a run, not a skipped slot: start it
                await self._launch(slot.job, outcome.run, notify=False)
        self.changes.notify()
        return [c.run for c in created]

    async def prune_history(self, limits: dict[tuple[str, str], tuple[int, int, int]], *,
                            touched_after: int | None = None) -> int:
        """Keep (succeeded, failed, skipped) finished runs per job; delete older runs and logs
        (only of the jobs with a run that reached a final state after event `touched_after`,
        if given)."""
        deleted = await self._db(self.store.prune_history, limits, touched_after)
        await self._db(self._delete_logs, deleted)  # one thread hop, not one per run
        return len(deleted)

    def _delete_logs(self, run_ids: list[str]) -> None:
        self.log_store.delete_runs(run_ids)

    async def rerun(self, run_ref: str, actor: Actor, *,
                    idempotency_key: str | None = None,
                    origin: dict[str, Any] | None = None,
                    changes: Mapping[str, str] | None = None) -> TriggerResult:
        """A new run of the same job with the same ref, sha, image and values (secret
        parameters too), `changes` applied, if they are all still allowed."""
        old = await self.get_run(run_ref)
        target = self.catalog.resolve(f"{old.app}/{old.job}")
        await self._authorize(target, Action.RUN, actor)
        values = self.run_values(old, changes)
        await self.check_parameters(target, values, rerun_of=old)
        return await self.trigger(
            f"{old.app}/{old.job}", actor, ref=old.ref, sha=old.sha, image=old.image,
            overrides=values, idempotency_key=idempotency_key,
            origin=origin if origin is not None else dict(old.origin), rerun_of=old.id,
        )

    async def record_build(self, app: str, build: str, actor: Actor, *, sha: str, ref: str,
                           idempotency_key: str | None = None,
                           origin: dict[str, Any] | None = None) -> TriggerResult:
        """A build, recorded as a run of the app named after the build, so pages, check runs
        and history show it like any run; the builder reports through run_started/finish_build."""
        self.catalog.app(app).build(build)
        new = NewRun(app=app, job=build, source=actor.source.value, actor=actor.id, ref=ref,
                     sha=sha, origin=origin or {}, idempotency_key=idempotency_key,
                     executor="build", owner=str(self.owner))
        audit = AuditRecord(actor=actor.id, source=actor.source.value, action="build",
                            target=f"{app}/{build}", result="started")
        outcome = await self._db(self.store.create_run, new, audit)
        self.changes.notify()
        return TriggerResult(outcome.run, outcome.created, outcome.active)

    async def finish_build(self, run_id: str, state: RunState, *, image: str | None,
                           reason: str | None = None) -> None:
        if image:
            await self._db(self.store.update_run, run_id, image=image)
        await self.run_finished(run_id, state, reason=reason)

    async def _launch(self, target: JobRef, run: Run, *, notify: bool = True) -> None:
        self._launching.add(run.id)
        try:
            await self._gate_and_launch(target, run, notify=notify)
        finally:
            self._launching.discard(run.id)

    async def _gate_and_launch(self, target: JobRef, run: Run, *, notify: bool) -> None:
        # Approvals come first; an approved run then takes its place in its lock's line.
        if await self._approval_gate(target, run) or not await self._lock_gate(target, run):
            return
        overrides = run.overrides
        env = {**target.job.env, **overrides} if overrides else dict(target.job.env)
        sensitive = tuple(v for k, v in env.items() if is_sensitive_key(k)) if env else ()
        if notify:  # a batch notifies once for all its runs
            self.changes.notify()
        if run.secret_parameters:
            try:
                secrets = self.sealer.open(run.secret_parameters)
            except Unsealable as exc:
                await self.run_finished(run.id, RunState.FAILED, reason=(
                    f"could not start: the value of {exc} was sealed with another "
                    "JOBBOT_SECRET_KEY"))
                return
            env.update(secrets)
            sensitive += tuple(secrets.values())
        try:
            await self.executor.launch(Launch(run=run, app=target.app, job=target.job, env=env,
                                              sensitive_values=sensitive))
        except ExecutorError as exc:
            logger.warning("launching run %s failed: %s", run.id, exc, extra={"run_id": run.id})
            await self.run_finished(run.id, RunState.FAILED, reason=f"could not start: {exc}")

    # -- approvals ------------------------------------------------------------------------

    async def _approval_gate(self, target: JobRef, run: Run) -> bool:
        """True if `run` waits for approval instead of starting now: it is waiting already,
        or its job asks for approval and it has not had them (a scheduled run, which then
        starts to wait). A run released by its last approval goes on."""
        if run.run_state is RunState.NEEDS_APPROVAL:
            self.changes.notify()
            return True
        approval = target.job.approval
        if approval is None:
            return False
        digest = spec_digest(target.job)
        if run.spec_digest is not None and run.spec_digest != digest:
            # Approved for a definition that changed since: never launched with this one.
            # Through run_finished: a run that held its lock already hands it on.
            await self.run_finished(run.id, RunState.CANCELLED, reason=changed_reason(run.job))
            return True
        decisions = await self._db(self.store.approvals, run.id)
        approved = [a for a in decisions if a.decision == APPROVED]
        if run.spec_digest == digest and len(approved) >= approval.required:
            return False
        await self._db(self.store.await_approval, run.id, digest,
                       utcnow() + timedelta(seconds=approval.expires))
        self.changes.notify()
        return True

    async def approve(self, run_ref: str, actor: Actor) -> ApprovalResult:
        """`actor` approves a run waiting for approval; the last approval needed starts it."""
        return await self._decide(run_ref, actor, APPROVED)

    async def deny(self, run_ref: str, actor: Actor) -> ApprovalResult:
        """`actor` denies a run waiting for approval: it ends `denied`, saying by whom."""
        return await self._decide(run_ref, actor, DENIED)

    async def _decide(self, run_ref: str, actor: Actor, decision: str) -> ApprovalResult:
        run = await self.get_run(run_ref)
        verb = "approve" if decision == APPROVED else "deny"
        where = f"{run.app}/{run.job}#{run.number}"
        if run.run_state is not RunState.NEEDS_APPROVAL:
            await self._audit(actor, verb, where, "rejected", f"the run is {run.state}")
            raise Conflict(f"{run.label} is not waiting for approval: it is {run.state}")
        try:
            job = self.catalog.resolve(f"{run.app}/{run.job}").job
        except NotFound:
            job = None
        approval = job.approval if job is not None else None
        if job is None or approval is None:
            # Nobody can be checked against rules app.yaml no longer has: the run is never
            # started, and ends at its expiry (or when someone allowed cancels it).
            reason = (f"{run.job} no longer asks for approval in app.yaml, so {run.label} is "
                      "not started; it ends at its expiry, or cancel it")
            await self._audit(actor, verb, where, "rejected", reason)
            raise Conflict(reason)
        digest = spec_digest(job)
        allowed = may_approve(job, actor)
        if not allowed.allowed:
            await self._audit(actor, verb, where, "refused", allowed.reason)
            raise PermissionDenied(allowed.reason)
        if not approval.allow_self and actor.id == run.actor:
            reason = (f"you started {run.label}, so someone else must {verb} it "
                      f"({run.job} has approval self: false)")
            await self._audit(actor, verb, where, "refused", reason)
            raise PermissionDenied(reason)
        decided = await self._db(self.store.decide_approval, Decision(
            run_id=run.id, who=actor.id, display=actor.name, source=actor.source.value,
            decision=decision, digest=digest, required=approval.required,
            owner=str(self.owner), audit_target=where))
        self.changes.notify()
        outcome, latest = decided.outcome, decided.run
        if outcome in ("changed", "expired", "denied"):
            _count_finished(latest)
        if outcome == "not_waiting":
            await self._audit(actor, verb, where, "rejected", f"the run is {latest.state}")
            raise Conflict(f"{latest.label} is not waiting for approval: it is {latest.state}")
        if outcome == "duplicate":
            await self._audit(actor, verb, where, "rejected", "decided already")
            raise Conflict(f"you have already decided on {latest.label}: a person counts once")
        if outcome in ("changed", "expired"):
            raise Conflict(f"{latest.label} was not started: {latest.reason}")
        approved = [a.display for a in decided.approvals if a.decision == APPROVED]
        result = ApprovalResult(latest, outcome, approved, approval.required)
        if outcome == "released":
            await self._launch(self.catalog.resolve(f"{run.app}/{run.job}"), latest)
            result = dataclasses.replace(result, run=await self.get_run(run.id))
        return result

    async def approvals(self, run_id: str) -> list[RunApproval]:
        """Who approved or denied a run, oldest first."""
        return await self._db(self.store.approvals, run_id)

    async def _expire_approvals(self, live: Liveness) -> None:
        """At each heartbeat: end `expired` the runs whose wait for approval is over (of
        several replicas, each run is ended by one: the store's change is conditional)."""
        ended = await self._db(self.store.expire_approvals)
        for run in ended:
            logger.info("run %s expired waiting for approval", run.id, extra={"run_id": run.id})
            _count_finished(run)
        if ended:
            self.changes.notify()

    # -- locks ----------------------------------------------------------------------------

    async def _lock_gate(self, target: JobRef, run: Run) -> bool:
        """Whether a run may start: it names no lock, or holds its lock now. Otherwise it
        waits in the lock's line (state `waiting`), launched when the lock is handed to it."""
        if run.lock is None:
            return True
        held, granted = await self._db(self.store.enter_lock, run.id, self._claimer)
        if not held:
            self.changes.notify()
        if granted is not None:  # the lock was free with runs before this one in line
            await self._take_grant(granted)
        return held

    async def _take_grant(self, run: Run) -> None:
        """A run its lock was just handed to: launched here if it is this process's, else
        left to its owner (a live process launches its own runs at its heartbeat)."""
        if run.owner == str(self.owner):
            await self._launch_granted(run)
        else:
            self.changes.notify()

    async def _launch_granted(self, run: Run) -> None:
        """Launch a run its lock was just handed to (claimed by this process)."""
        if run.id in self._launching:
            return
        self._launching.add(run.id)
        self._granted.append(run)
        if self._granting:
            return  # the loop below, further up, launches it next
        self._granting = True
        try:
            while self._granted:
                granted = self._granted.popleft()
                try:
                    target = self.catalog.resolve(f"{granted.app}/{granted.job}")
                except NotFound:
                    self._launching.discard(granted.id)
                    await self.run_finished(granted.id, RunState.FAILED, reason=(
                        f"could not start: {granted.app}/{granted.job} is no longer defined"))
                    continue
                await self._launch(target, granted)
        finally:
            self._granting = False

    async def line_place(self, run: Run) -> LinePlace | None:
        """Where a waiting run stands in its lock's line (None if it is not waiting)."""
        if run.state != RunState.WAITING.value:
            return None
        return await self._db(self.store.line_place, run)

    async def lock_line(self, run: Run) -> tuple[Run | None, list[Run]]:
        """The holder of a run's lock and the runs waiting for it, first first."""
        if run.lock is None:
            return None, []
        return await self._db(self.store.lock_line, run.app, run.lock)

    # -- cancel, pause, resume ------------------------------------------------------------

    async def cancel(self, run_ref: str, actor: Actor) -> Run:
        """Stop a queued or running run; it ends `cancelled`, saying who cancelled it."""
        run = await self.get_run(run_ref)
        target = self.catalog.resolve(f"{run.app}/{run.job}")
        await self._authorize(target, Action.CANCEL, actor)
        if run.run_state.is_final:
            raise Conflict(f"{run.label} already {run.state}; nothing to cancel")
        if run.run_state is RunState.NEEDS_APPROVAL:
            # Never launched: nothing to stop, it just ends.
            ended = await self._db(self.store.transition, run.id, RunState.CANCELLED,
                                   reason=f"cancelled by {actor.name}")
            if ended is None:
                latest = await self.get_run(run.id)
                raise Conflict(f"{latest.label} already {latest.state}; nothing to cancel")
            await self._audit(actor, "cancel", f"{target.key}#{run.number}", "done")
            _count_finished(ended)
            self.changes.notify()
            return ended
        requested = await self._db(self.store.request_cancel, run.id, actor.name)
        if requested is None:
            latest = await self.get_run(run.id)
            raise Conflict(f"{latest.label} already {latest.state}; nothing to cancel")
        await self._audit(actor, "cancel", f"{target.key}#{run.number}", "requested")
        self.changes.notify()
        if requested.state == RunState.WAITING.value:
            # Not launched: it leaves the line at once, whoever follows it.
            cancelled = await self._db(self.store.cancel_waiting, run.id, actor.name)
            if cancelled is not None:
                _count_finished(cancelled)
                self.changes.notify()
                return cancelled
            requested = await self.get_run(run.id)  # granted meanwhile: cancel it as queued
        if self.executor.drives(run.id):
            await self.executor.cancel(run, actor.name)
            return requested
        live = await self.replica.liveness()
        if not live.gone(requested.owner):
            # Another live process follows it: it reads the request from the database (the
            # local executor's poll, or the follower's next heartbeat) and stops the run.
            return requested
        # Nobody follows it any more (never launched, or its replica died): take it over and
        # settle it here; of two replicas doing so, one claims it.
        if requested.owner is None or requested.owner == str(self.owner) or await self._db(
                self.store.claim_run, run.id, requested.owner, str(self.owner)):
            await self.executor.cancel(requested, actor.name)  # a Kubernetes Job is deleted
            await self.run_finished(run.id, RunState.CANCELLED, reason=f"cancelled by {actor.name}")
        return requested

    async def pause(self, job_name: str, actor: Actor) -> bool:
        """Stop scheduling a job (manual runs still work); False if it was already paused."""
        return await self._set_paused(job_name, actor, True)

    async def resume(self, job_name: str, actor: Actor) -> bool:
        return await self._set_paused(job_name, actor, False)

    async def _set_paused(self, job_name: str, actor: Actor, paused: bool) -> bool:
        target = self.catalog.resolve(job_name)
        action = Action.PAUSE if paused else Action.RESUME
        await self._authorize(target, action, actor)
        if not target.job.is_scheduled:
            # Pausing only stops the scheduler (manual runs still work): without a schedule it
            # would do nothing. Resuming is allowed if a schedule removed since left it paused.
            state = await self._db(self.store.job_state, target.app.app, target.job.name)
            if paused or not state.paused:
                raise unscheduled(target.job, "pause" if paused else "resume")
        changed = await self._db(self.store.set_paused, target.app.app, target.job.name, paused,
                                 actor.name)
        await self._audit(actor, action.value, target.key, "done" if changed else "unchanged")
        return changed

    async def _authorize(self, target: JobRef, action: Action, actor: Actor) -> None:
        decision = decide(target.job, action, actor)
        if not decision.allowed:
            await self._audit(actor, action.value, target.key, "denied", decision.reason)
            raise PermissionDenied(decision.reason)

    async def _audit(self, actor: Actor, action: str, target: str, result: str,
                     detail: str | None = None) -> None:
        await self._db(self.store.audit, AuditRecord(actor=actor.id, source=actor.source.value,
                                                     action=action, target=target,
                                                     result=result, detail=detail))

    async def audit(self, actor: Actor, action: str, target: str, result: str,
                    detail: str | None = None) -> None:
        """Record something a front end did on someone's behalf (e.g. a denied command)."""
        await self._audit(actor, action, target, result, detail)

    # -- reading --------------------------------------------------------------------------

    async def get_run(self, run_ref: str) -> Run:
        """A run by id, or by `job#N` / `app/job#N`."""
        text = run_ref.strip()
        run: Run | None = None
        if is_run_id(text):
            run = await self._db(self.store.get_run, text)
        elif match := _RUN_NUMBER.fullmatch(text):
            job_name = f"{match['app']}/{match['job']}" if match["app"] else match["job"]
            target = self.catalog.resolve(job_name)
            number = bounded_int(match["number"], 1, INT32_MAX, name="a run number")
            run = await self._db(self.store.run_by_number, target.app.app, target.job.name,
                                 number)
        else:
            raise BadInput(f"{run_ref!r} is not a run: give its id or JOB#NUMBER (e.g. migrate#4)")
        if run is None:
            raise NotFound(f"no run {run_ref!r}")
        return run

    async def detail(self, run_ref: str) -> RunDetail:
        run = await self.get_run(run_ref)
        return RunDetail(run, await self._db(self.store.attempts, run.id))

    async def runs(self, job_name: str | None = None, *, limit: int = 20,
                   before_number: int | None = None) -> list[Run]:
        """Newest first; for one job, or all jobs."""
        if job_name:
            target = self.catalog.resolve(job_name)
            return await self._db(self.store.list_runs, app=target.app.app, job=target.job.name,
                                  limit=limit, before_number=before_number)
        return await self._db(self.store.list_runs, limit=limit)

    async def history(self, job_name: str, *, limit: int = 20,
                      before_number: int | None = None) -> list[Run]:
        return await self.runs(job_name, limit=limit, before_number=before_number)

    async def jobs(self) -> list[JobSummary]:
        return [await self.job_summary(ref.key) for ref in self.catalog.jobs()]

    async def job_summary(self, job_name: str) -> JobSummary:
        target = self.catalog.resolve(job_name)
        app, job = target.app.app, target.job.name
        state: JobState = await self._db(self.store.job_state, app, job)
        last = await self._db(self.store.list_runs, app=app, job=job, limit=1)
        active = await self._db(self.store.active_runs, app, job)
        return JobSummary(app, job, target.job.description, target.job.schedule,
                          target.job.timezone, state.paused, state.paused_by,
                          last[0] if last else None, active)

    async def wait(self, run_id: str, poll: float = 0.5) -> Run:
        """Until the run is final (seen through the store, so runs of other processes work)."""
        while True:
            changed = self.changes.snapshot()  # before the read: no change slips past
            run = await self.get_run(run_id)
            if run.run_state.is_final:
                return run
            await self.changes.wait(poll, since=changed)

    async def logs(self, run_ref: str, *, attempt: int | None = None,
                   follow: bool = False) -> AsyncIterator[tuple[int, str]]:
        """(attempt, line) pairs, attempt by attempt; with `follow`, until the run ends."""
        async for index, lines in self.log_batches(run_ref, attempt=attempt, follow=follow):
            for line in lines:
                yield index, line

    async def log_batches(self, run_ref: str, *, attempt: int | None = None,
                          follow: bool = False) -> AsyncIterator[tuple[int, list[str]]]:
        """(attempt, lines) as they are read, attempt by attempt; with `follow`, until the run
        ends. For readers of long logs: a step per read, not per line."""
        run = await self.get_run(run_ref)
        index = attempt or 1
        while True:
            # Taken before the query: an attempt that starts while it runs still wakes us.
            changed = self.changes.snapshot()
            known = {a.index: a for a in await self._db(self.store.attempts, run.id)}
            if index in known:
                if follow and known[index].finished_at is None:
                    finished = self._attempt_finished_check(run.id, index)
                    async for lines in self.log_store.follow_batches(run.id, index, finished):
                        yield index, lines
                else:
                    async for batch in self.log_store.read_batches(run.id, index, _READ_BATCH):
                        yield index, batch
                if attempt is not None:
                    return
                index += 1
                continue
            if not follow or (await self.get_run(run.id)).run_state.is_final:
                return
            await self.changes.wait(0.5, since=changed)

    def _attempt_finished_check(self, run_id: str, index: int) -> Callable[[], Awaitable[bool]]:
        async def finished() -> bool:
            attempts = await self._db(self.store.attempts, run_id)
            return any(a.index == index and a.finished_at is not None for a in attempts)

        return finished

    # -- start-up and shutdown ------------------------------------------------------------

    async def reconcile(self) -> int:
        """Settle runs left unfinished by processes that are gone, making them this one's
        (Kubernetes Jobs are followed again, local runs end failed); runs a live replica
        follows are left to it. Returns how many runs were taken."""
        me = str(self.owner)
        live = await self.replica.liveness()
        taken = []
        for run in await self._db(self.store.unfinished_runs, self.executor.name):
            if self.executor.drives(run.id) or (run.owner != me and not live.gone(run.owner)):
                continue  # followed here already, or by a live process
            if run.owner == me or await self._db(self.store.claim_run, run.id, run.owner, me):
                taken.append(run)
        await self._adopt(taken)
        await self._grant_lost_locks()
        return len(taken)

    async def _adopt(self, runs: list[Run]) -> None:
        """Hand runs taken from a gone process (each `owner` still that process) to the
        executor's adoption path: a Kubernetes Job is watched again and its log copied on
        from where it stopped; a local run, whose processes died with it, ends failed."""
        pairs = []
        for run in runs:
            if run.state == RunState.WAITING.value:
                continue  # not launched: it stays in its lock's line, followed here now
            attempts = await self._db(self.store.attempts, run.id)
            if run.lock is not None and run.state == RunState.QUEUED.value and not attempts:
                # Its lock was granted (or about to be) but it was never started: start it
                # here, through the gate (a launch adopts a Kubernetes Job that exists).
                await self._launch_granted(run)
                continue
            pairs.append((run, attempts))
        if pairs:
            await self.executor.reconcile(pairs)

    async def _beat(self, live: Liveness) -> None:
        """At each heartbeat: take over what replicas whose lease expired followed, and stop
        runs this process follows that another process was asked to cancel."""
        me = str(self.owner)
        followed = self.executor.followed()
        if followed:
            # Taken over while this replica was taken for dead (a pause past the expiry):
            # one replica follows a run, so this one lets go.
            owners = await self._db(self.store.run_owners, followed)
            for run_id in followed:
                if owners.get(run_id, me) != me:
                    logger.warning("run %s is followed by %s now: letting go", run_id,
                                   owners[run_id], extra={"run_id": run_id})
                    await self.executor.release(run_id)
        for dead in live.expired():
            runs = await self._db(self.store.take_over_replica, dead, me, self.executor.name)
            if runs is None:
                continue  # still alive after all, or another replica took it
            logger.warning("replica %s stopped renewing its lease: taking over its %d "
                           "unfinished runs", dead, len(runs), extra={"replica": dead})
            await self._adopt(runs)
        for run in await self._db(self.store.cancel_requests, me):
            if self.executor.drives(run.id) and run.cancel_requested_by:
                await self.executor.cancel(run, run.cancel_requested_by)
        await self._grant_lost_locks()

    async def _grant_lost_locks(self) -> None:
        """Grant and launch here the locks that are free while runs wait for them (the
        replica that was to launch the next run died first)."""
        for run in await self._db(self.store.lost_grants, self._claimer):
            logger.warning("lock %s of %s was free with runs waiting: granted to run %s",
                           run.lock, run.app, run.id, extra={"run_id": run.id})
            await self._take_grant(run)
        for run in await self._db(self.store.granted_to, str(self.owner)):
            if not self.executor.drives(run.id) and run.id not in self._launching:
                await self._launch_granted(run)

    async def shutdown(self, reason: str = "jobbot stopped") -> None:
        await self.executor.shutdown(reason)
        # What it followed (Kubernetes Jobs keep running) is taken over at once, not after
        # the lease's expiry.
        await self.replica.end()

    # -- Reporter: what the executor tells us ---------------------------------------------

    async def run_started(self, run_id: str, *, external_id: str | None = None) -> None:
        run = await self._db(self.store.transition, run_id, RunState.RUNNING,
                             external_id=external_id)
        if run is not None:
            RUNS_STARTED.labels(run.app, run.job).inc()
            QUEUE_DEPTH.labels(run.app, run.job).dec()
        self.changes.notify()

    async def attempt_started(self, run_id: str, index: int, *, log_path: str | None,
                              handle: str | None) -> None:
        await self._db(self.store.start_attempt, run_id, index, log_path=log_path, handle=handle)
        self.changes.notify()

    async def attempt_finished(self, run_id: str, index: int, state: RunState, *,
                               exit_code: int | None, reason: str | None = None) -> None:
        await self._db(self.store.finish_attempt, run_id, index, state, exit_code=exit_code,
                       reason=reason)
        self.changes.notify()

    async def run_finished(self, run_id: str, state: RunState, *, exit_code: int | None = None,
                           reason: str | None = None) -> None:
        # A run that held a lock hands it on in the same transaction; a server claims the
        # next run in line and launches it at once.
        handed = await self._db(self.store.transition_handing_over, run_id, state,
                                exit_code=exit_code, reason=reason, hands_over=True,
                                claimer=self._claimer)
        run = handed.run
        if run is None:
            logger.info("run %s was already final; %s ignored", run_id, state.value,
                        extra={"run_id": run_id})
        else:
            _count_finished(run)
        self.changes.notify()
        if handed.granted is not None:
            await self._take_grant(handed.granted)

    async def cancel_requested_by(self, run_id: str) -> str | None:
        run = await self._db(self.store.get_run, run_id)
        return run.cancel_requested_by if run else None


def _defaults(job: JobSpec) -> dict[str, str]:
    """The values a run given none gets (app.yaml makes sure a scheduled job needs none)."""
    return dict(check_parameters(job, {}).values)


def _count_finished(run: Run) -> None:
    RUNS_FINISHED.labels(run.app, run.job, run.state).inc()
    if run.started_at is None:
        # It never left the queue (cancelled while queued, or could not start).
        QUEUE_DEPTH.labels(run.app, run.job).dec()
    elif run.finished_at is not None:
        RUN_DURATION.labels(run.app, run.job).observe(
            (run.finished_at - run.started_at).total_seconds())

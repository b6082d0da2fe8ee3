"""The cron scheduler: fires each slot of each scheduled job exactly once, visibly.

A slot is (app, job, scheduled time); its idempotency key makes the runs table refuse a
second record of it, so several schedulers (replicas, a restart in the same second) can run
at once. Every slot ends up as a run or as a `skipped` run saying why (missed while jobbot
was down, paused, suspended, forbidden by the concurrency policy, past starting_deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from core.catalog import JobRef
from core.cron import CronSeries, Schedule, expand, fingerprint
from core.errors import Conflict, NotFound
from core.metrics import SCHEDULER_LAG
from core.models import Run
from core.policy import Actor
from core.service import JobService, Slot
from core.spec import AppSpec, JobSpec

logger = logging.getLogger(__name__)

# After a long outage a job may have missed thousands of slots (a per-minute job down for a
# week: 10,080). Recording each would flood its history and the database for no insight, so
# at most MAX_SKIPPED_RECORDED of the most recent missed slots are recorded one by one and the
# oldest of them says how many earlier ones were left out.
MAX_SKIPPED_RECORDED = 100
# Slots further back than this are not even enumerated (that alone could take seconds).
MAX_LOOKBACK = timedelta(days=31)
# Skipped slots kept per job by history pruning (succeeded/failed come from app.yaml).
SKIPPED_KEPT = MAX_SKIPPED_RECORDED
# With nothing due, wake up this often anyway to notice app.yaml edits and resumes.
IDLE_WAKE = timedelta(seconds=30)
PRUNE_EVERY = timedelta(minutes=10)


class Clock(Protocol):
    """Where the scheduler gets the time and waits; tests pass a virtual one."""

    def now(self) -> datetime: ...

    async def sleep_until(self, when: datetime) -> None: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        await asyncio.sleep(max(0.0, (when - self.now()).total_seconds()))


def slot_key(app: str, job: str, at: datetime) -> str:
    """The idempotency key of a slot: the same in every scheduler process."""
    return _key_time(at) + _key_suffix(app, job)


def _key_suffix(app: str, job: str) -> str:
    # Time first: the keys of a tick's slots sort together, so a batch adds them to a few
    # adjacent pages of the unique index instead of one page per job.
    return f"{app}/{job}"


@dataclass
class _Planned:
    key: tuple[str, str]  # (app, job)
    ref: JobRef
    schedule: Schedule
    fingerprint: str
    last: datetime  # the last slot handled (or the moment the schedule was first seen)
    next: datetime
    # The same for every slot of the job: built once, not per slot (and the origin shared
    # by the jobs with the same schedule, so a batch encodes it once).
    origin: dict[str, Any] = field(default_factory=dict)
    key_suffix: str = ""

    def __post_init__(self) -> None:
        self.key_suffix = _key_suffix(*self.key)

    def slot_key(self, at: datetime) -> str:
        return _key_time(at) + self.key_suffix


@functools.lru_cache(maxsize=1024)
def _key_time(at: datetime) -> str:
    # Memoised: the jobs due in one tick share a few slot times.
    return f"cron:{(at if at.tzinfo is UTC else at.astimezone(UTC)).isoformat()}:"


class SeriesCache:
    """One CronSeries per (expression, zone), shared by the jobs that use it; `H` ones shared
    by the jobs whose `H` fields hash to the same values."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], CronSeries] = {}
        self._hashed: dict[tuple[Any, ...], CronSeries] = {}
        self._origins: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {}

    def origin(self, job: JobSpec) -> dict[str, Any]:
        """What a scheduled run's `origin` says; one (never changed) dict per schedule."""
        key = (job.schedule, job.timezone)
        found = self._origins.get(key)
        if found is None:
            found = self._origins[key] = {"schedule": list(job.schedule),
                                          "timezone": job.timezone}
        return found

    def schedule(self, job: JobSpec) -> Schedule:
        return Schedule(job.schedule, job.timezone, job.name,
                        [self._one(expression, job) for expression in job.schedule])

    def _one(self, expression: str, job: JobSpec) -> CronSeries:
        expanded = expand(expression)
        if "H" not in expanded:
            found = self._series.get((expanded, job.timezone))
            if found is None:
                found = self._series[(expanded, job.timezone)] = CronSeries(expanded,
                                                                           job.timezone)
            return found
        # Many `H * * * *` jobs hash to at most 60 minutes: each minute's next fire time is
        # computed once, not once per job.
        series = CronSeries(expanded, job.timezone, job.name)
        identity = series.identity()
        if identity is None:
            return series
        return self._hashed.setdefault(identity, series)


def schedule_of(job: JobSpec) -> Schedule:
    """The job's schedule, as the scheduler computes it (what `jobbot schedule` prints)."""
    return Schedule(job.schedule, job.timezone, job.name)


class Scheduler:
    """Turns due cron slots into runs or skipped runs; `tick()` does one round."""

    def __init__(self, service: JobService, clock: Clock | None = None, *,
                 max_skipped: int = MAX_SKIPPED_RECORDED) -> None:
        self.service = service
        self.store = service.store
        self.clock = clock or SystemClock()
        self.max_skipped = max_skipped
        self._series = SeriesCache()
        self._planned: dict[tuple[str, str], _Planned] = {}
        self._specs: dict[tuple[str, str], JobSpec] = {}
        # Due times in a heap, and the jobs due at each: thousands of jobs share a time (the
        # top of the hour), so a tick pops a few times instead of sifting one entry per job.
        self._times: list[datetime] = []
        self._due_at: dict[datetime, list[tuple[str, str]]] = {}
        self._last_prune: datetime | None = None
        self._apps_seen: tuple[AppSpec, ...] = ()
        self._wake = asyncio.Event()
        # History limits per job, rebuilt when app.yaml changes.
        self._limits: dict[tuple[str, str], tuple[int, int, int]] | None = None
        # The store's history mark before the last prune, or before each of the last two
        # where event ids can become visible out of order (see `prune`).
        self._prune_marks: deque[int] = deque(
            maxlen=1 if self.store.event_ids_visible_in_order else 2)

    # -- planning -------------------------------------------------------------------------

    async def _sync(self, now: datetime) -> None:
        """Follow app.yaml: new and edited schedules start from now; removed ones are dropped."""
        # A reload replaces an app's spec object: the same objects mean nothing to look at.
        # (Kept, not their ids: a freed object's id can be reused by its replacement.)
        apps = tuple(self.service.catalog.apps.values())
        if len(apps) == len(self._apps_seen) and all(
                a is b for a, b in zip(apps, self._apps_seen, strict=True)):
            return
        self._apps_seen = apps
        current = {(ref.app.app, ref.job.name): ref for ref in self.service.catalog.jobs()
                   if ref.job.is_scheduled}
        changed = [key for key, ref in current.items() if self._specs.get(key) is not ref.job]
        removed = [key for key in self._planned if key not in current]
        if not changed and not removed:
            return
        self._limits = None
        for key in removed:
            del self._planned[key]
            del self._specs[key]
        states = await asyncio.to_thread(self.store.schedule_states)
        # A job that is gone (removed from app.yaml, or no longer scheduled) loses its
        # place: if it comes back, its next slot is computed from then, instead of catching
        # up on (or recording as missed) the slots of the time it did not exist. Done at
        # start-up too, for jobs removed while no scheduler was running.
        gone = [key for key in states if key not in current]
        if gone:
            await asyncio.to_thread(self.store.forget_schedule_states, gone)
            for key in gone:
                del states[key]
            logger.info("schedule state of %d removed jobs forgotten: %s", len(gone),
                        ", ".join(f"{app}/{job}" for app, job in gone[:10]))
        fresh: list[tuple[str, str, str, datetime]] = []
        for key in changed:
            ref = current[key]
            schedule = self._series.schedule(ref.job)
            digest = fingerprint(ref.job.schedule, ref.job.timezone)
            known = self._planned.get(key)
            state = states.get(key)
            if known is not None and known.fingerprint == digest:
                known.ref = ref  # another setting changed (policy, deadline, ...): keep going
                self._specs[key] = ref.job
                continue
            if state is not None and state.fingerprint == digest and state.last_slot:
                last = state.last_slot  # the same schedule as before a restart: catch up
            else:
                # New or edited: the next slot is computed from now, never an immediate run.
                last = now
                fresh.append((*key, digest, now))
                if state is not None:
                    logger.info("schedule of %s/%s changed: next slot computed from now", *key)
            planned = _Planned(key, ref, schedule, digest, last, schedule.next_after(last),
                               self._series.origin(ref.job))
            self._planned[key] = planned
            self._specs[key] = ref.job
            self._push(planned)
        await asyncio.to_thread(self.store.save_schedule_states, fresh)

    def _push(self, planned: _Planned) -> None:
        keys = self._due_at.get(planned.next)
        if keys is None:
            keys = self._due_at[planned.next] = []
            heapq.heappush(self._times, planned.next)
        keys.append(planned.key)

    def next_due(self) -> datetime | None:
        while self._times:
            at = self._times[0]
            keys = self._due_at[at]
            # Entries of removed or re-planned jobs are stale: drop them.
            while keys:
                planned = self._planned.get(keys[-1])
                if planned is not None and planned.next == at:
                    return at
                keys.pop()
            heapq.heappop(self._times)
            del self._due_at[at]
        return None

    def _pop_due(self, now: datetime) -> list[_Planned]:
        due: dict[tuple[str, str], _Planned] = {}
        while self._times and self._times[0] <= now:
            at = heapq.heappop(self._times)
            for key in self._due_at.pop(at):
                planned = self._planned.get(key)
                # A re-planned job may have an old entry for the same time: take it once.
                if planned is not None and planned.next == at:
                    due[key] = planned
        return list(due.values())

    # -- one round ------------------------------------------------------------------------

    async def tick(self) -> int:
        """Handle every slot due by now; returns how many slots were recorded."""
        now = self.clock.now()
        await self._sync(now)
        due = self._pop_due(now)
        if not due:
            return 0
        paused = await asyncio.to_thread(self.store.paused_jobs)
        batch: list[Slot] = []
        guarded: list[tuple[_Planned, datetime]] = []
        horizon = now - MAX_LOOKBACK
        for planned in due:
            slots, left_out, oldest, following = self._slots(planned, now, horizon)
            if not slots:  # nothing due after all (its next slot moved): plan it again
                planned.next = following
                self._push(planned)
                continue
            latest = slots.pop()
            for index, at in enumerate(slots):
                reason = "missed: no jobbot scheduler was running at this time"
                if index == 0 and left_out:
                    reason += (f" ({left_out} earlier missed slots since {oldest.isoformat()} "
                               "are not recorded one by one)")
                batch.append(self._slot(planned, at, reason))
            skipped = self._skip_reason(planned, latest, now, paused)
            if skipped is not None:
                batch.append(self._slot(planned, latest, skipped))
            elif planned.ref.job.concurrency_policy == "Allow":
                batch.append(self._slot(planned, latest))
            else:
                guarded.append((planned, latest))
            planned.last = latest
            planned.next = following
            self._push(planned)
        if batch or guarded:
            newest = max([s.scheduled_for for s in batch] + [at for _, at in guarded])
            SCHEDULER_LAG.set((now - newest).total_seconds())
        recorded = 0
        if guarded:
            replacing, allowed = await self._apply_policies(guarded)
            batch.extend(allowed)
            # Before the batch that saves the schedule state: a crash in between must not
            # leave a slot marked as handled without its run.
            for planned, at, active in replacing:
                recorded += await self._replace_and_fire(planned, at, active)
        states = [(*p.key, p.fingerprint, p.last) for p in due]
        recorded += len(await self.service.record_slots(batch, schedule_states=states))
        if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            await self.prune()
        return recorded

    def _slots(self, planned: _Planned, now: datetime, horizon: datetime
               ) -> tuple[list[datetime], int, datetime, datetime]:
        """Due slots (the bounded most recent ones, none before `horizon`), how many older
        ones were left out, the oldest slot considered, and the first slot after now."""
        start = planned.last if planned.last > horizon else horizon
        keep = self.max_skipped + 1
        kept: list[datetime] = []
        total = 0
        oldest = planned.next if planned.next > start else planned.schedule.next_after(start)
        at = oldest
        while at <= now:
            kept.append(at)
            total += 1
            if len(kept) > 2 * keep:
                del kept[:-keep]
            at = planned.schedule.next_after(at)
        kept = kept[-keep:]
        return kept, total - len(kept), oldest, at

    def _skip_reason(self, planned: _Planned, at: datetime, now: datetime,
                     paused: dict[tuple[str, str], str | None]) -> str | None:
        job = planned.ref.job
        if job.suspend:
            return "suspended: app.yaml sets suspend: true"
        if planned.key in paused:
            return f"paused by {paused[planned.key] or 'someone'}"
        if job.starting_deadline is None:
            return None
        late = now - at
        if late > timedelta(seconds=job.starting_deadline):
            return (f"missed: {int(late.total_seconds())}s late, beyond starting_deadline "
                    f"{job.starting_deadline}s")
        return None

    def _slot(self, planned: _Planned, at: datetime, skipped: str | None = None) -> Slot:
        return Slot(planned.ref, at, planned.slot_key(at), skipped, origin=planned.origin)

    async def _apply_policies(self, guarded: list[tuple[_Planned, datetime]]
                              ) -> tuple[list[tuple[_Planned, datetime, list[Run]]], list[Slot]]:
        """Forbid and Replace: one query for the live runs of every guarded job due now.

        Returns the slots whose job has a run to replace, and the slots to record as they
        are (runs, or skipped with the Forbid reason).
        """
        live = await asyncio.to_thread(self.store.live_runs, [p.key for p, _ in guarded])
        replacing: list[tuple[_Planned, datetime, list[Run]]] = []
        slots: list[Slot] = []
        for planned, at in guarded:
            key = slot_key(*planned.key, at)
            # A run of this very slot (another scheduler was quicker) is not "another run".
            active = [r for r in live.get(planned.key, ()) if r.idempotency_key != key]
            if not active:
                slots.append(self._slot(planned, at))
            elif planned.ref.job.concurrency_policy == "Forbid":
                others = ", ".join(f"#{r.number} ({r.state})" for r in active)
                slots.append(self._slot(
                    planned, at, f"Forbid: another run is still active: {others}"))
            else:
                replacing.append((planned, at, active))
        return replacing, slots

    async def _replace_and_fire(self, planned: _Planned, at: datetime, active: list[Run]) -> int:
        """Replace: cancel the job's live runs (with their grace period), then start the slot."""
        key = slot_key(*planned.key, at)
        if await asyncio.to_thread(self.store.run_by_key, key) is not None:
            return 0  # another scheduler handled this slot already: replace nothing
        for run in active:
            await self._replace(run)
        return len(await self.service.record_slots([self._slot(planned, at)]))

    async def _replace(self, run: Run) -> None:
        try:
            await self.service.cancel(run.id, Actor.scheduler())
            logger.info("Replace: cancelled %s for a new scheduled run", run.label,
                        extra={"run_id": run.id})
        except (Conflict, NotFound):
            pass  # it finished (or was pruned) meanwhile: nothing to replace

    # -- history --------------------------------------------------------------------------

    async def prune(self) -> int:
        """Keep history.succeeded / history.failed finished runs (and SKIPPED_KEPT skipped
        slots) per scheduled job; older runs, their events, attempts and logs go.

        The first prune (and the first after app.yaml changed the limits) looks at every
        job; later ones only at the jobs with a run finished since the last prune (at 10,000
        jobs with 40 finished runs each, reading them all costs half a second of CPU). On
        PostgreSQL, since the prune before the last: there an event can become visible after
        one with a larger id, while its transaction commits.
        """
        if self._limits is None:
            self._limits = {key: (spec.history.succeeded, spec.history.failed, SKIPPED_KEPT)
                            for key, spec in self._specs.items()}
            self._prune_marks.clear()
        since = self._prune_marks[0] if self._prune_marks else None
        self._prune_marks.append(await asyncio.to_thread(self.store.history_mark))
        deleted = await self.service.prune_history(self._limits, touched_after=since)
        if deleted:
            logger.info("history: pruned %d old runs of scheduled jobs", deleted)
        return deleted

    # -- the loop -------------------------------------------------------------------------

    def wake(self) -> None:
        """Look again now (app.yaml was reloaded, a job was resumed)."""
        self._wake.set()

    async def run(self) -> None:
        """Tick whenever a slot falls due, until cancelled; errors are logged, never fatal."""
        while True:
            try:
                await self.tick()
            except Exception:  # a database outage must not end scheduling; logged in full
                logger.exception("scheduler round failed; trying again shortly")
            now = self.clock.now()
            due = self.next_due()
            until = min(due, now + IDLE_WAKE) if due is not None else now + IDLE_WAKE
            self._wake.clear()
            sleeper = asyncio.ensure_future(self.clock.sleep_until(until))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, waker):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


def fire_times(job: JobSpec, start: datetime, count: int) -> Iterable[datetime]:
    """The next `count` fire times after `start`, exactly as the scheduler computes them."""
    schedule = schedule_of(job)
    at = start
    for _ in range(count):
        at = schedule.next_after(at)
        yield at

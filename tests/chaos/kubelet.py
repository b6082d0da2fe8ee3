"""Plays the cluster behind the fake Kubernetes API: every Job jobbot creates gets one pod that
prints numbered lines, then succeeds or fails, whoever (if anyone) is watching."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from tests.chaos.plan import Plan
from tests.fakes.kubernetes import FakeKubernetes, Obj

LINE_EVERY = 0.5
RUN_ID_LABEL = "jobbot.dev/run-id"


@dataclass
class Pod:
    """What the cluster did for one Job: its pod, the lines it printed, and how it ended."""

    job: str
    namespace: str
    run_id: str
    uid: str
    pod: str | None = None
    printed: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    ended: float | None = None
    outcome: str | None = None  # "succeeded" or "failed"


def line(job: str, number: int) -> str:
    """The text a pod prints: the harness finds these lines again in every replica's log."""
    return f"chaos {job} line {number}"


class Kubelet:
    """Attached to a FakeKubernetes: runs each new Job's pod to its end in the background."""

    def __init__(self, fake: FakeKubernetes, plan: Plan) -> None:
        self.fake = fake
        self.plan = plan
        self._rng: random.Random = plan.rng("pods")
        self.pods: dict[str, Pod] = {}  # by Job name
        self._tasks: set[asyncio.Task[None]] = set()
        fake.on_create = self._created

    def _created(self, job: Obj) -> None:
        meta = job["metadata"]
        pod = Pod(meta["name"], meta["namespace"], str(meta["labels"].get(RUN_ID_LABEL, "")),
                  str(meta["uid"]))
        self.pods[pod.job] = pod
        seconds = self._rng.uniform(*self.plan.run_seconds)
        fails = self._rng.random() < self.plan.failing
        task = asyncio.get_running_loop().create_task(self._run(pod, seconds, fails),
                                                      name=f"pod-{pod.job}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, pod: Pod, seconds: float, fails: bool) -> None:
        await asyncio.sleep(0.3)  # scheduling and pulling the image
        if (pod.namespace, pod.job) not in self.fake.jobs:
            return  # deleted (cancelled) before its pod started
        pod.printed.append(line(pod.job, 1))
        pod.pod = await self.fake.add_pod(pod.namespace, pod.job, log=list(pod.printed))
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            await asyncio.sleep(LINE_EVERY)
            if (pod.namespace, pod.pod) not in self.fake.pods:
                return  # the Job was deleted: its pod went with it
            pod.printed.append(line(pod.job, len(pod.printed) + 1))
            await self.fake.append_log(pod.namespace, pod.pod, pod.printed[-1])
        if (pod.namespace, pod.pod) not in self.fake.pods:
            return
        pod.ended = time.time()
        if fails:
            pod.outcome = "failed"
            await self.fake.set_pod(pod.namespace, pod.pod, "Failed", exit_code=3)
            await self.fake.finish_job(pod.namespace, pod.job, "Failed", "BackoffLimitExceeded",
                                       "Job has reached the specified backoff limit")
        else:
            pod.outcome = "succeeded"
            await self.fake.set_pod(pod.namespace, pod.pod, "Succeeded")
            await self.fake.finish_job(pod.namespace, pod.job, "Complete")

    def by_run(self, run_id: str) -> Pod | None:
        return next((p for p in self.pods.values() if p.run_id == run_id), None)

    def subject(self, path: str, query: dict[str, str]) -> str | None:
        """The Job a request to the API is about, if it is about one run's Job (its object, its
        pods or its pod's log); None for requests about many (lists and watches of all runs)."""
        parts = path.strip("/").split("/")
        if "jobs" in parts and parts.index("jobs") + 1 < len(parts):
            return parts[parts.index("jobs") + 1]
        if parts[-1] == "log" and len(parts) >= 2:
            name = parts[-2]
            return next((p.job for p in self.pods.values() if p.pod == name), None)
        selector = query.get("labelSelector", "")
        for term in selector.split(","):
            key, _, value = term.partition("=")
            key, value = key.strip().rstrip("="), value.strip()
            if not value:
                continue
            if key.endswith("controller-uid"):
                return next((p.job for p in self.pods.values() if p.uid == value), None)
            if key == "job-name":
                return value
            if key == RUN_ID_LABEL:
                found = self.by_run(value)
                return found.job if found else None
        return None

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

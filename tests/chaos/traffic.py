"""The chaos itself: signed Slack commands and GitHub deliveries to random replicas (retried
on another when refused, as Slack and GitHub retry), and kill -9 of random replicas, each
brought back after a few seconds."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from github_app.signature import sign
from tests.chaos.cluster import (
    PULL,
    REPOSITORY,
    WEBHOOK_SECRET,
    WORK_JOB,
    ChaosCluster,
    Incarnation,
    Replica,
)
from tests.fakes import github_payloads as payloads
from tests.fakes.slack import SlackSender

TRIES = 6
# Slack gives up on an ack after 3 s, GitHub on an answer after 10 s; both then retry.
TIMEOUTS = {"slack": 3.0, "github": 10.0}
RETRY_PAUSE = (0.2, 1.0)


@dataclass
class Sent:
    """One request as its sender saw it: every try, and the answer it finally got."""

    kind: str  # "slack" or "github"
    tag: str  # the run's TAG parameter: how the checks find the runs it started
    key: str  # the Slack trigger_id or the GitHub delivery id (the same on every retry)
    tries: list[str] = field(default_factory=list)  # "<replica>: <status or error>"
    answered: int | None = None  # the 2xx status it finally got
    answered_by: str | None = None  # the incarnation that gave it

    @property
    def ok(self) -> bool:
        return self.answered is not None


@dataclass
class Kill:
    """A kill -9 the plan made, and how the replica came back."""

    at: float
    victim: Incarnation
    new_pod: bool
    # "at random" or "right after an answer" (the replica had just acknowledged a request).
    how: str
    back: Incarnation | None = None

    def describe(self) -> str:
        back = "not back"
        if self.back is not None and self.back.ready is not None:
            back = (f"back as {self.back.token} ({'new pod' if self.new_pod else 'same pod'}) "
                    f"ready {self.back.ready - self.at:.1f} s later")
        return f"{self.victim.token} killed {self.how}; {back}"


@dataclass
class Traffic:
    """What the chaos did: requests sent, kills made."""

    sent: list[Sent] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    skipped_kills: int = 0  # moments at which one replica only was alive
    began: float = 0.0
    ended: float = 0.0


@dataclass
class _Armed:
    """A kill waiting for the next 2xx answer: it hits the replica that gave it."""

    new_pod: bool
    delay: float
    done: asyncio.Future[None]


class Chaos:
    """Sends the plan's requests and makes its kills; `run()` returns once every request has
    its answer (or its last try) and every killed replica is back."""

    # Up to this long, an armed kill waits for an answer; then it strikes at random.
    ARMED_WAIT = 10.0

    def __init__(self, cluster: ChaosCluster) -> None:
        self.cluster = cluster
        self.plan = cluster.plan
        self.traffic = Traffic()
        self._slack = SlackSender(cluster.slack, "")
        self._restarts: list[asyncio.Task[None]] = []
        self._armed: list[_Armed] = []
        self._start = 0.0

    async def run(self) -> Traffic:
        plan = self.plan
        rng = plan.rng("traffic")
        moments = sorted(rng.uniform(0, plan.seconds) for _ in range(plan.requests))
        kinds = [rng.choice(("slack", "github")) for _ in moments]
        self._start = time.monotonic()
        self.traffic.began = time.time()
        try:
            await asyncio.gather(self._kills(), *(
                self._request(i + 1, m, k)
                for i, (m, k) in enumerate(zip(moments, kinds, strict=True))))
            await asyncio.gather(*self._restarts)
        finally:
            await self._slack.close()
            for task in self._restarts:
                task.cancel()
        self.traffic.ended = time.time()
        return self.traffic

    async def _at(self, moment: float) -> None:
        await asyncio.sleep(max(0.0, self._start + moment - time.monotonic()))

    async def _request(self, number: int, moment: float, kind: str) -> None:
        await self._at(moment)
        replicas = self.cluster.replicas
        order = self.plan.rng(f"request-{number}").sample(replicas, len(replicas))
        sent = await _send(self.cluster, self._slack, kind, f"{kind[0]}-{number}", order,
                           self.plan.rng(f"pauses-{number}"), self._answered)
        self.traffic.sent.append(sent)

    async def _kills(self) -> None:
        rng = self.plan.rng("kills")
        moments = sorted(rng.uniform(3.0, max(3.0, self.plan.seconds - 3.0))
                         for _ in range(self.plan.kills))
        for number, moment in enumerate(moments):
            # Drawn whether or not this kill happens, so later kills stay as the seed says.
            pick, delay = rng.random(), rng.uniform(*self.plan.restart_after)
            new_pod, armed = rng.random() < 0.5, rng.random() < self.plan.after_answer
            if number == 0:
                # The first kill is always the hardest case: work just acknowledged, and the
                # replica replaced by a pod with another name.
                new_pod, armed = True, True
            await self._at(moment)
            if armed:
                waiting = _Armed(new_pod, delay, asyncio.get_running_loop().create_future())
                self._armed.append(waiting)
                try:
                    await asyncio.wait_for(asyncio.shield(waiting.done), self.ARMED_WAIT)
                    continue
                except TimeoutError:
                    self._armed.remove(waiting)
            live = self.cluster.live
            if len(live) < 2:
                self.traffic.skipped_kills += 1
                continue
            self._kill(live[int(pick * len(live))], new_pod, delay, "at random")

    def _answered(self, replica: Replica) -> None:
        """Called the moment a replica answers 2xx: an armed kill strikes it at once."""
        live = self.cluster.live
        if self._armed and replica in live and len(live) >= 2:
            armed = self._armed.pop(0)
            self._kill(replica, armed.new_pod, armed.delay, "right after an answer")
            armed.done.set_result(None)

    def _kill(self, replica: Replica, new_pod: bool, delay: float, how: str) -> None:
        life = self.cluster.kill(replica)
        kill = Kill(life.died or time.time(), life, new_pod, how)
        self.traffic.kills.append(kill)
        self._restarts.append(asyncio.create_task(self._back(replica, kill, delay)))

    async def _back(self, replica: Replica, kill: Kill, delay: float) -> None:
        await asyncio.sleep(delay)
        kill.back = await self.cluster.restart(replica, new_pod=kill.new_pod)


async def drive(cluster: ChaosCluster) -> Traffic:
    """The plan's requests and kills against `cluster` (see Chaos)."""
    return await Chaos(cluster).run()


async def _send(cluster: ChaosCluster, slack: SlackSender, kind: str, tag: str,
                order: list[Replica], pauses: random.Random,
                answered: Callable[[Replica], None]) -> Sent:
    """Try the replicas in `order` (then round again) until one answers 2xx; `answered` hears
    of that answer before anything else happens."""
    if kind == "slack":
        body, key = slack.command_body(f"run {WORK_JOB} TAG={tag}")
        data = body.encode()
    else:
        key = str(uuid.uuid4())
        data = json.dumps(payloads.issue_comment(
            REPOSITORY, PULL, f"/run {WORK_JOB} TAG={tag}")).encode()
    sent = Sent(kind, tag, key)
    timeout = aiohttp.ClientTimeout(total=TIMEOUTS[kind])
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(TRIES):
            replica = order[attempt % len(order)]
            life = replica.current
            if kind == "slack":
                headers = slack.headers(body, retry_num=attempt or None)
                url = f"{replica.url}/slack/events"
            else:
                headers = {"X-GitHub-Event": "issue_comment", "X-GitHub-Delivery": key,
                           "Content-Type": "application/json",
                           "User-Agent": "GitHub-Hookshot/chaos",
                           "X-Hub-Signature-256": sign(WEBHOOK_SECRET.encode(), data)}
                url = f"{replica.url}/github/webhook"
            try:
                async with session.post(url, data=data, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                sent.tries.append(f"{replica.name}: {type(exc).__name__}")
            else:
                sent.tries.append(f"{replica.name}: {status}")
                if 200 <= status < 300:
                    answered(replica)
                    sent.answered = status
                    sent.answered_by = life.token if life else replica.name
                    return sent
            await asyncio.sleep(pauses.uniform(*RETRY_PAUSE))
    return sent

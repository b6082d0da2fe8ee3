"""Several `jobbot serve` processes on one real PostgreSQL, with the fake Slack, GitHub and
Kubernetes API over HTTP: the deployment the chaos suite and bench/chaos.py break on purpose.

Each replica runs in a UTS namespace of its own (`unshare --uts`) with a host name of its own,
as pods do, so no replica can tell from the host name whether another is alive. A killed
replica comes back either restarted in its pod (the same host name and data directory) or
as a new pod (a new host name and an empty data directory).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import sqlalchemy
from aiohttp.test_utils import TestServer

from tests.chaos.kubelet import Kubelet
from tests.chaos.plan import Plan
from tests.fakes import github_payloads as payloads
from tests.fakes.github import FakeGitHub, private_key_pem
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.support.net import free_port
from tests.support.postgres import Cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "shop"
REPOSITORY = "acme/shop"
PULL = 7
HEAD = "1" * 40
NAMESPACE = "shop-jobs"
CHANNEL = "#deploys"
WEBHOOK_SECRET = "chaos-webhook-secret"
SECRET_KEY = "chaos-link-signing-key-0123456789"
PUBLIC_URL = "http://jobbot.chaos.test"
WORK_JOB, CRON_JOB = "work", "tick"
READY_WITHIN = 60.0


def app_yaml(plan: Plan) -> dict[str, object]:
    """Two jobs: `work`, started by every request with its own TAG, and `tick`, on cron."""
    return {
        "app": APP,
        "kubernetes": {"namespace": NAMESPACE},
        "defaults": {"notify": {"slack_channel": CHANNEL,
                                "on": ["start", "failure", "success"]}},
        "jobs": [
            {"name": WORK_JOB, "image": "busybox", "command": ["sh", "-c", "work"],
             "pull_requests": True, "env": {"TAG": ""}},
            {"name": CRON_JOB, "image": "busybox", "command": ["sh", "-c", "tick"],
             "schedule": plan.cron},
        ],
    }


@dataclass
class Incarnation:
    """One life of a replica: its process, host name, API token, and when it lived."""

    replica: str
    number: int
    host: str
    token: str
    proc: subprocess.Popen[bytes]
    started: float
    ready: float | None = None
    died: float | None = None

    def alive_at(self, at: float) -> bool:
        return self.started <= at and (self.died is None or at < self.died)


@dataclass
class Replica:
    """A slot behind the Service: one port, a pod's worth of state, several lives."""

    name: str
    port: int
    pod: int = 1  # bumped when the pod is replaced (new host name and data directory)
    lives: list[Incarnation] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def current(self) -> Incarnation | None:
        if self.lives and self.lives[-1].died is None:
            return self.lives[-1]
        return None

    @property
    def host(self) -> str:
        return f"jobbot-{self.name}-{self.pod}"


class ChaosCluster:
    """PostgreSQL, the three fakes, the cluster's pods, and the replicas; start() then stop()."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.postgres: Cluster | None = None
        self.database_url = ""
        self._dropped: str | None = None  # a database made on JOBBOT_TEST_DATABASE_URL
        self.slack = FakeSlack()
        private, public = private_key_pem()
        self._private_key = private
        self.github = FakeGitHub(payloads.APP_ID, public)
        self._github_server: TestServer | None = None
        self.kube = FakeKubernetes()
        self.kubelet = Kubelet(self.kube, plan)
        self.replicas = [Replica(chr(ord("a") + i), free_port()) for i in range(plan.replicas)]
        self.kills: list[tuple[float, Incarnation]] = []

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "app.yaml").write_text(json.dumps(app_yaml(self.plan), indent=2))
        self.database_url = await asyncio.to_thread(self._database)
        await self.slack.start()
        await self.kube.start()
        self._github_server = TestServer(self.github.app(), host="127.0.0.1")
        await self._github_server.start_server()
        self.github.url = str(self._github_server.make_url("")).rstrip("/")
        self.github.permissions[(REPOSITORY, "alice")] = "write"
        self.github.add_pull(REPOSITORY, PULL, HEAD)
        # The first migrates the empty database; the others start together after it.
        await self.boot(self.replicas[0])
        await asyncio.gather(*(self.boot(r) for r in self.replicas[1:]))

    async def stop(self) -> None:
        for replica in self.replicas:
            life = replica.current
            if life is not None and life.proc.poll() is None:
                life.proc.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            life = replica.current
            if life is not None:
                try:
                    await asyncio.to_thread(life.proc.wait, 30)
                except subprocess.TimeoutExpired:
                    life.proc.kill()
                    await asyncio.to_thread(life.proc.wait)
                life.died = time.time()
        await self.kubelet.stop()
        await self.kube.stop()
        await self.slack.stop()
        if self._github_server is not None:
            await self._github_server.close()
        await asyncio.to_thread(self._drop_database)

    def _database(self) -> str:
        """An empty database: on the server of JOBBOT_TEST_DATABASE_URL if set (as the other
        PostgreSQL tests), else on a throwaway cluster of this run's own."""
        given = os.environ.get("JOBBOT_TEST_DATABASE_URL")
        if not given:
            self.postgres = Cluster()
            return self.postgres.start()
        name = f"chaos_{uuid.uuid4().hex[:12]}"
        admin = _admin(given)
        try:
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        self._dropped = given
        return admin.url.set(database=name).render_as_string(hide_password=False).replace(
            "postgresql+psycopg://", "postgresql://", 1)

    def _drop_database(self) -> None:
        if self._dropped is None:
            if self.postgres is not None:
                self.postgres.stop()
            return
        name = sqlalchemy.make_url(self.database_url).database
        admin = _admin(self._dropped)
        try:
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()

    # -- replicas -------------------------------------------------------------------------

    def data_dir(self, replica: Replica) -> Path:
        return self.workdir / f"data-{replica.host}"

    def _env(self, replica: Replica, token: str) -> dict[str, str]:
        kubeconfig = self.workdir / f"kubeconfig-{token}"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.kube.url}}],
            "users": [{"name": "jobbot", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "jobbot"}}]}))
        # Nothing of this shell's jobbot, Slack or GitHub settings reaches the replicas.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("JOBBOT_", "SLACK_", "GITHUB_"))}
        env.update({
            "PYTHONPATH": str(REPO_ROOT), "JOBBOT_APP_CONFIG": str(self.workdir / "app.yaml"),
            "JOBBOT_DATABASE_URL": self.database_url,
            "JOBBOT_DATA_DIR": str(self.data_dir(replica)), "JOBBOT_HOST": "127.0.0.1",
            "JOBBOT_PORT": str(replica.port), "JOBBOT_EXECUTOR": "kubernetes",
            "JOBBOT_KUBECONFIG": str(kubeconfig), "JOBBOT_SECRET_KEY": SECRET_KEY,
            "JOBBOT_PUBLIC_URL": PUBLIC_URL, "JOBBOT_LOG_FORMAT": "text",
            "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.slack.api_url, "GITHUB_APP_ID": str(payloads.APP_ID),
            "GITHUB_PRIVATE_KEY": self._private_key, "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GITHUB_API_URL": self.github.url,
            **self.plan.replica_env,
        })
        return env

    async def boot(self, replica: Replica) -> Incarnation:
        """Start the replica's next life and wait until it answers GET /readyz."""
        number = len(replica.lives) + 1
        token = f"chaos-{replica.name}-{number}"
        proc = await asyncio.to_thread(self._spawn, replica, token)
        life = Incarnation(replica.name, number, replica.host, token, proc, time.time())
        replica.lives.append(life)
        await self._ready(replica, life)
        return life

    def _spawn(self, replica: Replica, token: str) -> subprocess.Popen[bytes]:
        # A UTS namespace of its own gives the process its pod's host name; exec keeps the
        # pid, so kill -9 reaches jobbot itself.
        command = [*unshare(), "sh", "-c", 'hostname "$1" && exec "$0" -m jobbot serve',
                   sys.executable, replica.host]
        with open(self.workdir / f"{token}.log", "wb") as log:
            return subprocess.Popen(command, cwd=self.workdir, env=self._env(replica, token),
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    async def _ready(self, replica: Replica, life: Incarnation) -> None:
        deadline = time.monotonic() + READY_WITHIN
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if life.proc.poll() is not None:
                    raise ChaosError(f"replica {life.token} exited with {life.proc.returncode}"
                                     f" before it was ready: see {self.workdir}/{life.token}.log")
                try:
                    async with session.get(f"{replica.url}/readyz") as response:
                        if response.status == 200:
                            life.ready = time.time()
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise ChaosError(f"replica {life.token} was not ready within {READY_WITHIN:.0f} s")

    def kill(self, replica: Replica) -> Incarnation:
        """kill -9 the replica's process, as a node failure or the OOM killer would."""
        life = replica.current
        if life is None:
            raise ChaosError(f"replica {replica.name} is not running")
        os.kill(life.proc.pid, signal.SIGKILL)
        life.proc.wait(timeout=10)
        life.died = time.time()
        self.kills.append((life.died, life))
        return life

    async def restart(self, replica: Replica, *, new_pod: bool) -> Incarnation:
        """Bring a killed replica back: in its pod, or as a new pod with an empty data dir."""
        if new_pod:
            replica.pod += 1
            shutil.rmtree(self.data_dir(replica), ignore_errors=True)
        return await self.boot(replica)

    @property
    def live(self) -> list[Replica]:
        """The replicas that run and are ready (the ones a Service sends requests to)."""
        return [r for r in self.replicas
                if (life := r.current) is not None and life.ready is not None]

    @property
    def incarnations(self) -> list[Incarnation]:
        return [life for r in self.replicas for life in r.lives]


def _admin(url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                                    isolation_level="AUTOCOMMIT")


class ChaosError(RuntimeError):
    """The harness itself could not do what the plan says (not a finding about jobbot)."""


@functools.cache
def unshare() -> list[str]:
    """The command prefix that gives a process its own host name: root needs no user
    namespace; others map themselves to root in one (unprivileged user namespaces)."""
    if shutil.which("unshare") is None:
        raise ChaosError("the chaos suite needs `unshare` (util-linux) to give each replica a "
                         "host name of its own")
    prefix = ["unshare", "--uts"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    probe = subprocess.run([*prefix, "hostname", "chaos-probe"], capture_output=True,
                           text=True, check=False)
    if probe.returncode != 0:
        raise ChaosError(f"`{' '.join(prefix)}` failed ({probe.stderr.strip()}): the chaos "
                         "suite needs UTS namespaces (root, or unprivileged user namespaces)")
    return prefix

"""Build the core's objects (store, executor, service) from settings, in one place."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import ArgumentError, OperationalError

from core.builds import Builder
from core.catalog import Catalog
from core.errors import BadInput, JobbotError
from core.events import Changes
from core.executors.base import Executor
from core.executors.local import LocalExecutor
from core.links import Links
from core.logs import LogStore, logs_for
from core.procs import ProcessId
from core.replicas import Replica
from core.sealing import Sealer
from core.secrets import LocalSecrets
from core.service import JobService
from core.spec import AppSpec, load_app
from core.store import Store
from jobbot.settings import MIN_SECRET_KEY_BYTES, Settings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The wired core of one jobbot process."""

    settings: Settings
    app: AppSpec
    store: Store
    service: JobService
    links: Links

    def close(self) -> None:
        self.store.close()


def load_config(settings: Settings, config: Path | None = None) -> AppSpec:
    return load_app(config or settings.JOBBOT_APP_CONFIG)


def build_runtime(settings: Settings, config: Path | None = None, *,
                  executor: Executor | None = None, serving: bool = True) -> Runtime:
    """Load app.yaml, open and migrate the store, and wire the service to an executor.
    Without `serving` (a CLI command, which exits soon), the service leaves the next run of a
    lock it hands on to that run's owner instead of launching it itself."""
    app = load_config(settings, config)
    store = open_store(settings)
    data_dir = settings.JOBBOT_DATA_DIR.resolve()
    logs = logs_for(store, data_dir / "logs")
    owner = ProcessId.current()
    catalog = Catalog([app])
    if executor is None:
        executor = make_executor(settings, logs, owner, data_dir, catalog)
    key = signing_key(settings, data_dir)
    replica = Replica(store, owner, expiry=settings.JOBBOT_LEASE_EXPIRY)
    service = JobService(catalog, store, executor, logs, owner=owner, changes=Changes(),
                         replica=replica, sealer=Sealer(key), launches_for_others=serving)
    links = Links(settings.public_url, key, guessed=settings.JOBBOT_PUBLIC_URL is None)
    return Runtime(settings, app, store, service, links)


def open_store(settings: Settings) -> Store:
    """The migrated store; a database that cannot be opened is one line, not a traceback."""
    try:
        store = Store(settings.database_url)
    except (ArgumentError, ImportError) as exc:
        raise BadInput(f"JOBBOT_DATABASE_URL is not a URL jobbot can open "
                       f"({type(exc).__name__})") from None
    try:
        store.migrate()
    except OperationalError as exc:
        store.close()
        # The driver's first line names the host and what failed, never the password.
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise JobbotError(f"cannot open the database (JOBBOT_DATABASE_URL): {reason}") from None
    return store


def signing_key(settings: Settings, data_dir: Path) -> bytes:
    """JOBBOT_SECRET_KEY, or a random key kept in the data directory (one host only)."""
    if settings.JOBBOT_SECRET_KEY is not None:
        return settings.JOBBOT_SECRET_KEY.get_secret_value().encode()
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        logger.warning("JOBBOT_SECRET_KEY is not set: signing links with a key kept in %s; "
                       "set it when running several replicas", path)
    key = path.read_text().strip().encode()
    if len(key) < MIN_SECRET_KEY_BYTES:
        raise BadInput(f"{path} must hold a key of at least {MIN_SECRET_KEY_BYTES} bytes "
                       "(delete it to have a new one made, or set JOBBOT_SECRET_KEY)")
    return key


def make_builder(runtime: Runtime) -> Builder | None:
    """The builder for pushes: BuildKit Jobs with the Kubernetes executor; None means the
    GitHub App's local builder (a checkout of the repository's tarball)."""
    if runtime.settings.JOBBOT_EXECUTOR != "kubernetes":
        return None
    from core.executors.k8s.builder import KubernetesBuilder
    from core.executors.kubernetes import KubernetesExecutor

    executor = runtime.service.executor
    if not isinstance(executor, KubernetesExecutor):
        return None

    return KubernetesBuilder(executor.api, runtime.service.log_store,
                             git_base_url=git_base_url(runtime.settings.GITHUB_API_URL))


def git_base_url(api_url: str | None) -> str:
    """Where repositories are cloned from: github.com, or a GitHub Enterprise Server host."""
    if not api_url or "api.github.com" in api_url:
        return "https://github.com"
    return api_url.rstrip("/").removesuffix("/api/v3")


def make_executor(settings: Settings, logs: LogStore, owner: ProcessId,
                  data_dir: Path, catalog: Catalog) -> Executor:
    if settings.JOBBOT_EXECUTOR == "local":
        return LocalExecutor(logs, LocalSecrets(data_dir / "secrets"), owner=owner,
                             retry_delay=settings.JOBBOT_RETRY_DELAY)
    # Imported here so the local executor never loads the Kubernetes client.
    from core.executors.k8s.api import KubeApi, make_api_client
    from core.executors.kubernetes import KubernetesExecutor

    try:
        api_client = make_api_client(settings.JOBBOT_KUBECONFIG, settings.JOBBOT_KUBE_CONTEXT)
    except Exception as exc:
        raise BadInput(f"JOBBOT_EXECUTOR=kubernetes: cannot load Kubernetes credentials "
                       f"({type(exc).__name__}: {exc}); set JOBBOT_KUBECONFIG or run in "
                       "a pod with a ServiceAccount") from exc
    return KubernetesExecutor(KubeApi(api_client), logs,
                              lambda app: catalog.app(app).namespace,
                              job_of=lambda app, job: catalog.app(app).job(job))

"""Build the core's objects (store, executor, service) from settings, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.catalog import Catalog
from core.errors import BadInput
from core.events import Changes
from core.executors.base import Executor
from core.executors.local import LocalExecutor
from core.logs import LogStore
from core.procs import ProcessId
from core.secrets import LocalSecrets
from core.service import JobService
from core.spec import AppSpec, load_app
from core.store import Store
from jobbot.settings import Settings


@dataclass
class Runtime:
    """The wired core of one jobbot process."""

    settings: Settings
    app: AppSpec
    store: Store
    service: JobService

    def close(self) -> None:
        self.store.close()


def load_config(settings: Settings, config: Path | None = None) -> AppSpec:
    return load_app(config or settings.JOBBOT_APP_CONFIG)


def build_runtime(settings: Settings, config: Path | None = None, *,
                  executor: Executor | None = None) -> Runtime:
    """Load app.yaml, open and migrate the store, and wire the service to an executor."""
    app = load_config(settings, config)
    store = Store(settings.database_url)
    store.migrate()
    data_dir = settings.JOBBOT_DATA_DIR.resolve()
    logs = LogStore(data_dir / "logs")
    owner = ProcessId.current()
    if executor is None:
        executor = make_executor(settings, logs, owner, data_dir)
    service = JobService(Catalog([app]), store, executor, logs, owner=owner, changes=Changes())
    return Runtime(settings, app, store, service)


def make_executor(settings: Settings, logs: LogStore, owner: ProcessId,
                  data_dir: Path) -> Executor:
    if settings.JOBBOT_EXECUTOR == "local":
        return LocalExecutor(logs, LocalSecrets(data_dir / "secrets"), owner=owner,
                             retry_delay=settings.JOBBOT_RETRY_DELAY)
    raise BadInput("JOBBOT_EXECUTOR=kubernetes is not available in this version yet; use local")

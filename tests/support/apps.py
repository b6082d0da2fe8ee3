"""Build app.yaml files and wired services for tests, with jobs that are small Python scripts."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.catalog import Catalog
from core.events import Changes
from core.executors.local import LocalExecutor
from core.logs import LOG_LIMIT, FileLogs, logs_for
from core.procs import ProcessId
from core.secrets import LocalSecrets
from core.service import JobService
from core.spec import AppSpec, load_app
from core.store import Store
from core.store.base import LOG_CHUNKS


def python_job(name: str, code: str, **settings: object) -> dict[str, object]:
    """A job whose command runs `code` with this interpreter."""
    return {
        "name": name,
        "image": "python:3.12-slim",
        "command": [sys.executable, "-c", textwrap.dedent(code)],
        **settings,
    }


def write_app(directory: Path, jobs: list[dict[str, object]], **top: object) -> Path:
    """Write an app.yaml (JSON is YAML) into `directory` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "app.yaml"
    path.write_text(json.dumps({"app": "demo", **top, "jobs": jobs}, indent=2))
    return path


def make_service(app: AppSpec, store: Store, data_dir: Path, *,
                 retry_delay: float = 0.01, cancel_poll: float = 0.1,
                 log_limit: int = LOG_LIMIT) -> JobService:
    logs = logs_for(store, data_dir / "logs", log_limit)
    owner = ProcessId.current()
    executor = LocalExecutor(logs, LocalSecrets(data_dir / "secrets"), owner=owner,
                             retry_delay=retry_delay, cancel_poll=cancel_poll)
    return JobService(Catalog([app]), store, executor, logs, owner=owner, changes=Changes())


def service_for(tmp_path: Path, store: Store, jobs: list[dict[str, object]],
                **kwargs: Any) -> JobService:
    return make_service(load_app(write_app(tmp_path / "app", jobs)), store, tmp_path / "data",
                        **kwargs)


def stored_log(service: JobService, run_id: str, attempt: int = 1) -> bytes:
    """What the store itself holds of an attempt's log: the file's bytes, or the text of its
    rows in the database (uncompressed), read past the log store's own readers."""
    logs = service.log_store
    if isinstance(logs, FileLogs):
        path = logs.path(run_id, attempt)
        return path.read_bytes() if path.exists() else b""
    table = LOG_CHUNKS.c
    with service.store.engine.connect() as conn:
        rows = conn.execute(select(table.data, table.compressed)
                            .where(table.run_id == run_id, table.attempt == attempt)
                            .order_by(table.seq)).all()
    return b"".join(zlib.decompress(data) if packed else bytes(data) for data, packed in rows)


def dead_process() -> ProcessId:
    """A process of this host that is not running (what a crashed jobbot leaves behind)."""
    return ProcessId(socket.gethostname(), 2**22 + 1, 1)

"""Run logs: one store interface (base.LogStore), kept as files (files.FileLogs, with SQLite)
or in the database (database.DatabaseLogs, with PostgreSQL, so every replica reads them)."""

from pathlib import Path

from core.logs.base import LOG_LIMIT, MAX_LINE, LogStore, LogWriter, Stamp, StoredEnd, limit_marker
from core.logs.database import DatabaseLogs
from core.logs.files import FileLogs
from core.store import Store

__all__ = ["LOG_LIMIT", "MAX_LINE", "DatabaseLogs", "FileLogs", "LogStore", "LogWriter", "Stamp",
           "StoredEnd", "limit_marker", "logs_for"]


def logs_for(store: Store, root: Path, limit: int = LOG_LIMIT) -> LogStore:
    """In the database with PostgreSQL (several replicas read them), else files under `root`."""
    if store.dialect == "postgresql":
        return DatabaseLogs(store, limit)
    return FileLogs(root, limit)

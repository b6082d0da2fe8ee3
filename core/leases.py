"""Leases on named roles (the Slack notifier, ...): with several replicas, one plays each."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from core.store import Store

logger = logging.getLogger(__name__)


class Lease:
    """Held for as long as this process lives (and, on PostgreSQL, its connection does).

    PostgreSQL: a session advisory lock on a connection kept open; a replica that dies drops
    its connection and so its lease. SQLite (one host): an flock on a file next to the database,
    dropped by the kernel when the process dies.
    """

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self.name = name
        self._conn: Connection | None = None
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._file is not None

    def try_acquire(self) -> bool:
        if self.held:
            return True
        if self._store.dialect == "postgresql":
            conn = self._store.engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:key))"),
                               {"key": f"jobbot-lease:{self.name}"}).scalar_one()
            conn.commit()
            if got:
                self._conn = conn
            else:
                conn.close()
            return bool(got)
        database = self._store.engine.url.database
        if not database or database == ":memory:":
            self._file = open("/dev/null")  # noqa: SIM115  (nothing to share with)
            return True
        handle = open(Path(database).with_suffix(f".lease-{self.name}"), "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def check(self) -> bool:
        """False if the lease was lost (its database connection broke); then it is released."""
        if self._conn is None:
            return self.held
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except DBAPIError:
            logger.warning("lease %s lost with its database connection", self.name)
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.close()  # closing the session drops its advisory locks
            self._conn = None
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None

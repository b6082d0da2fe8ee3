"""Replicas: each jobbot process holds a lease it renews on a heartbeat; what a replica whose
lease expired followed (its runs, roles and unhandled requests) is taken over by a live one.

The lease is a row of the replicas table (core/store/replicas.py), so liveness is one rule on
SQLite and PostgreSQL alike. A process of this host is also known dead at once when its pid
is gone; a process of another host only by its lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.models import utcnow
from core.procs import ProcessId
from core.store import Store

logger = logging.getLogger(__name__)
# Seconds a lease lives without renewal; it is renewed RENEWALS times in that span.
DEFAULT_EXPIRY = 20.0
RENEWALS = 4


@dataclass(frozen=True)
class Liveness:
    """Which owners (host:pid:start) are live, as the leases said at `now`."""

    me: str
    expiries: Mapping[str, datetime]
    now: datetime

    @classmethod
    def read(cls, store: Store, me: str) -> Liveness:
        """The leases as they are now (a blocking Store call)."""
        return cls(me, store.replica_expiries(), utcnow())

    def gone(self, owner: str | None) -> bool:
        """Whether `owner` can no longer do what it owns: no owner, a process of this host
        that died, an expired lease, or no lease at all on another host."""
        if owner is None:
            return True
        if owner == self.me:
            return False
        process = ProcessId.parse(owner)
        if process is not None and process.is_local and not process.is_alive():
            return True
        expires = self.expiries.get(owner)
        if expires is not None:
            return expires <= self.now
        # Without a lease (a process that never served, like a test's service): on this host
        # its pid tells; another host's could only be known by a lease it does not have.
        return process is None or not process.is_local

    def expired(self) -> list[str]:
        """The replicas whose lease has expired, oldest first."""
        return sorted((r for r, at in self.expiries.items() if at <= self.now and r != self.me),
                      key=lambda r: self.expiries[r])


Beat = Callable[[Liveness], Awaitable[object]]


class Replica:
    """This process's lease: registered at start, renewed every `period`, ended at a clean
    stop. Each beat also calls the hooks that take over the work of dead replicas."""

    def __init__(self, store: Store, me: ProcessId, *, expiry: float = DEFAULT_EXPIRY) -> None:
        self._store = store
        self.id = str(me)
        self.expiry = timedelta(seconds=expiry)
        self.period = expiry / RENEWALS
        self._hooks: list[tuple[str, Beat]] = []
        self.registered = False

    def on_beat(self, name: str, hook: Beat) -> None:
        """Call `hook` with the leases at each beat, after the renewal (in the order added)."""
        self._hooks.append((name, hook))

    async def liveness(self) -> Liveness:
        return await asyncio.to_thread(Liveness.read, self._store, self.id)

    async def register(self) -> None:
        """Write the lease (before this process records or follows anything)."""
        await asyncio.to_thread(self._store.register_replica, self.id, self.expiry)
        self.registered = True

    async def run(self) -> None:
        """Beat until cancelled (a database outage skips beats, it does not end this)."""
        if not self.registered:
            await self.register()
        while True:
            await asyncio.sleep(self.period)
            await self.beat()

    async def beat(self) -> None:
        try:
            renewed = await asyncio.to_thread(self._store.renew_replica, self.id, self.expiry)
            if not renewed:
                # Taken for dead (a pause longer than the expiry): what it followed is another
                # replica's now. Hold a lease again for what it does from here on.
                logger.error("replica %s: its lease had expired and was taken over", self.id)
                await asyncio.to_thread(self._store.register_replica, self.id, self.expiry)
            live = await self.liveness()
        except Exception:
            logger.exception("replica %s: renewing the lease failed", self.id)
            return
        for name, hook in self._hooks:
            try:
                await hook(live)
            except Exception:
                logger.exception("replica %s: taking over %s failed", self.id, name)

    async def end(self) -> None:
        """A clean stop: the lease expires now, so live replicas take over at their next beat."""
        if self.registered:
            try:
                await asyncio.to_thread(self._store.end_replica, self.id)
            except Exception:
                logger.exception("replica %s: ending the lease failed", self.id)
            self.registered = False

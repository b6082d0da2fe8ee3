"""Leases on named roles (the Slack notifier, ...): with several replicas, one plays each."""

from __future__ import annotations

import logging
import secrets
import threading

from sqlalchemy.exc import DBAPIError

from core.procs import ProcessId
from core.replicas import Liveness
from core.store import Store

logger = logging.getLogger(__name__)


class Lease:
    """A role held in the database for as long as its holder's replica lease lives.

    The holder is written as this process's replica id and a token of this Lease, so two
    Leases of one process exclude each other too. A holder that is gone by the replicas'
    leases (core/replicas.py) is replaced by one conditional UPDATE: of two replicas that
    see it gone, one takes the role.
    """

    def __init__(self, store: Store, name: str, *, me: ProcessId | None = None) -> None:
        self._store = store
        self.name = name
        self._replica = str(me or ProcessId.current())
        self._holder = f"{self._replica}#{secrets.token_hex(4)}"
        # try_acquire runs in a worker thread that may finish after its caller was cancelled
        # and released the lease: the lock and the flag make that late acquire let go at once.
        self._guard = threading.Lock()
        self._closed = False
        self.held = False

    def try_acquire(self) -> bool:
        with self._guard:
            if self._closed:
                return False
            holder = self._store.role_holder(self.name)
            if holder == self._holder:
                self.held = True
                return True
            if holder is not None:
                replica = holder.rsplit("#", 1)[0]
                live = Liveness.read(self._store, self._replica)
                # Another Lease of this process holds it until it lets go.
                if replica == self._replica or not live.gone(replica):
                    return False
                logger.info("role %s: its holder %s is gone; taking it over", self.name, holder)
            self.held = self._store.claim_role(self.name, holder, self._holder)
            return self.held

    def check(self) -> bool:
        """False if the role was lost (taken over while this replica was taken for dead, or
        the database cannot say)."""
        if not self.held:
            return False
        try:
            still = self._store.role_holder(self.name) == self._holder
        except DBAPIError:
            logger.warning("lease %s: the database does not answer", self.name)
            still = False
        if not still:
            logger.warning("lease %s lost", self.name)
            self.held = False
        return still

    def release(self) -> None:
        """Let go for good (a lease is not acquired again after this)."""
        with self._guard:
            self._closed = True
            if self.held:
                self.held = False
                try:
                    self._store.release_role(self.name, self._holder)
                except DBAPIError:
                    logger.warning("lease %s: letting go failed; it passes on when this "
                                   "replica's lease expires", self.name)

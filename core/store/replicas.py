"""Replica leases: each jobbot process's heartbeat row, taking over an expired one's runs, and
the roles (outbox subscribers) replicas hold."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, delete, select, update
from sqlmodel import col
from sqlmodel import select as orm_select

from core.models import ReplicaLease, RoleHolder, Run, utcnow
from core.store.base import LIVE_STATES, RUNS, StoreBase, chunks

REPLICAS: Table = ReplicaLease.__table__  # type: ignore[attr-defined]
ROLES: Table = RoleHolder.__table__  # type: ignore[attr-defined]


class ReplicaStore(StoreBase):
    def register_replica(self, replica: str, expiry: timedelta) -> None:
        """Write this process's lease, valid for `expiry` (a restart with the same id renews)."""
        now = utcnow()
        row = {"id": replica, "started_at": now, "renewed_at": now, "expires_at": now + expiry}
        insert = self._upsert(REPLICAS)
        with self._writing() as conn:
            conn.execute(insert.on_conflict_do_update(
                index_elements=["id"], set_={"renewed_at": insert.excluded.renewed_at,
                                             "expires_at": insert.excluded.expires_at}), [row])

    def renew_replica(self, replica: str, expiry: timedelta) -> bool:
        """Extend this process's lease; False if it is gone (another replica took it over)."""
        now = utcnow()
        with self._writing() as conn:
            result = conn.execute(update(REPLICAS).where(REPLICAS.c.id == replica)
                                  .values(renewed_at=now, expires_at=now + expiry))
            return bool(result.rowcount == 1)

    def end_replica(self, replica: str) -> None:
        """Let the lease expire now (a clean stop): live replicas take over at their next beat."""
        with self._writing() as conn:
            conn.execute(update(REPLICAS).where(REPLICAS.c.id == replica)
                         .values(expires_at=utcnow()))

    def replica_expiries(self) -> dict[str, datetime]:
        """Every lease and when it expires (one row per replica: a short list)."""
        with self._reading() as conn:
            return {row.id: row.expires_at
                    for row in conn.execute(select(REPLICAS.c.id, REPLICAS.c.expires_at))}

    def take_over_replica(self, dead: str, taker: str, executor: str) -> list[Run] | None:
        """Take an expired lease and, in the same transaction, the unfinished runs of
        `executor` it followed; the runs as they were (owner `dead`), or None if the lease
        is not expired or another replica took it first (deleting the row is the claim: of
        two takers, the second deletes nothing)."""
        with self._write() as session:
            claimed = session.execute(delete(REPLICAS).where(REPLICAS.c.id == dead,
                                                             REPLICAS.c.expires_at <= utcnow()))
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            mine = and_(RUNS.c.owner == dead, RUNS.c.state.in_(LIVE_STATES),
                        RUNS.c.executor == executor)
            runs = list(session.exec(orm_select(Run).where(mine)
                                     .order_by(col(Run.created_at))))
            for run in runs:
                session.expunge(run)  # keeps the owner it had
            session.execute(update(RUNS).where(mine).values(owner=taker))
            return runs

    def claim_run(self, run_id: str, previous: str | None, taker: str) -> bool:
        """Make an unfinished run `taker`'s if `previous` still owns it (one claimer wins)."""
        owned = RUNS.c.owner.is_(None) if previous is None else RUNS.c.owner == previous
        with self._writing() as conn:
            result = conn.execute(update(RUNS).where(RUNS.c.id == run_id, owned,
                                                     RUNS.c.state.in_(LIVE_STATES))
                                  .values(owner=taker))
            return bool(result.rowcount == 1)

    def run_owners(self, run_ids: list[str]) -> dict[str, str | None]:
        """The owner of each of these runs (runs not found are left out)."""
        owners: dict[str, str | None] = {}
        with self._reading() as conn:
            for chunk in chunks(run_ids):
                rows = conn.execute(select(RUNS.c.id, RUNS.c.owner).where(RUNS.c.id.in_(chunk)))
                owners.update((run_id, owner) for run_id, owner in rows)
        return owners

    def cancel_requests(self, owner: str) -> list[Run]:
        """Unfinished runs `owner` follows that someone (any process) asked to cancel."""
        with self._read() as session:
            return list(session.exec(orm_select(Run).where(
                Run.owner == owner, col(Run.state).in_(LIVE_STATES),
                col(Run.cancel_requested_by).is_not(None))))

    # -- roles ----------------------------------------------------------------------------

    def role_holder(self, name: str) -> str | None:
        with self._reading() as conn:
            holder: Any = conn.execute(select(ROLES.c.owner)
                                       .where(ROLES.c.name == name)).scalar_one_or_none()
            return str(holder) if holder is not None else None

    def claim_role(self, name: str, previous: str | None, taker: str) -> bool:
        """Make `taker` play role `name` if `previous` (None: nobody) still plays it."""
        with self._writing() as conn:
            if previous is None:
                inserted = conn.execute(
                    self._upsert(ROLES).on_conflict_do_nothing(index_elements=["name"])
                    .returning(ROLES.c.name),
                    [{"name": name, "owner": taker, "since": utcnow()}]).first()
                return inserted is not None
            result = conn.execute(update(ROLES).where(ROLES.c.name == name,
                                                      ROLES.c.owner == previous)
                                  .values(owner=taker, since=utcnow()))
            return bool(result.rowcount == 1)

    def release_role(self, name: str, owner: str) -> None:
        with self._writing() as conn:
            conn.execute(delete(ROLES).where(ROLES.c.name == name, ROLES.c.owner == owner))

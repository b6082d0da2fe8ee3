"""Approvals of runs waiting for them: each person's decision, and the state change it brings
(launch, denied, expired), decided in one transaction per decision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from core.errors import NotFound
from core.models import Run, RunApproval, RunEvent, RunState, utcnow
from core.store.audit import AuditRecord
from core.store.base import AUDIT_LOG, RUNS, StoreBase, chunks

APPROVED = "approved"
DENIED = "denied"


@dataclass(frozen=True)
class Decision:
    """Who decides what about a waiting run, and what the run must still be for it to count."""

    run_id: str
    who: str
    display: str
    source: str
    decision: str  # APPROVED or DENIED
    # The digest of the job's definition as it is now, and how many approvals it asks for.
    digest: str
    required: int
    # The process that launches the run if this decision completes its approvals.
    owner: str
    audit_target: str


@dataclass(frozen=True)
class Decided:
    """What a decision did: `outcome` is one of recorded (an approval, more needed), released
    (the last approval needed: the run is queued, this process launches it), denied, and the
    refusals duplicate, not_waiting, changed (the job's definition changed: the run ended) and
    expired (its time was up: the run ended)."""

    outcome: str
    run: Run
    approvals: list[RunApproval] = field(default_factory=list)


class ApprovalStore(StoreBase):
    def decide_approval(self, decision: Decision) -> Decided:
        """Record one person's decision on a waiting run and what follows from it.

        The run's row is locked first (SQLite writes one at a time anyway), so of two
        approvals arriving at once on two replicas, the second sees the first: exactly one of
        them releases the run."""
        now = utcnow()
        with self._write() as session:
            run = session.exec(orm_select(Run).where(Run.id == decision.run_id)
                               .with_for_update()).first()
            if run is None:
                raise NotFound(f"no run {decision.run_id!r}")
            if run.state != RunState.NEEDS_APPROVAL.value:
                return Decided("not_waiting", run, _approvals(session, run.id))
            if run.spec_digest != decision.digest:
                ended = _end(session, run, RunState.CANCELLED, changed_reason(run.job),
                             {"by": "jobbot"})
                _audit(session, decision, "ended", "the job's definition changed")
                return Decided("changed", ended or run, _approvals(session, run.id))
            if run.approval_expires_at is not None and run.approval_expires_at <= now:
                ended = _end(session, run, RunState.EXPIRED, _expired_reason(run),
                             {"by": "expiry"})
                return Decided("expired", ended or run, _approvals(session, run.id))
            known = session.get(RunApproval, (run.id, decision.who))
            if known is not None:
                return Decided("duplicate", run, _approvals(session, run.id))
            session.add(RunApproval(run_id=run.id, who=decision.who, display=decision.display,
                                    source=decision.source, decision=decision.decision, at=now))
            session.flush()
            approvals = _approvals(session, run.id)
            if decision.decision == DENIED:
                _audit(session, decision, "denied")
                ended = _end(session, run, RunState.DENIED, f"denied by {decision.display}",
                             {"by": decision.display})
                return Decided("denied", ended or run, approvals)
            approved = [a for a in approvals if a.decision == APPROVED]
            _audit(session, decision, "approved",
                   f"{len(approved)} of {decision.required} approvals")
            if len(approved) < decision.required:
                session.add(RunEvent(run_id=run.id, kind="approval", state=run.state,
                                     data={"by": decision.display, "approvals": len(approved),
                                           "required": decision.required},
                                     created_at=now))
                return Decided("recorded", run, approvals)
            released = _move(session, run, RunState.QUEUED, {"owner": decision.owner}, {
                "approved_by": [a.display for a in approved]})
            return Decided("released", released or run, approvals)

    def approvals(self, run_id: str) -> list[RunApproval]:
        """The decisions on a run, oldest first."""
        with self._read() as session:
            return _approvals(session, run_id)

    def approvals_of(self, run_ids: Sequence[str]) -> dict[str, list[RunApproval]]:
        """The decisions on each of `run_ids` that has any, oldest first."""
        found: dict[str, list[RunApproval]] = {}
        with self._read() as session:
            for chunk in chunks(list(dict.fromkeys(run_ids))):
                for row in session.exec(orm_select(RunApproval)
                                        .where(col(RunApproval.run_id).in_(chunk))
                                        .order_by(col(RunApproval.at))):
                    found.setdefault(row.run_id, []).append(row)
        return found

    def await_approval(self, run_id: str, digest: str, expires_at: datetime) -> Run | None:
        """Move a queued run that was never approved (a scheduled one) to needs_approval, for
        the definition `digest`, until `expires_at`; None if it was not queued."""
        with self._write() as session:
            run = session.get(Run, run_id)
            if run is None or run.state != RunState.QUEUED.value:
                return None
            return _move(session, run, RunState.NEEDS_APPROVAL,
                         {"spec_digest": digest, "approval_expires_at": expires_at}, {},
                         RunState.QUEUED)

    def expire_approvals(self, now: datetime | None = None) -> list[Run]:
        """End `expired` every run whose wait for approval is over; the runs this call ended
        (of replicas doing this at once, each run is ended by one)."""
        now = now or utcnow()
        with self._reading() as conn:
            due = list(conn.execute(select(RUNS.c.id).where(
                RUNS.c.state == RunState.NEEDS_APPROVAL.value,
                RUNS.c.approval_expires_at <= now)).scalars())
        ended: list[Run] = []
        for run_id in due:
            with self._write() as session:
                run = session.get(Run, run_id)
                if run is None or run.state != RunState.NEEDS_APPROVAL.value:
                    continue
                moved = _end(session, run, RunState.EXPIRED, _expired_reason(run),
                             {"by": "expiry"})
                if moved is not None:
                    session.execute(AUDIT_LOG.insert(), AuditRecord(
                        actor="jobbot", source="jobbot", action="approval",
                        target=f"{run.app}/{run.job}#{run.number}", result="expired",
                        detail=_expired_reason(run)).row())
                    ended.append(moved)
        return ended


def _approvals(session: Session, run_id: str) -> list[RunApproval]:
    return list(session.exec(orm_select(RunApproval).where(RunApproval.run_id == run_id)
                             .order_by(col(RunApproval.at))))


def changed_reason(job: str) -> str:
    """Why a run approved (or asked for) under another definition of its job never starts."""
    return (f"cancelled: the definition of {job} changed while the run waited for approval, "
            "so what was asked for is no longer what would run; start it again to ask for "
            "approval of the new one")


def _expired_reason(run: Run) -> str:
    return "expired: not approved in time"


def _audit(session: Session, decision: Decision, result: str, detail: str | None = None) -> None:
    session.execute(AUDIT_LOG.insert(), AuditRecord(
        actor=decision.who, source=decision.source,
        action="approve" if decision.decision == APPROVED else "deny",
        target=decision.audit_target, result=result, detail=detail).row())


def _end(session: Session, run: Run, state: RunState, reason: str,
         data: dict[str, Any]) -> Run | None:
    return _move(session, run, state, {"reason": reason, "finished_at": utcnow()},
                 {"reason": reason, **data})


def _move(session: Session, run: Run, state: RunState, values: dict[str, Any],
          data: dict[str, Any], source: RunState = RunState.NEEDS_APPROVAL) -> Run | None:
    """Move `run` from `source` to `state` with `values` and append its state event; None if
    another process moved it first (the update is conditional on `source`)."""
    result = session.execute(update(Run).where(col(Run.id) == run.id,
                                               col(Run.state) == source.value)
                             .values(state=state.value, **values))
    session.refresh(run)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    session.add(RunEvent(run_id=run.id, kind="state", state=run.state, data=data,
                         created_at=utcnow()))
    return run

"""The audit log: who did what, from where, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import col
from sqlmodel import select as orm_select

from core.models import AuditEntry, utcnow
from core.store.base import AUDIT_LOG, StoreBase


@dataclass(frozen=True)
class AuditRecord:
    """An audit-log line written in the same transaction as the change it describes."""

    actor: str
    source: str
    action: str
    target: str
    result: str
    detail: str | None = None

    def row(self, target_suffix: str = "") -> dict[str, Any]:
        """The audit_log row, cut to the columns' sizes, stamped now."""
        return {"at": utcnow(), "actor": self.actor, "source": self.source,
                "action": self.action, "target": (self.target + target_suffix)[:255],
                "result": self.result, "detail": self.detail[:2000] if self.detail else None}


class AuditStore(StoreBase):
    def audit(self, record: AuditRecord) -> None:
        with self._writing() as conn:
            conn.execute(AUDIT_LOG.insert(), record.row())

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        with self._read() as session:
            return list(session.exec(
                orm_select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)))

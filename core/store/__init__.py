"""All database access, one module per topic; `Store` combines them.

Each topic module (runs, jobs, audit, slack, github, replicas, logs, locks) holds one class of
methods on a shared base (base.StoreBase: the engine, its transactions and the migration lock), so a
topic reads on its own. Callers use `Store`, which inherits every topic's class: one object,
one engine. Every method is one short transaction; SQLite is the default, PostgreSQL serves several
replicas, and both run the same statements.
"""

from core.store.approvals import ApprovalStore, Decided, Decision
from core.store.audit import AuditRecord, AuditStore
from core.store.base import Abandoned
from core.store.github import GitHubStore, NewDelivery
from core.store.jobs import JobStore, ScheduleRow
from core.store.locks import Handed, LinePlace, LockStore
from core.store.logs import LogChunkStore
from core.store.replicas import ReplicaStore
from core.store.runs import ActiveRun, Created, NewRun, RunStore
from core.store.slack import SlackStore

__all__ = ["Abandoned", "ActiveRun", "AuditRecord", "Created", "Decided", "Decision",
           "Handed", "LinePlace",
           "NewDelivery", "NewRun", "ScheduleRow", "Store"]


class Store(RunStore, JobStore, AuditStore, SlackStore, GitHubStore, ReplicaStore,
            LogChunkStore, ApprovalStore, LockStore):
    """The one place that talks SQL."""

"""SQLModel tables: runs, attempts, run events (the outbox), job state, cursors, audit."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(**kwargs: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), **kwargs))


# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class RunState(enum.StrEnum):
    """Where a run is in its life; all but queued, needs_approval, waiting and running are final."""

    QUEUED = "queued"
    # Queued behind the run that holds its job's lock (app.yaml `lock:`); not launched yet.
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    # Waiting for the approvals its job's `approval:` asks for; denied or expired ends it.
    NEEDS_APPROVAL = "needs_approval"
    DENIED = "denied"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self not in (RunState.QUEUED, RunState.RUNNING, RunState.NEEDS_APPROVAL,
                            RunState.WAITING)


class Source(enum.StrEnum):
    """What started a run."""

    CLI = "cli"
    SLACK = "slack"
    GITHUB = "github"
    SCHEDULE = "schedule"
    WEB = "web"
    API = "api"


class Run(SQLModel, table=True):
    """One execution of a job (or a skipped cron slot), numbered per job."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("app", "job", "number", name="uq_runs_app_job_number"),
        Index("ix_runs_state", "state"),
        Index("ix_runs_lock_line", "app", "lock", "state", "lock_ticket"),
    )

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    app: str = Field(max_length=63)
    job: str = Field(max_length=63)
    number: int
    state: str = Field(max_length=16)
    source: str = Field(max_length=16)
    actor: str = Field(max_length=200)
    ref: str | None = Field(default=None, max_length=255)
    sha: str | None = Field(default=None, max_length=64)
    image: str | None = Field(default=None, max_length=512)
    overrides: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Values of the job's `secret: true` parameters, sealed with JOBBOT_SECRET_KEY (core.sealing):
    # never shown; opened only to launch the run or a rerun of it.
    secret_parameters: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}"))
    # Where the trigger came from, for links back (Slack channel/thread, PR number, ...).
    origin: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    idempotency_key: str | None = Field(
        default=None, sa_column=Column(String(255), unique=True, nullable=True)
    )
    scheduled_for: datetime | None = _ts(nullable=True)
    rerun_of: str | None = Field(default=None, max_length=32)
    executor: str = Field(default="local", max_length=32)
    # Which jobbot process follows the run ("host:pid:start"): the replica that launched or
    # adopted it. Another replica takes it over only once that one's lease expired.
    owner: str | None = Field(default=None, max_length=255)
    external_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts(nullable=False)
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=2000)
    cancel_requested_by: str | None = Field(default=None, max_length=200)
    # For a job with `approval:`: the digest of the job's definition the approvals are for
    # (core.approvals.spec_digest), and when the run stops waiting for them.
    spec_digest: str | None = Field(default=None, max_length=64)
    approval_expires_at: datetime | None = _ts(nullable=True)
    # The lock the run's job names (app.yaml `lock:`, shared within the app), the run's place
    # in its line (handed out in order of request), and the digest of what it was asked to
    # run with (core.locks.request_digest): a like request joins a waiting run.
    lock: str | None = Field(default=None, max_length=63)
    lock_ticket: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    request_digest: str | None = Field(default=None, max_length=64)

    @property
    def run_state(self) -> RunState:
        return RunState(self.state)

    @property
    def label(self) -> str:
        return f"{self.job} #{self.number}"

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()


class Attempt(SQLModel, table=True):
    """One try of a run: a process locally, a pod on Kubernetes."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_attempts_run_index"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=32, foreign_key="runs.id", index=True)
    index: int
    state: str = Field(max_length=16)
    started_at: datetime = _ts(nullable=False)
    finished_at: datetime | None = _ts(nullable=True)
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=2000)
    log_path: str | None = Field(default=None, max_length=1024)
    # Process id (local) or pod name (Kubernetes).
    handle: str | None = Field(default=None, max_length=255)


class RunEvent(SQLModel, table=True):
    """An append-only record of something that happened to a run; notifiers read these in order."""

    __tablename__ = "run_events"

    id: int | None = Field(
        default=None,
        sa_column=Column(BigId, primary_key=True, autoincrement=True),
    )
    run_id: str = Field(max_length=32, foreign_key="runs.id", index=True)
    kind: str = Field(max_length=32)
    state: str = Field(max_length=16)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts(nullable=False)


class JobState(SQLModel, table=True):
    """Per job: the last run number handed out, whether it is paused, and for a scheduled job
    which schedule was last seen and the last slot the scheduler handled.

    `fingerprint` changes when the job's expressions or time zone change; the scheduler then
    starts from "now" instead of catching up on slots of the old schedule. The schedule lives
    in this row, not a table of its own, because each scheduler round numbers a job's runs and
    moves its last slot together: one row, one page written per job at commit. On PostgreSQL
    the table's pages are kept half empty (migration 0010), so those updates stay in place.
    """

    __tablename__ = "job_state"
    __table_args__ = (Index("ix_job_state_paused", "paused"),)  # read every scheduler round

    app: str = Field(primary_key=True, max_length=63)
    job: str = Field(primary_key=True, max_length=63)
    last_number: int = 0
    paused: bool = False
    paused_by: str | None = Field(default=None, max_length=200)
    paused_at: datetime | None = _ts(nullable=True)
    fingerprint: str | None = Field(default=None, max_length=64)
    last_slot: datetime | None = _ts(nullable=True)


class SubscriberCursor(SQLModel, table=True):
    """How far each outbox subscriber (Slack notifier, GitHub checks, ...) has read."""

    __tablename__ = "subscriber_cursors"

    name: str = Field(primary_key=True, max_length=64)
    last_event_id: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = _ts(nullable=False)


class AuditEntry(SQLModel, table=True):
    """Who did what, from where, and how it ended."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(nullable=False)
    actor: str = Field(max_length=200)
    source: str = Field(max_length=16)
    action: str = Field(max_length=32)
    target: str = Field(max_length=255)
    result: str = Field(max_length=32)
    detail: str | None = Field(default=None, max_length=2000)



class RunApproval(SQLModel, table=True):
    """One person's approval or denial of a run waiting for approval; a person counts once."""

    __tablename__ = "run_approvals"

    # No foreign key: pruning a run's history deletes its approvals itself.
    run_id: str = Field(sa_column=Column(String(32), primary_key=True))
    # The actor's id (slack:U…, github:login): who counts once, whatever front end they use.
    who: str = Field(sa_column=Column(String(200), primary_key=True))
    display: str = Field(max_length=200)
    source: str = Field(max_length=16)
    decision: str = Field(max_length=16)
    at: datetime = _ts(nullable=False)


class SlackMessage(SQLModel, table=True):
    """The Slack thread of a run: where its parent message is, and the last event shown there."""

    __tablename__ = "slack_messages"

    run_id: str = Field(sa_column=Column(String(32), primary_key=True))
    channel: str = Field(max_length=64)
    ts: str = Field(max_length=32)
    # Outbox events up to this id are in the thread, so a redelivery never repeats a reply.
    last_event_id: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = _ts(nullable=False)


class SlackWork(SQLModel, table=True):
    """A Slack command or click, written before its ack and done after it (replayed on restart)."""

    __tablename__ = "slack_work"

    # Derived from the original request (its trigger_id), so a Slack retry finds its row.
    key: str = Field(sa_column=Column(String(200), primary_key=True))
    kind: str = Field(max_length=32)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    received_at: datetime = _ts(nullable=False)
    done_at: datetime | None = _ts(nullable=True, index=True)
    # The process that recorded it (host:pid:start); another replays it only if that one died.
    owner: str | None = Field(default=None, max_length=200)


class SlackConfirmation(SQLModel, table=True):
    """A run of a `confirm: true` job waiting for its requester's Run or Cancel click."""

    __tablename__ = "slack_confirmations"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    requester: str = Field(max_length=64)
    # The command (job, overrides, ref), the actor and the origin, as plain JSON.
    command: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    actor: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    origin: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    expires_at: datetime = _ts(nullable=False, index=True)
    # "confirmed" or "declined" once answered, and the key of the Slack work that answered.
    answer: str | None = Field(default=None, max_length=16)
    answer_key: str | None = Field(default=None, max_length=200)


class Delivery(SQLModel, table=True):
    """One webhook delivery received (GitHub's X-GitHub-Delivery), so a redelivery does nothing."""

    __tablename__ = "deliveries"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    event: str = Field(max_length=64)
    action: str | None = Field(default=None, max_length=64)
    received_at: datetime = _ts(nullable=False)
    outcome: str = Field(default="received", max_length=2000)
    # The JSON body, kept until the delivery is handled, so work answered 202 survives a restart.
    payload: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The process that answered it (host:pid:start); another replays it only if that one died.
    owner: str | None = Field(default=None, max_length=200)


class ServedRepository(SQLModel, table=True):
    """A repository the GitHub App is installed on, and so serves."""

    __tablename__ = "github_repositories"

    full_name: str = Field(sa_column=Column(String(255), primary_key=True))
    installation_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    added_at: datetime = _ts(nullable=False)


class ForkApproval(SQLModel, table=True):
    """A maintainer's `/ok-to-test` for one head sha of a fork's pull request (as Prow)."""

    __tablename__ = "github_approvals"

    repository: str = Field(sa_column=Column(String(255), primary_key=True))
    sha: str = Field(sa_column=Column(String(64), primary_key=True))
    pull_request: int
    approved_by: str = Field(max_length=200)
    approved_at: datetime = _ts(nullable=False)


class RepositoryApp(SQLModel, table=True):
    """The app a repository defines: its app.yaml as last read from a push to a build branch."""

    __tablename__ = "github_repository_apps"

    repository: str = Field(sa_column=Column(String(255), primary_key=True))
    app: str = Field(sa_column=Column(String(63), nullable=False, unique=True))
    sha: str = Field(max_length=64)
    app_yaml: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = _ts(nullable=False)


class BranchHead(SQLModel, table=True):
    """The newest push received per branch: work of older pushes to it is superseded."""

    __tablename__ = "github_branch_heads"

    repository: str = Field(sa_column=Column(String(255), primary_key=True))
    branch: str = Field(sa_column=Column(String(255), primary_key=True))
    sha: str = Field(max_length=64)
    updated_at: datetime = _ts(nullable=False)


class PullRequestHead(SQLModel, table=True):
    """A head sha a pull request had and when it became head (from pull_request events), so
    `/ok-to-test` binds to the head that was current when its comment was written."""

    __tablename__ = "github_pull_request_heads"
    __table_args__ = (UniqueConstraint("repository", "pull_request", "since", "sha",
                                       name="uq_github_pull_request_heads"),)

    # Also the order jobbot heard of heads that became head in the same second.
    id: int | None = Field(
        default=None,
        sa_column=Column(BigId, primary_key=True, autoincrement=True),
    )
    repository: str = Field(sa_column=Column(String(255), nullable=False))
    pull_request: int = Field(sa_column=Column(Integer, nullable=False))
    sha: str = Field(sa_column=Column(String(64), nullable=False))
    since: datetime = _ts(nullable=False)


class PullRequestComment(SQLModel, table=True):
    """jobbot's one comment per pull request (the runs table it keeps up to date)."""

    __tablename__ = "github_pull_request_comments"

    repository: str = Field(sa_column=Column(String(255), primary_key=True))
    pull_request: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    comment_id: int = Field(sa_column=Column(BigInteger, nullable=False))


class ReplicaLease(SQLModel, table=True):
    """A jobbot process's lease: renewed on its heartbeat; once expired, a live replica takes
    over what it followed (core/replicas.py)."""

    __tablename__ = "replicas"

    # host:pid:start, as the owner columns of runs and requests write it.
    id: str = Field(sa_column=Column(String(255), primary_key=True))
    started_at: datetime = _ts(nullable=False)
    renewed_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False, index=True)


class RoleHolder(SQLModel, table=True):
    """Which replica plays a named role (an outbox subscriber), while its lease lives."""

    __tablename__ = "replica_roles"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    owner: str = Field(max_length=255)
    since: datetime = _ts(nullable=False)


class LogChunk(SQLModel, table=True):
    """A piece of an attempt's log (already masked), in order by `seq`; with PostgreSQL, logs
    live here so that every replica reads them. A finished attempt's pieces are merged into
    one compressed row whose `seq` is the last merged one's, so a reader's cursor still holds."""

    __tablename__ = "log_chunks"

    # A run id, or a build's log key: no foreign key, pruning deletes a run's chunks itself.
    run_id: str = Field(sa_column=Column(String(128), primary_key=True))
    attempt: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    seq: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    # The attempt's line number (from 0) of the first line here, and how many lines it holds.
    first_line: int = Field(sa_column=Column(Integer, nullable=False))
    lines: int = Field(sa_column=Column(Integer, nullable=False))
    # Bytes of text (uncompressed), counted against the per-attempt limit.
    size: int = Field(sa_column=Column(Integer, nullable=False))
    # UTF-8 text of whole lines, each ending in a newline; zlib-compressed when `compressed`.
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    compressed: bool = Field(sa_column=Column(Boolean, nullable=False, default=False))
    # The source's timestamp of the last line kept so far, and how many lines had exactly that
    # timestamp (a Kubernetes pod log resumes from there: sinceTime, skipping those lines).
    stamp: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    stamp_lines: int = Field(sa_column=Column(Integer, nullable=False, default=0))


class RunLock(SQLModel, table=True):
    """A lock of an app (app.yaml `lock:`): the run holding it and the last ticket handed out.

    Every grant and hand-over locks this row first (SELECT ... FOR UPDATE on PostgreSQL; the
    write transaction on SQLite), so one run holds it at a time across replicas."""

    __tablename__ = "run_locks"

    app: str = Field(sa_column=Column(String(63), primary_key=True))
    name: str = Field(sa_column=Column(String(63), primary_key=True))
    holder: str | None = Field(default=None, max_length=32)
    last_ticket: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = _ts(nullable=False)

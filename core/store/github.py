"""GitHub state: webhook deliveries, served repositories and their apps, branch heads, pull
request comments and fork approvals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from sqlmodel import select as orm_select

from core.models import (
    BranchHead,
    Delivery,
    ForkApproval,
    PullRequestComment,
    PullRequestHead,
    RepositoryApp,
    Run,
    ServedRepository,
    utcnow,
)
from core.store.base import BRANCH_HEADS, DELIVERIES, Abandoned, StoreBase

REPOSITORY_APPS: Table = RepositoryApp.__table__  # type: ignore[attr-defined]
# The outcome of a delivery recorded but not handled yet.
RECEIVED = "received"


@dataclass(frozen=True)
class NewDelivery:
    """A verified webhook delivery to record before it is answered."""

    id: str
    event: str
    action: str | None
    # The JSON body, kept until the delivery is handled.
    payload: str
    owner: str
    # (repository, branch, sha) when it is a push to a branch.
    head: tuple[str, str, str] | None = None


class GitHubStore(StoreBase):
    def record_delivery(self, delivery: NewDelivery) -> bool:
        """Record a delivery, payload included, before it is answered; False (nothing written)
        for a known id. A new push moves its branch's head, in the same transaction, unless a
        push answered later is stored there already."""
        now = utcnow()
        row = {"id": delivery.id, "event": delivery.event[:64],
               "action": delivery.action[:64] if delivery.action else None,
               "received_at": now, "outcome": RECEIVED, "payload": delivery.payload,
               "owner": delivery.owner}
        with self._writing() as conn:
            # Two replicas may record the same id at once: the conflict clause settles it.
            new = conn.execute(self._upsert(DELIVERIES)
                               .on_conflict_do_nothing(index_elements=["id"])
                               .returning(DELIVERIES.c.id), [row]).first() is not None
            if new and delivery.head is not None:
                repository, branch, sha = delivery.head
                head = self._upsert(BRANCH_HEADS)
                conn.execute(head.on_conflict_do_update(
                    index_elements=["repository", "branch"],
                    set_={"sha": head.excluded.sha, "updated_at": head.excluded.updated_at},
                    where=head.excluded.updated_at >= BRANCH_HEADS.c.updated_at),
                    [{"repository": repository, "branch": branch, "sha": sha, "updated_at": now}])
            return new

    def finish_delivery(self, delivery_id: str, outcome: str) -> None:
        """Record what a delivery did; its payload is no longer needed."""
        with self._writing() as conn:
            conn.execute(update(DELIVERIES).where(DELIVERIES.c.id == delivery_id)
                         .values(outcome=outcome[:2000], payload=None))

    def take_over_deliveries(self, owner: str, abandoned: Abandoned) -> list[Delivery]:
        """The unhandled deliveries of dead processes (by `abandoned`), now `owner`'s, oldest
        first."""
        rows = self._take_over(DELIVERIES, DELIVERIES.c.outcome == RECEIVED, owner, abandoned)
        return sorted((Delivery.model_validate(dict(row)) for row in rows),
                      key=lambda delivery: (delivery.received_at, delivery.id))

    def unhandled_delivery_count(self) -> int:
        with self._reading() as conn:
            return int(conn.execute(select(func.count()).select_from(DELIVERIES)
                                    .where(DELIVERIES.c.outcome == RECEIVED)).scalar_one())

    def prune_deliveries(self, received_before: datetime) -> int:
        """Forget handled deliveries received before then; unhandled ones stay to be replayed."""
        with self._writing() as conn:
            result = conn.execute(delete(DELIVERIES)
                                  .where(DELIVERIES.c.received_at < received_before,
                                         DELIVERIES.c.outcome != RECEIVED))
            return int(result.rowcount or 0)

    def delivery(self, delivery_id: str) -> Delivery | None:
        with self._read() as session:
            return session.get(Delivery, delivery_id)

    def add_repositories(self, installation_id: int, names: Sequence[str]) -> None:
        with self._write() as session:
            for name in names:
                row = session.get(ServedRepository, name)
                if row is None:
                    session.add(ServedRepository(full_name=name, installation_id=installation_id,
                                                 added_at=utcnow()))
                else:
                    row.installation_id = installation_id

    def remove_repositories(self, names: Sequence[str] | None = None, *,
                            installation_id: int | None = None) -> None:
        """Forget `names`, or every repository of `installation_id` (the app was uninstalled)."""
        with self._write() as session:
            query = orm_select(ServedRepository)
            if names is not None:
                query = query.where(col(ServedRepository.full_name).in_(list(names)))
            if installation_id is not None:
                query = query.where(col(ServedRepository.installation_id) == installation_id)
            for row in session.exec(query):
                session.delete(row)

    def replace_served_repositories(self, installations: Mapping[int, Sequence[str]]) -> None:
        """The repositories of every installation, as GitHub lists them now: the served list
        becomes exactly that (what was uninstalled while jobbot was down goes)."""
        wanted = {name: installation_id for installation_id, names in installations.items()
                  for name in names}
        with self._write() as session:
            for row in session.exec(orm_select(ServedRepository)):
                if row.full_name not in wanted:
                    session.delete(row)
                else:
                    row.installation_id = wanted.pop(row.full_name)
            now = utcnow()
            for name, installation_id in wanted.items():
                session.add(ServedRepository(full_name=name, installation_id=installation_id,
                                             added_at=now))

    def served_repository(self, full_name: str) -> ServedRepository | None:
        with self._read() as session:
            return session.get(ServedRepository, full_name)

    def served_repositories(self) -> list[ServedRepository]:
        with self._read() as session:
            return list(session.exec(orm_select(ServedRepository)
                                     .order_by(col(ServedRepository.full_name))))

    def branch_head(self, repository: str, branch: str) -> str | None:
        """The sha of the newest push received for the branch."""
        with self._read() as session:
            row = session.get(BranchHead, (repository, branch))
            return row.sha if row is not None else None

    def repository_apps(self) -> list[RepositoryApp]:
        with self._read() as session:
            return list(session.exec(orm_select(RepositoryApp)
                                     .order_by(col(RepositoryApp.repository))))

    def save_repository_app(self, repository: str, app: str, sha: str, app_yaml: str) -> str | None:
        """Remember the app `repository` defines; if another repository already defines an app
        of that name, nothing changes and that repository is returned."""
        with self._writing() as conn:
            other = conn.execute(select(REPOSITORY_APPS.c.repository).where(
                REPOSITORY_APPS.c.app == app, REPOSITORY_APPS.c.repository != repository)
            ).scalar()
            if other is not None:
                return str(other)
            # An upsert: two deliveries of one repository may save its app at once.
            row = self._upsert(REPOSITORY_APPS).values(
                repository=repository, app=app, sha=sha, app_yaml=app_yaml, updated_at=utcnow())
            conn.execute(row.on_conflict_do_update(index_elements=["repository"], set_={
                name: row.excluded[name] for name in ("app", "sha", "app_yaml", "updated_at")}))
            return None

    def pull_request_comment(self, repository: str, number: int) -> int | None:
        with self._read() as session:
            row = session.get(PullRequestComment, (repository, number))
            return row.comment_id if row is not None else None

    def save_pull_request_comment(self, repository: str, number: int, comment_id: int) -> None:
        with self._write() as session:
            row = session.get(PullRequestComment, (repository, number))
            if row is None:
                session.add(PullRequestComment(repository=repository, pull_request=number,
                                               comment_id=comment_id))
            else:
                row.comment_id = comment_id

    def approve_sha(self, repository: str, sha: str, pull_request: int, by: str) -> None:
        with self._write() as session:
            if session.get(ForkApproval, (repository, sha)) is None:
                session.add(ForkApproval(repository=repository, sha=sha,
                                         pull_request=pull_request, approved_by=by,
                                         approved_at=utcnow()))

    def approval(self, repository: str, sha: str) -> ForkApproval | None:
        with self._read() as session:
            return session.get(ForkApproval, (repository, sha))

    def runs_for_sha(self, sha: str, limit: int = 200) -> list[Run]:
        """Runs of any job at this commit, newest first."""
        with self._read() as session:
            return list(session.exec(orm_select(Run).where(col(Run.sha) == sha)
                                     .order_by(col(Run.created_at).desc()).limit(limit)))

    def runs_for_pull_request(self, repository: str, number: int, limit: int = 50) -> list[Run]:
        """Runs started for a pull request (origin repository and pull_request), newest first."""
        origin = col(Run.origin)
        query = (orm_select(Run)
                 .where(origin["repository"].as_string() == repository,
                        origin["pull_request"].as_integer() == number)
                 .order_by(col(Run.created_at).desc()).limit(limit))
        with self._read() as session:
            return list(session.exec(query))

    # -- which app a repository defines, and the heads a pull request had -------------

    def repository_app(self, repository: str) -> RepositoryApp | None:
        """The app `repository` defines, as last stored (by any replica)."""
        with self._read() as session:
            return session.get(RepositoryApp, repository)

    def record_pull_request_head(self, repository: str, number: int, sha: str,
                                 since: datetime) -> None:
        """Remember that `sha` became the head of the pull request at `since` (once: a
        repeated event changes nothing)."""
        try:
            with self._write() as session:
                found = session.exec(orm_select(PullRequestHead).where(
                    col(PullRequestHead.repository) == repository,
                    col(PullRequestHead.pull_request) == number,
                    col(PullRequestHead.since) == since,
                    col(PullRequestHead.sha) == sha)).first()
                if found is None:
                    session.add(PullRequestHead(repository=repository, pull_request=number,
                                                sha=sha, since=since))
        except IntegrityError:
            return  # another replica recorded the same event at the same moment

    def pull_request_heads(self, repository: str, number: int) -> list[PullRequestHead]:
        """The heads the pull request had, in the order they became head (the same second:
        in the order jobbot heard of them)."""
        with self._read() as session:
            return list(session.exec(orm_select(PullRequestHead).where(
                col(PullRequestHead.repository) == repository,
                col(PullRequestHead.pull_request) == number)
                .order_by(col(PullRequestHead.since), col(PullRequestHead.id))))

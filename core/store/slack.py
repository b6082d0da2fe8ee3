"""Slack state: run threads, commands and clicks recorded before their ack, confirmations."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import col

from core.models import SlackConfirmation, SlackMessage, SlackWork, utcnow
from core.store.base import SLACK_WORK, Abandoned, StoreBase


class SlackStore(StoreBase):
    def slack_message(self, run_id: str) -> SlackMessage | None:
        with self._read() as session:
            return session.get(SlackMessage, run_id)

    def save_slack_message(self, run_id: str, channel: str, ts: str,
                           last_event_id: int) -> None:
        """Remember a run's parent message and how far its thread got (insert or update)."""
        with self._write() as session:
            row = session.get(SlackMessage, run_id)
            if row is None:
                session.add(SlackMessage(run_id=run_id, channel=channel, ts=ts,
                                         last_event_id=last_event_id, updated_at=utcnow()))
            else:
                row.channel, row.ts, row.updated_at = channel, ts, utcnow()
                row.last_event_id = max(row.last_event_id, last_event_id)

    def record_slack_work(self, key: str, kind: str, body: dict[str, Any], owner: str) -> bool:
        """Record a command or click before its ack; False (nothing written) for a known key."""
        row = {"key": key, "kind": kind, "body": body, "received_at": utcnow(), "done_at": None,
               "owner": owner}
        with self._writing() as conn:
            inserted = conn.execute(
                self._upsert(SLACK_WORK).on_conflict_do_nothing(index_elements=["key"])
                .returning(SLACK_WORK.c.key), [row]).first()
        return inserted is not None

    def finish_slack_work(self, key: str) -> None:
        with self._writing() as conn:
            conn.execute(update(SLACK_WORK).where(SLACK_WORK.c.key == key)
                         .values(done_at=utcnow()))

    def take_over_slack_work(self, owner: str, abandoned: Abandoned) -> list[SlackWork]:
        """The unfinished work of dead processes (by `abandoned`), now `owner`'s, oldest first."""
        rows = self._take_over(SLACK_WORK, SLACK_WORK.c.done_at.is_(None), owner, abandoned)
        return sorted((SlackWork.model_validate(dict(row)) for row in rows),
                      key=lambda work: work.received_at)

    def prune_slack_work(self, received_before: datetime) -> int:
        """Forget work received before then, done or not (kept so late Slack retries find it)."""
        with self._writing() as conn:
            result = conn.execute(delete(SLACK_WORK)
                                  .where(SLACK_WORK.c.received_at < received_before))
            return int(result.rowcount or 0)

    def add_confirmation(self, row: SlackConfirmation) -> None:
        """Save a pending confirmation; ones expired a day ago are forgotten on the way."""
        with self._write() as session:
            session.execute(delete(SlackConfirmation).where(
                col(SlackConfirmation.expires_at) < utcnow() - timedelta(days=1)))
            session.add(row)

    def confirmation(self, confirmation_id: str) -> SlackConfirmation | None:
        with self._read() as session:
            return session.get(SlackConfirmation, confirmation_id)

    def answer_confirmation(self, confirmation_id: str, requester: str, answer: str,
                            answer_key: str, now: datetime) -> SlackConfirmation | None:
        """Record the requester's answer if the confirmation is open; the row as it now is.

        The caller compares `answer_key` with the row's to tell its own answer (also when
        replayed after a restart) from an earlier one.
        """
        with self._write() as session:
            row = session.get(SlackConfirmation, confirmation_id)
            if (row is not None and row.answer is None and row.requester == requester
                    and row.expires_at > now):
                row.answer, row.answer_key = answer, answer_key
            return row

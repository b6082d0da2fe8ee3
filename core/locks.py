"""Locks beside the store: what makes two requests alike (joining), and how a waiting run's
place in its lock's line is said, the same in Slack, on GitHub, on pages and in the terminal
(each front end marks up the names as it needs)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime

from core.models import Run, utcnow
from core.sealing import Sealer
from core.store import LinePlace


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    if 10 <= number % 100 <= 20:
        return f"{number}th"
    return f"{number}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th')}"


def ago(when: datetime, now: datetime | None = None) -> str:
    """How long ago `when` was, roughly: just now, 3 min ago, 2 h ago, 4 days ago."""
    seconds = max(((now or utcnow()) - when).total_seconds(), 0)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days > 1 else ''} ago"


def line_text(place: LinePlace, *, name: Callable[[str], str] = str,
              label: Callable[[Run], str] = lambda run: run.label,
              person: Callable[[Run], str] = lambda run: run.actor,
              now: datetime | None = None) -> str:
    """`waiting for db-prod: 2nd in line, behind migrate #41, started by alice 3 min ago`;
    `name`, `label` and `person` render the lock's name, a run and who started it."""
    text = f"waiting for {name(place.lock)}: {ordinal(place.position)} in line"
    holder = place.holder
    if holder is not None:
        since = holder.started_at or holder.created_at
        text += f", behind {label(holder)}, started by {person(holder)} {ago(since, now)}"
    return text


def request_digest(sealer: Sealer, *, ref: str | None, sha: str | None, image: str | None,
                   values: Mapping[str, str], secrets: Mapping[str, str]) -> str:
    """What a run is asked to run with, as a digest: like requests have equal digests. Secret
    values are in it only through a keyed digest (the sealer's key), never in the clear."""
    text = json.dumps({"ref": ref, "sha": sha, "image": image, "values": dict(values),
                       "secrets": sealer.digest(json.dumps(dict(secrets), sort_keys=True))
                       if secrets else None}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()

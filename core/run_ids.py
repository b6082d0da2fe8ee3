"""Run ids: how jobbot makes them and how a word is recognised as one."""

from __future__ import annotations

import os
import re
import time

# 24 hex digits; 16 for runs created before ids began with their creation time.
_RUN_ID = re.compile(r"(?:[0-9a-f]{8})?[0-9a-f]{16}")


def new_run_id() -> str:
    """A stable, unguessable run id (also used in page URLs): the creation second, then 64
    random bits, in hex.

    The time in front keeps new ids next to each other in the runs' primary key and in the
    run events' index. With random ids, a scheduler batch of N runs dirtied about N pages of
    each index, and SQLite writes every dirty page to its WAL at commit (bench/scheduler.py).
    """
    return new_run_ids(1)[0]


def new_run_ids(count: int) -> list[str]:
    """`count` run ids, with one read of the system's randomness for all of them."""
    prefix = f"{int(time.time()):08x}"
    randomness = os.urandom(8 * count).hex()
    return [prefix + randomness[start:start + 16] for start in range(0, 16 * count, 16)]


def is_run_id(word: str) -> bool:
    """True when `word` has the shape of a run id (whether or not such a run exists)."""
    return _RUN_ID.fullmatch(word) is not None

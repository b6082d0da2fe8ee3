"""Run ids: how jobbot makes them and how a word is recognised as one."""

from __future__ import annotations

import os
import re
import time

# 28 hex digits; runs recorded by earlier versions have ids of 24 or 16, and keep them.
_RUN_ID = re.compile(r"(?:[0-9a-f]{8}(?:[0-9a-f]{4})?)?[0-9a-f]{16}")


def new_run_id() -> str:
    """A stable, unguessable run id (also used in page URLs): the creation time (the second,
    then its 1/65536th), then 64 random bits, in hex."""
    return new_run_ids(1)[0]


def new_run_ids(count: int) -> list[str]:
    """`count` run ids, with one read of the system's randomness for all of them.

    The creation time in front, to 1/65536 s, keeps new ids after older ones in the runs'
    primary key and the run events' index: a batch of runs adds to the last pages of each
    instead of dirtying a page per run, and SQLite writes every dirty page at commit.
    """
    now = time.time()
    prefix = f"{int(now):08x}{int(now % 1 * 65536):04x}"
    randomness = os.urandom(8 * count).hex()
    return [prefix + randomness[start:start + 16] for start in range(0, 16 * count, 16)]


def is_run_id(word: str) -> bool:
    """True when `word` has the shape of a run id (whether or not such a run exists)."""
    return _RUN_ID.fullmatch(word) is not None

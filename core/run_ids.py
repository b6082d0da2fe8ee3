"""Run ids: how jobbot makes them and how a word is recognised as one."""

from __future__ import annotations

import os
import re
import time

# 28 hex digits now; 24 for runs created while the prefix was the second alone, and 16 for
# runs created before ids began with their creation time.
_RUN_ID = re.compile(r"(?:[0-9a-f]{8}(?:[0-9a-f]{4})?)?[0-9a-f]{16}")


def new_run_id() -> str:
    """A stable, unguessable run id (also used in page URLs): the creation time (the second,
    then its 1/65536th), then 64 random bits, in hex."""
    return new_run_ids(1)[0]


def new_run_ids(count: int) -> list[str]:
    """`count` run ids, with one read of the system's randomness for all of them.

    The time in front keeps new ids after the ones before them in the runs' primary key and
    in the run events' index: a batch of N runs adds to the last pages of each, where random
    ids dirtied about N pages, and SQLite writes every dirty page to its WAL at commit. The
    second alone was not fine enough: batches made within one second (a scheduler on virtual
    time, a burst of triggers) each scattered their ids among the earlier ones of that second.
    """
    now = time.time()
    prefix = f"{int(now):08x}{int(now % 1 * 65536):04x}"
    randomness = os.urandom(8 * count).hex()
    return [prefix + randomness[start:start + 16] for start in range(0, 16 * count, 16)]


def is_run_id(word: str) -> bool:
    """True when `word` has the shape of a run id (whether or not such a run exists)."""
    return _RUN_ID.fullmatch(word) is not None

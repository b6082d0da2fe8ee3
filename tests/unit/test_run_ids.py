"""Run ids: their shape, their order by creation, and the words taken for one."""

from __future__ import annotations

import time

from bot.commands import looks_like_run
from core.run_ids import is_run_id, new_run_id, new_run_ids


def test_ids_are_the_creation_time_then_random_and_unique() -> None:
    before = time.time()
    ids = new_run_ids(1000) + [new_run_id() for _ in range(1000)]
    after = time.time()
    assert len(set(ids)) == 2000
    assert all(len(i) == 28 and is_run_id(i) for i in ids)
    made = [int(i[:8], 16) + int(i[8:12], 16) / 65536 for i in ids]
    assert all(int(before) <= at <= after for at in made)
    # The random part differs even within one batch made at one instant.
    assert len({i[12:] for i in ids[:1000]}) == 1000


def test_a_later_batch_sorts_after_an_earlier_one_within_the_same_second() -> None:
    first = new_run_ids(100)
    time.sleep(0.001)  # over 1/65536 s: the next batch has a later prefix
    second = new_run_ids(100)
    assert max(first) < min(second)


def test_words_taken_for_a_run_id() -> None:
    assert is_run_id("0123456789abcdef")  # ids made before the time prefix stay valid
    assert is_run_id("6b031607607ff7f00f3e67a1")  # the creation second, then 64 random bits
    assert is_run_id("6b0316070a1b607ff7f00f3e67a1")
    for word in ("migrate", "0123456789abcde", "0123456789ABCDEF", "6b031607607ff7f00f3e67a",
                 "6b031607607ff7f00f3e67a1f", "6b031607607ff7f00f3e67a1ff",
                 "6b0316070a1b607ff7f00f3e67a1f", " 0123456789abcdef", "0123456789abcdeg",
                 "0123456789abcdef\n"):
        assert not is_run_id(word), word
    assert looks_like_run("6b031607607ff7f00f3e67a1")
    assert looks_like_run("migrate#4")
    assert not looks_like_run("migrate")

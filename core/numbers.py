"""Whole numbers from untrusted text (query strings, headers, commands, CLI options), bounded."""

from __future__ import annotations

import re

from core.errors import BadInput

# Run numbers, attempts and line counts live in 32-bit integer columns on PostgreSQL.
INT32_MAX = 2**31 - 1
_SHOWN = 20  # characters of a bad value quoted back in the message


def bounded_int(text: str | None, lo: int, hi: int, *, name: str) -> int:
    """`text` as an int from `lo` to `hi`, or BadInput that names `name` and the range.

    Only ASCII digits count (no sign, spaces, underscores, or digits of other scripts such as
    `²` or `٣`), and no more of them than `hi` has, so `int()` never sees a huge number."""
    width = len(str(hi))
    if text is not None and re.fullmatch(rf"[0-9]{{1,{width}}}", text):
        value = int(text)
        if lo <= value <= hi:
            return value
    raise BadInput(f"{name} must be a whole number from {lo} to {hi}, not {shown(text)}")


def shown(text: str | None) -> str:
    """A bad value as quoted back in a message: cut short, with its quotes."""
    if text is None:
        return "nothing"
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")

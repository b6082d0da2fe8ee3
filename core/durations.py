"""Durations in app.yaml: whole seconds, or a string such as 90s, 15m, 1h30m, 2d."""

from __future__ import annotations

import re

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PATTERN = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
HELP = "use whole seconds (480) or a string like 90s, 15m, 1h30m or 2d"


def parse_duration(value: object) -> int:
    """Seconds in `value`; raises ValueError with a message that says what is allowed."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: {HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative: {HELP}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _PATTERN.match(text)
        if text and match:
            parts = zip(match.groups(), _UNITS.values(), strict=True)
            return sum(int(n) * unit for n, unit in parts if n)
    raise ValueError(f"{value!r} is not a duration: {HELP}")


def format_duration(seconds: float) -> str:
    """A short human form: 45s, 3m05s, 2h10m."""
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"

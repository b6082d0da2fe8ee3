"""KEY=VALUE overrides given to a run from the CLI, Slack or a PR comment."""

from __future__ import annotations

import re
from collections.abc import Iterable

from core.errors import BadInput

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_VALUE = 4096


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """Turn ["A=1", "B=two words"] into a dict; BadInput names the first bad item."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise BadInput(f"bad override {item!r}: use KEY=VALUE")
        check_override(key, value)
        result[key] = value
    return result


def check_override(key: str, value: str) -> None:
    if not _KEY.match(key):
        raise BadInput(f"bad override {key!r}: names are letters, digits and _, not starting "
                       "with a digit")
    if key.startswith("JOBBOT_"):
        raise BadInput(f"bad override {key!r}: JOBBOT_ variables are set by jobbot itself")
    if len(value) > MAX_VALUE:
        raise BadInput(f"bad override {key!r}: the value is longer than {MAX_VALUE} characters")

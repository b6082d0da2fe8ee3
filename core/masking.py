"""Hide secret values in text before it reaches logs, Slack, GitHub or pages."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping

MASK = "********"
# Values shorter than this are too likely to match ordinary text ("1", "yes") to be masked.
MIN_SECRET_LENGTH = 4
_SENSITIVE_KEY = re.compile(
    r"(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|PRIVATE|CREDENTIAL)", re.IGNORECASE
)


def is_sensitive_key(name: str) -> bool:
    """True for names such as DB_PASSWORD or GITHUB_TOKEN, whose values are never shown."""
    return bool(_SENSITIVE_KEY.search(name))


def secret_forms(values: Iterable[str]) -> set[str]:
    """Each secret value and the forms a job is likely to print it in.

    The value itself; without surrounding whitespace (a Secret made from a file ends in a
    newline); each line of a multi-line value (a key file printed line by line); its base64
    (a Secret's `data` as stored, a Basic auth header); and its JSON string escaping. Forms
    shorter than MIN_SECRET_LENGTH are left out, as the Masker would ignore them anyway.
    """
    forms: set[str] = set()
    for value in values:
        if len(value.strip()) < MIN_SECRET_LENGTH:
            continue
        candidates: set[str] = set()
        for plain in (value, value.strip()):
            candidates.update((plain, json.dumps(plain)[1:-1],
                               base64.b64encode(plain.encode()).decode()))
        if "\n" in value.strip():
            candidates.update(line.strip() for line in value.splitlines())
        forms.update(c for c in candidates if len(c) >= MIN_SECRET_LENGTH)
    return forms


class Masker:
    """Replaces every known secret value in a text with a fixed mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text


def mask_mapping(values: Mapping[str, str], masker: Masker | None = None) -> dict[str, str]:
    """A copy of `values` with sensitive keys and known secret values masked, for display."""
    shown = {}
    for key, value in values.items():
        if is_sensitive_key(key):
            shown[key] = MASK
        else:
            shown[key] = masker.mask(value) if masker else value
    return shown

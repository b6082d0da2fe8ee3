"""Secrets for the local executor: `<dir>/<name>.env` files, standing in for Kubernetes Secrets."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from core.errors import ExecutorError

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


class LocalSecrets:
    """Reads KEY=VALUE files; a job's `secrets: [db-credentials]` loads db-credentials.env."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def keys(self, names: Iterable[str]) -> frozenset[str]:
        """The variable names the secrets' files hold; missing files and lines that are not
        KEY=VALUE add none (a run of the job fails on them, saying why)."""
        found: set[str] = set()
        for name in names:
            try:
                text = (self.directory / f"{name}.env").read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            found.update(m[1] for m in map(_LINE.match, text.splitlines()) if m)
        return frozenset(found)

    def load(self, names: Iterable[str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for name in names:
            path = self.directory / f"{name}.env"
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ExecutorError(
                    f"secret {name!r} not found: the local executor reads it from {path}"
                ) from None
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                match = _LINE.match(line)
                if not match:
                    raise ExecutorError(f"{path}:{number}: expected KEY=VALUE")
                key, value = match.groups()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                values[key] = value
        return values

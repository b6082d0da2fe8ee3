"""Signed, expiring cookie values (HMAC-SHA256): who is signed in, and a sign-in in progress."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Packs a small JSON object with an expiry into `payload.mac`; checks both on the way back.

    `purpose` goes into the MAC, so a sign-in cookie can never pass as a session cookie."""

    def __init__(self, key: bytes, purpose: str, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._purpose = purpose.encode()
        self._clock = clock

    def dumps(self, values: dict[str, Any], ttl: float) -> str:
        body = _b64(json.dumps({**values, "exp": int(self._clock() + ttl)},
                               separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(body))}"

    def loads(self, text: str | None) -> dict[str, Any] | None:
        """The values, or None when the text is missing, forged, from elsewhere or expired."""
        if not text or not text.isascii() or text.count(".") != 1:
            return None  # what this signer writes is ASCII: anything else is not from here
        body, mac = text.split(".")
        try:
            good = hmac.compare_digest(_unb64(mac), self._mac(body))
            values = json.loads(_unb64(body)) if good else None
        except (ValueError, TypeError):
            return None
        if not isinstance(values, dict) or not isinstance(values.get("exp"), int):
            return None
        if values["exp"] <= self._clock():
            return None
        return values

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, self._purpose + b":" + body.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Viewer:
    """A person signed in with Slack: their user id, workspace and name."""

    slack_user: str
    team: str
    name: str

    def values(self) -> dict[str, Any]:
        return {"u": self.slack_user, "tm": self.team, "n": self.name}

    @classmethod
    def from_values(cls, values: dict[str, Any] | None) -> Viewer | None:
        if values is None:
            return None
        user, team, name = values.get("u"), values.get("tm"), values.get("n")
        if not (isinstance(user, str) and isinstance(team, str) and isinstance(name, str)):
            return None
        return cls(user, team, name)

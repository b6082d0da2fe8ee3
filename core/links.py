"""Signed links to run pages: an HMAC token bound to the run and an expiry (no web/ import)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from urllib.parse import quote

DEFAULT_TTL = 30 * 24 * 3600  # Slack threads and check runs are read for weeks.


class Links:
    """Builds and checks `/runs/{id}?t=TOKEN` links."""

    def __init__(self, public_url: str, secret_key: bytes, *, ttl: int = DEFAULT_TTL) -> None:
        if len(secret_key) < 16:
            raise ValueError("the link signing key must be at least 16 bytes")
        self.public_url = public_url.rstrip("/")
        self._key = secret_key
        self.ttl = ttl

    def token(self, run_id: str, *, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.ttl)
        packed = struct.pack(">Q", expires) + self._mac(run_id, expires)
        return base64.urlsafe_b64encode(packed).decode().rstrip("=")

    def verify(self, run_id: str, token: str, *, now: float | None = None) -> bool:
        """True if `token` was made for this run by this key and has not expired."""
        try:
            packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return False
        if len(packed) != 8 + 16:
            return False
        (expires,) = struct.unpack(">Q", packed[:8])
        if expires < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(packed[8:], self._mac(run_id, expires))

    def run_url(self, run_id: str, *, anchor: str = "") -> str:
        url = f"{self.public_url}/runs/{quote(run_id)}?t={self.token(run_id)}"
        return f"{url}#{anchor}" if anchor else url

    def logs_url(self, run_id: str) -> str:
        return f"{self.public_url}/runs/{quote(run_id)}/logs?t={self.token(run_id)}"

    def subkey(self, purpose: str) -> bytes:
        """A key for another use of the same secret (e.g. session cookies), so a token made
        for one use never verifies as another."""
        return hmac.new(self._key, f"jobbot-subkey:{purpose}".encode(), hashlib.sha256).digest()

    def _mac(self, run_id: str, expires: int) -> bytes:
        message = f"run:{run_id}:{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:16]

"""Signed links to run pages: an HMAC token bound to the run and an expiry (no web/ import)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from urllib.parse import quote, urlsplit

DEFAULT_TTL = 30 * 24 * 3600  # Slack threads and check runs are read for weeks.
_MAX_TOKEN = 64  # a token is 32 characters; anything much longer is not one
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Links:
    """Builds and checks `/runs/{id}?t=TOKEN` links."""

    def __init__(self, public_url: str, secret_key: bytes, *, ttl: int = DEFAULT_TTL,
                 guessed: bool = False) -> None:
        """`guessed`: `public_url` is only the listening address (JOBBOT_PUBLIC_URL is not
        set), so it says nothing about where browsers reach jobbot."""
        if len(secret_key) < 16:
            raise ValueError("the link signing key must be at least 16 bytes")
        self.public_url = public_url.rstrip("/")
        self._key = secret_key
        self.ttl = ttl
        self.guessed = guessed

    @property
    def public_origin(self) -> str | None:
        """`scheme://host[:port]` of the public URL (what browsers send as Origin), or None
        when the public URL is only guessed."""
        return None if self.guessed else origin_of(self.public_url)

    def token(self, run_id: str, *, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.ttl)
        packed = struct.pack(">Q", expires) + self._mac(run_id, expires)
        return base64.urlsafe_b64encode(packed).decode().rstrip("=")

    def verify(self, run_id: str, token: str, *, now: float | None = None) -> bool:
        """True if `token` was made for this run by this key and has not expired."""
        if len(token) > _MAX_TOKEN or not token.isascii():
            return False
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


def secrets_equal(given: str, expected: str) -> bool:
    """A constant-time comparison of a secret someone sent with the expected one; text that is
    not ASCII (which no token of ours is) is simply unequal."""
    if not given.isascii():
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def origin_of(url: str) -> str | None:
    """The origin of an http(s) URL as browsers write it (lower case, default port left out),
    or None if `url` is not one."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else (
        f"{scheme}://{host}:{port}")

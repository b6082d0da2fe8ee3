"""Seal secret parameter values with JOBBOT_SECRET_KEY, so the database never holds them in
the clear and any replica with the key can launch or rerun the run they belong to."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken

# Keeps this key apart from the link-signing key derived from the same secret.
_CONTEXT = b"jobbot sealed parameters\0"
_DIGEST_CONTEXT = b"jobbot request digest\0"


class Unsealable(Exception):
    """A sealed value that this key cannot open (sealed with another JOBBOT_SECRET_KEY)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(", ".join(names))


class Sealer:
    """Fernet (AES-128-CBC with HMAC-SHA256) under a key derived from the secret key."""

    def __init__(self, secret_key: bytes | None = None) -> None:
        # Without a key (tests, tools), one for this process only.
        secret = secret_key if secret_key is not None else os.urandom(32)
        digest = hashlib.sha256(_CONTEXT + secret).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self._digest_key = hashlib.sha256(_DIGEST_CONTEXT + secret).digest()

    def digest(self, text: str) -> str:
        """A keyed digest of `text` (HMAC-SHA256, hex): equal texts give equal digests, and
        without the key a digest says nothing about a secret value in the text."""
        return hmac.new(self._digest_key, text.encode(), hashlib.sha256).hexdigest()

    def seal(self, values: Mapping[str, str]) -> dict[str, str]:
        return {name: self._fernet.encrypt(value.encode()).decode()
                for name, value in values.items()}

    def open(self, sealed: Mapping[str, str], *, ttl: int | None = None) -> dict[str, str]:
        """The values in the clear; Unsealable names those this key cannot open (or, with
        `ttl`, that were sealed more than `ttl` seconds ago)."""
        opened: dict[str, str] = {}
        failed: list[str] = []
        for name, token in sealed.items():
            try:
                opened[name] = self._fernet.decrypt(token.encode(), ttl=ttl).decode()
            except (InvalidToken, ValueError):
                failed.append(name)
        if failed:
            raise Unsealable(sorted(failed))
        return opened

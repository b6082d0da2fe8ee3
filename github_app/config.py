"""The GitHub App's settings, given by the composition root (never read from the environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitHubConfig:
    """App id, private key (PEM), webhook secret, and the API base URL (None: public GitHub)."""

    app_id: str
    private_key: str
    webhook_secret: bytes
    api_url: str | None = None

    @classmethod
    def from_values(cls, app_id: str | None, private_key: str | None,
                    private_key_path: Path | None, webhook_secret: str | None,
                    api_url: str | None) -> GitHubConfig | None:
        """None when the App is not configured at all; ValueError when half configured."""
        if not (app_id or private_key or private_key_path or webhook_secret):
            return None
        missing = [name for name, value in (("GITHUB_APP_ID", app_id),
                                             ("GITHUB_WEBHOOK_SECRET", webhook_secret))
                   if not value]
        if not private_key and not private_key_path:
            missing.append("GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH")
        if missing:
            raise ValueError("the GitHub App is half configured: set " + ", ".join(missing))
        if private_key is None:
            assert private_key_path is not None
            try:
                private_key = private_key_path.read_text()
            except OSError as exc:
                raise ValueError(f"GITHUB_PRIVATE_KEY_PATH {private_key_path}: {exc}") from None
        assert app_id is not None and webhook_secret is not None
        return cls(app_id, private_key, webhook_secret.encode(),
                   api_url.rstrip("/") if api_url else None)

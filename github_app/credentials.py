"""The registered App's credentials: kept in the data directory (mode 0600), read back at
start-up, or written out as a Kubernetes Secret for cluster installs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "github-app.json"
# The Secret a cluster install adds to the Deployment's envFrom (manifests/base).
SECRET_NAME = "jobbot-github"


class CredentialsError(ValueError):
    """The credentials file cannot be read, or does not hold an App's credentials."""


@dataclass(frozen=True)
class AppCredentials:
    """What jobbot needs of a registered App, and what the setup page shows of it."""

    app_id: str
    private_key: str
    webhook_secret: str
    slug: str = ""
    html_url: str = ""

    @classmethod
    def from_conversion(cls, body: dict[str, Any]) -> AppCredentials:
        """From GitHub's answer to `POST /app-manifests/{code}/conversions`."""
        app_id, pem, secret = body.get("id"), body.get("pem"), body.get("webhook_secret")
        if not isinstance(app_id, int) or isinstance(app_id, bool):
            raise CredentialsError("GitHub's answer has no App id")
        if not isinstance(pem, str) or "PRIVATE KEY" not in pem:
            raise CredentialsError("GitHub's answer has no private key")
        if not isinstance(secret, str) or not secret:
            raise CredentialsError("GitHub's answer has no webhook secret")
        slug, html_url = body.get("slug"), body.get("html_url")
        return cls(str(app_id), pem, secret, slug if isinstance(slug, str) else "",
                   html_url if isinstance(html_url, str) else "")

    @property
    def install_url(self) -> str:
        """Where the App is installed on repositories (GitHub's App page + /installations/new)."""
        return f"{self.html_url.rstrip('/')}/installations/new" if self.html_url else ""

    def to_json(self) -> str:
        return json.dumps({"app_id": self.app_id, "slug": self.slug, "html_url": self.html_url,
                           "webhook_secret": self.webhook_secret,
                           "private_key": self.private_key}, indent=2) + "\n"


def path_in(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def save(data_dir: Path, credentials: AppCredentials) -> Path:
    """Write the credentials file, readable by this user only (0600), all at once; an existing
    one is never replaced (FileExistsError)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    target = path_in(data_dir)
    if target.exists():
        raise FileExistsError(f"{target} exists already")
    partial = data_dir / f".{FILE_NAME}.{os.getpid()}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(credentials.to_json())
            out.flush()
            os.fsync(out.fileno())
        # A hard link fails if the target appeared meanwhile (rename would replace it).
        os.link(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def load(data_dir: Path) -> AppCredentials | None:
    """The credentials the setup page saved, or None when there are none."""
    path = path_in(data_dir)
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise CredentialsError(f"{path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise CredentialsError(f"{path} is not JSON: remove it and register the App "
                               "again at /github/setup") from None
    values = data if isinstance(data, dict) else {}
    fields = [values.get(name) for name in ("app_id", "private_key", "webhook_secret")]
    if not all(isinstance(value, str) and value for value in fields):
        raise CredentialsError(f"{path} lacks app_id, private_key or webhook_secret")
    app_id, private_key, secret = (str(value) for value in fields)
    return AppCredentials(app_id, private_key, secret, str(values.get("slug") or ""),
                          str(values.get("html_url") or ""))


def kubernetes_secret(credentials: AppCredentials) -> str:
    """A Kubernetes Secret (YAML) holding the App's settings as jobbot's environment."""
    lines = ["apiVersion: v1", "kind: Secret", "metadata:", f"  name: {SECRET_NAME}",
             "type: Opaque", "stringData:",
             f"  GITHUB_APP_ID: {json.dumps(credentials.app_id)}",
             f"  GITHUB_WEBHOOK_SECRET: {json.dumps(credentials.webhook_secret)}",
             "  GITHUB_PRIVATE_KEY: |"]
    lines += [f"    {line}" for line in credentials.private_key.strip().splitlines()]
    return "\n".join(lines) + "\n"

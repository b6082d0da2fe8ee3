"""Typed settings from the environment, one sentence per field; read when a command starts."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from github_app import credentials

# Links are signed with HMAC-SHA256; a shorter key is refused (core/links.py).
MIN_SECRET_KEY_BYTES = 16
# What core/store.py can open: SQLite, or PostgreSQL through psycopg.
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")
# Never echoed in an error: the URL may hold a password.
_NOT_ECHOED = frozenset({"JOBBOT_DATABASE_URL"})


class Settings(BaseSettings):
    """Everything jobbot reads from its environment (see the README's Settings section)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=True, extra="ignore")

    JOBBOT_APP_CONFIG: Path = Field(Path("app.yaml"), description="The app.yaml to serve.")
    JOBBOT_DATA_DIR: Path = Field(
        Path(".jobbot"), description="Where the SQLite database, logs and local secrets live."
    )
    JOBBOT_DATABASE_URL: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite under JOBBOT_DATA_DIR; postgresql://..."
    )
    JOBBOT_EXECUTOR: Literal["local", "kubernetes"] = Field(
        "local", description="Run jobs as local processes or as Kubernetes Jobs."
    )
    JOBBOT_HOST: str = Field("127.0.0.1", description="Address the server listens on.")
    JOBBOT_PORT: int = Field(8080, ge=1, le=65535, description="Port the server listens on.")
    JOBBOT_PUBLIC_URL: str | None = Field(
        None, description="Base URL people reach jobbot at, for links in Slack and GitHub."
    )
    JOBBOT_SECRET_KEY: SecretStr | None = Field(
        None, description="Signs links to run pages (at least 16 bytes); set it in production."
    )
    JOBBOT_WEB_TOKEN: SecretStr | None = Field(
        None, description="Shared token for browsing /jobs (open once with ?token=); unset: off."
    )
    JOBBOT_METRICS_TOKEN: SecretStr | None = Field(
        None, description="Bearer token Prometheus scrapes GET /metrics with; unset: /metrics "
        "answers 403 unless JOBBOT_METRICS_OPEN is true."
    )
    JOBBOT_METRICS_OPEN: bool = Field(
        False, description="Serve /metrics to anyone (a private network) when no token is set."
    )
    JOBBOT_LOG_FORMAT: Literal["text", "json"] = Field(
        "text", description="Log lines as text for people or JSON for collectors."
    )
    JOBBOT_RETRY_DELAY: float = Field(
        1.0, description="Local executor: seconds before the first retry (doubles each time)."
    )
    JOBBOT_LEASE_EXPIRY: float = Field(
        20.0, ge=1.0, le=3600.0, description="Seconds a replica's lease lives unrenewed; it is "
        "renewed four times in that span, and a live replica takes over the work of one whose "
        "lease expired."
    )
    JOBBOT_KUBECONFIG: Path | None = Field(
        None, description="Kubernetes executor: kubeconfig file; default in-cluster, then "
        "$KUBECONFIG or ~/.kube/config."
    )
    JOBBOT_KUBE_CONTEXT: str | None = Field(
        None, description="Kubernetes executor: kubeconfig context; default its current one."
    )
    SLACK_BOT_TOKEN: SecretStr | None = Field(
        None, description="The Slack bot token (xoxb-...); without it jobbot runs without the bot."
    )
    SLACK_SIGNING_SECRET: SecretStr | None = Field(
        None, description="Verifies requests to POST /slack/events (HTTP mode)."
    )
    SLACK_APP_TOKEN: SecretStr | None = Field(
        None, description="An app-level token (xapp-...): use Socket Mode, no public URL needed."
    )
    SLACK_CLIENT_ID: str | None = Field(
        None, description="The Slack app's client id: turns on Sign in with Slack on the pages "
        "(needs SLACK_CLIENT_SECRET and the bot)."
    )
    SLACK_CLIENT_SECRET: SecretStr | None = Field(
        None, description="The Slack app's client secret, for Sign in with Slack."
    )
    SLACK_API_URL: str | None = Field(
        None, description="Base URL of the Slack Web API (tests, proxies); default Slack's own."
    )
    GITHUB_APP_ID: str | None = Field(
        None, description="The GitHub App's id; unset (with the key and secret): the App "
        "registered at /github/setup, from JOBBOT_DATA_DIR/github-app.json, if any."
    )
    GITHUB_PRIVATE_KEY: SecretStr | None = Field(None, description="The App's private key (PEM).")
    GITHUB_PRIVATE_KEY_PATH: Path | None = Field(
        None, description="A file holding the App's private key, instead of GITHUB_PRIVATE_KEY."
    )
    GITHUB_WEBHOOK_SECRET: SecretStr | None = Field(
        None, description="Verifies deliveries to POST /github/webhook."
    )
    GITHUB_API_URL: str | None = Field(
        None, description="GitHub Enterprise Server's API (https://HOST/api/v3); default GitHub's."
    )

    @field_validator("JOBBOT_DATABASE_URL")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if not value:
            return value
        scheme, separator, _ = value.partition("://")
        if not separator or scheme.lower() not in DATABASE_SCHEMES:
            shown = f"a {scheme}:// URL" if separator else "a URL without a scheme"
            raise ValueError(f"must be sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB, "
                             f"not {shown}")
        return value

    @field_validator("JOBBOT_SECRET_KEY")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            size = len(value.get_secret_value().encode())
            if size < MIN_SECRET_KEY_BYTES:
                raise ValueError(f"must be at least {MIN_SECRET_KEY_BYTES} bytes long")
        return value

    @property
    def database_url(self) -> str:
        if self.JOBBOT_DATABASE_URL:
            return self.JOBBOT_DATABASE_URL
        return f"sqlite:///{(self.JOBBOT_DATA_DIR / 'jobbot.db').resolve()}"

    def github_app_values(self) -> tuple[str | None, str | None, Path | None, str | None]:
        """The App's id, private key, key file and webhook secret: from GITHUB_* when any of
        them is set, else from the file /github/setup saved in JOBBOT_DATA_DIR (all None when
        there is none). A broken file is a ValueError naming it."""
        key = self.GITHUB_PRIVATE_KEY.get_secret_value() if self.GITHUB_PRIVATE_KEY else None
        secret = (self.GITHUB_WEBHOOK_SECRET.get_secret_value() if self.GITHUB_WEBHOOK_SECRET
                  else None)
        if self.GITHUB_APP_ID or key or self.GITHUB_PRIVATE_KEY_PATH or secret:
            return self.GITHUB_APP_ID, key, self.GITHUB_PRIVATE_KEY_PATH, secret
        saved = credentials.load(self.JOBBOT_DATA_DIR)
        if saved is None:
            return None, None, None, None
        return saved.app_id, saved.private_key, None, saved.webhook_secret

    @property
    def public_url(self) -> str:
        if self.JOBBOT_PUBLIC_URL:
            return self.JOBBOT_PUBLIC_URL.rstrip("/")
        host = f"[{self.JOBBOT_HOST}]" if ":" in self.JOBBOT_HOST else self.JOBBOT_HOST
        return f"http://{host}:{self.JOBBOT_PORT}"

    @property
    def local_browsing(self) -> bool:
        """`serve` listens on a loopback address and no sign-in is configured: it prints a
        link with a fresh token that signs its operator's browser in."""
        return (is_loopback(self.JOBBOT_HOST) and self.JOBBOT_WEB_TOKEN is None
                and not self.SLACK_CLIENT_ID)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1); names are not resolved."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def settings_error(exc: ValidationError) -> str:
    """One line for bad environment values: the variable, what it takes, and (unless it is a
    secret or may hold one) the value given."""
    problems = [_problem(error) for error in exc.errors()]
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more)" if more else "")


def _problem(error: Any) -> str:
    name = str(error["loc"][0]) if error["loc"] else "settings"
    message = str(error["msg"])
    custom = error["type"] == "value_error"
    message = message.removeprefix("Value error, ").removeprefix("Input should be ")
    if error["type"] in ("int_parsing", "bool_parsing", "float_parsing"):
        message = message.split(",")[0]
    if name == "JOBBOT_PORT":
        message = "a port number (1-65535)"
    elif error["type"] == "bool_parsing":
        message = "true or false"
    if not custom:
        message = f"must be {message}"
    field = Settings.model_fields.get(name)
    secret = field is not None and "SecretStr" in str(field.annotation)
    if not custom and not secret and name not in _NOT_ECHOED:
        message += f", not {error['input']!r}"
    return f"{name} {message}"

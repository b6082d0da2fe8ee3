"""Typed settings from the environment, one sentence per field; read when a command starts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    JOBBOT_PORT: int = Field(8080, description="Port the server listens on.")
    JOBBOT_PUBLIC_URL: str | None = Field(
        None, description="Base URL people reach jobbot at, for links in Slack and GitHub."
    )
    JOBBOT_SECRET_KEY: SecretStr | None = Field(
        None, description="Signs links to run pages; set it in production."
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
    GITHUB_APP_ID: str | None = None
    GITHUB_PRIVATE_KEY: SecretStr | None = None
    GITHUB_PRIVATE_KEY_PATH: Path | None = None
    GITHUB_WEBHOOK_SECRET: SecretStr | None = None
    GITHUB_API_URL: str | None = None

    @property
    def database_url(self) -> str:
        if self.JOBBOT_DATABASE_URL:
            return self.JOBBOT_DATABASE_URL
        return f"sqlite:///{(self.JOBBOT_DATA_DIR / 'jobbot.db').resolve()}"

    @property
    def public_url(self) -> str:
        return (self.JOBBOT_PUBLIC_URL or f"http://{self.JOBBOT_HOST}:{self.JOBBOT_PORT}").rstrip("/")

"""jobbot's server mounts the GitHub App only when GitHub is configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from core.errors import BadInput
from jobbot.server import make_app
from jobbot.settings import Settings
from jobbot.wiring import build_runtime
from tests.fakes.github import private_key_pem
from tests.support.apps import python_job, write_app


def _settings(tmp_path: Path, **github: object) -> Settings:
    config = write_app(tmp_path / "app", [python_job("hello", "print('hi')")])
    return Settings(JOBBOT_APP_CONFIG=config, JOBBOT_DATA_DIR=tmp_path / "data",
                    JOBBOT_SECRET_KEY=SecretStr("k" * 32), **github)  # type: ignore[arg-type]


def _routes(settings: Settings) -> set[str]:
    runtime = build_runtime(settings)
    try:
        app = make_app(runtime)
        return {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    finally:
        runtime.close()


def test_without_github_settings_there_is_no_webhook(tmp_path: Path) -> None:
    assert "/github/webhook" not in _routes(_settings(tmp_path))


def test_with_github_settings_the_webhook_is_mounted(tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text(private_key_pem()[0])
    settings = _settings(tmp_path, GITHUB_APP_ID="42", GITHUB_PRIVATE_KEY_PATH=key,
                         GITHUB_WEBHOOK_SECRET=SecretStr("s" * 20))
    assert "/github/webhook" in _routes(settings)


def test_half_configured_github_is_a_precise_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path, GITHUB_APP_ID="42")
    with pytest.raises(BadInput, match="GITHUB_WEBHOOK_SECRET, GITHUB_PRIVATE_KEY"):
        _routes(settings)

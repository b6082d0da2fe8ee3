"""jobbot's server mounts the GitHub App when GitHub is configured (GITHUB_* or the file
/github/setup saves); until then the webhook answers 404."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from core.errors import BadInput
from github_app import credentials
from github_app.credentials import AppCredentials
from jobbot.server import github_config, make_app
from jobbot.settings import Settings
from jobbot.wiring import build_runtime
from tests.fakes.github import private_key_pem
from tests.support.apps import python_job, write_app
from tests.support.server import serve


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


async def test_without_github_settings_the_webhook_answers_404(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    served = await serve(settings, settings.JOBBOT_APP_CONFIG)
    try:
        async with aiohttp.ClientSession() as client, client.post(
                served.base_url + "/github/webhook", data=b"{}") as answer:
            assert answer.status == 404
            assert "/github/setup" in (await answer.json())["error"]
    finally:
        await served.stop()


def _config(settings: Settings) -> tuple[str, str, bytes] | None:
    runtime = build_runtime(settings)
    try:
        config = github_config(runtime)
    finally:
        runtime.close()
    return (config.app_id, config.private_key, config.webhook_secret) if config else None


def test_the_saved_app_is_used_when_github_settings_are_unset(tmp_path: Path) -> None:
    pem = private_key_pem()[0]
    credentials.save(tmp_path / "data", AppCredentials("77", pem, "saved-secret"))
    assert _config(_settings(tmp_path)) == ("77", pem, b"saved-secret")
    # GITHUB_* wins whole: never half from the environment and half from the file.
    key = tmp_path / "app.pem"
    key.write_text(private_key_pem()[0])
    settings = _settings(tmp_path, GITHUB_APP_ID="42", GITHUB_PRIVATE_KEY_PATH=key,
                         GITHUB_WEBHOOK_SECRET=SecretStr("s" * 20))
    assert _config(settings) == ("42", key.read_text(), b"s" * 20)
    with pytest.raises(BadInput, match="GITHUB_WEBHOOK_SECRET"):
        _config(_settings(tmp_path, GITHUB_APP_ID="42"))


@pytest.mark.parametrize("text", ["not json", '{"app_id": "1"}', "[]"])
def test_a_broken_saved_app_is_a_precise_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "github-app.json").write_text(text)
    with pytest.raises(BadInput, match=r"github-app\.json"):
        _routes(_settings(tmp_path))


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

"""`jobbot render`: the Job (or build Job) the Kubernetes executor creates, as YAML."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import yaml

from core.executors.k8s.manifests import (
    PLACEHOLDER_GIT_TOKEN,
    PLACEHOLDER_NUMBER,
    PLACEHOLDER_RUN_ID,
    PLACEHOLDER_SHA,
    RunInfo,
    git_secret_name,
    job_manifest,
    params_secret_name,
)
from core.spec import load_app
from tests.integration.test_cli import jobbot

APP = {
    "app": "shop", "kubernetes": {"namespace": "shop-jobs"},
    "builds": [{"name": "api-build", "image": "registry.example.com/shop/api",
                "registry_secret": "registry-credentials"}],
    "jobs": [
        {"name": "migrate", "image_from_build": "api-build", "command": ["yarn", "migrate"],
         "env": {"MODE": "fast"}, "secrets": ["db-credentials"]},
        {"name": "report", "image": "python:3.12-slim", "command": ["python", "r.py"]},
        {"name": "deploy", "image": "python:3.12-slim", "command": ["python", "d.py"],
         "parameters": [{"name": "STAGE", "choices": ["blue", "green"], "type": "choice"},
                        {"name": "DEPLOY_KEY", "secret": True}]},
    ],
}


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(json.dumps(APP))
    return path


def test_render_prints_the_executors_manifest(tmp_path: Path) -> None:
    path = _write(tmp_path)
    result = jobbot(tmp_path, "render", "migrate", "MODE=slow", "--sha", "ab" * 20)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    app = load_app(path)
    actor = printed["metadata"]["annotations"]["jobbot.dev/actor"]
    expected = job_manifest(app, app.job("migrate"), RunInfo(
        id=PLACEHOLDER_RUN_ID, number=PLACEHOLDER_NUMBER, source="cli", actor=actor,
        sha="ab" * 20), env={"MODE": "slow"})
    assert printed == expected
    assert printed["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/shop/api:" + "ab" * 20)
    kubernetes_validate.validate(printed, "1.34.0", strict=True)


def test_render_a_build_and_placeholders(tmp_path: Path) -> None:
    _write(tmp_path)
    build = yaml.safe_load(jobbot(tmp_path, "render", "--build", "api-build").stdout)
    assert build["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "buildctl-daemonless.sh"]
    run = yaml.safe_load(jobbot(tmp_path, "render", "migrate").stdout)
    image = run["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"registry.example.com/shop/api:{PLACEHOLDER_SHA}"


def test_render_bad_input_exits_2(tmp_path: Path) -> None:
    _write(tmp_path)
    unknown = jobbot(tmp_path, "render", "migrat")
    assert unknown.returncode == 2
    assert "no job 'migrat'" in unknown.stderr
    assert unknown.stdout == ""
    nothing = jobbot(tmp_path, "render")
    assert (nothing.returncode, nothing.stderr.strip()) == (
        2, "jobbot: name a job to render (or --build NAME)")
    both = jobbot(tmp_path, "render", "migrate", "--build", "api-build")
    assert both.returncode == 2


def test_render_a_build_shows_where_its_git_secret_goes(tmp_path: Path) -> None:
    _write(tmp_path)
    result = jobbot(tmp_path, "render", "--build", "api-build", "--sha", "ab" * 20,
                    env={"GITHUB_API_URL": "https://ghe.example.com/api/v3"})
    assert result.returncode == 0, result.stderr
    build = yaml.safe_load(result.stdout)
    kubernetes_validate.validate(build, "1.34.0", strict=True)
    secret = git_secret_name(build["metadata"]["name"])
    # A comment stands for the Secret made per build, with a placeholder for its token.
    assert result.stdout.startswith(f"# Secret {secret}: made per build")
    assert PLACEHOLDER_GIT_TOKEN in result.stdout
    pod = build["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["git-credentials"]["secret"]["secretName"] == secret
    args = pod["containers"][0]["args"]
    assert "id=GIT_AUTH_TOKEN.ghe.example.com,src=/run/secrets/jobbot-git/token" in args


def test_render_an_unknown_build_exits_2(tmp_path: Path) -> None:
    _write(tmp_path)
    result = jobbot(tmp_path, "render", "--build", "api-buid")
    assert (result.returncode, result.stdout) == (2, "")
    assert "no build 'api-buid'" in result.stderr
    assert "Traceback" not in result.stderr


def test_render_refers_to_the_runs_secret_for_a_secret_parameter(tmp_path: Path) -> None:
    _write(tmp_path)
    value = "deploy-key-in-the-clear-4242"
    result = jobbot(tmp_path, "render", "deploy", "STAGE=green", f"DEPLOY_KEY={value}")
    assert result.returncode == 0, result.stderr
    assert value not in result.stdout and value not in result.stderr
    printed = yaml.safe_load(result.stdout)
    secret = params_secret_name(printed["metadata"]["name"])
    # A comment stands for the Secret made per run; the Job only refers to it.
    assert result.stdout.startswith(f"# Secret {secret}: made per run")
    env = printed["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[:2] == [
        {"name": "STAGE", "value": "green"},
        {"name": "DEPLOY_KEY", "valueFrom": {"secretKeyRef": {"name": secret,
                                                              "key": "DEPLOY_KEY"}}}]
    kubernetes_validate.validate(printed, "1.34.0", strict=True)
    # Without a value for it, the run has no Secret: nothing refers to one.
    plain = jobbot(tmp_path, "render", "deploy", "STAGE=blue")
    assert plain.returncode == 0, plain.stderr
    assert not plain.stdout.startswith("#") and "secretKeyRef" not in plain.stdout

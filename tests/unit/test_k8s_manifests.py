"""The Job a run becomes: names, field mapping, security defaults, build Jobs."""

from __future__ import annotations

import pytest

from core.errors import BadInput
from core.executors.k8s.manifests import (
    BUILDKIT_IMAGE,
    RunInfo,
    build_manifest,
    git_secret_manifest,
    git_secret_name,
    job_manifest,
    job_name,
)
from core.names import is_dns_label
from core.spec import JobSpec, parse_app

APP = parse_app("""
app: shop
builds:
  - name: api-build
    image: registry.example.com/shop/api
    context: services/api
    dockerfile: services/api/Dockerfile
    registry_secret: registry-credentials
jobs:
  - name: migrate
    image_from_build: api-build
    command: [yarn, migrate]
    secrets: [db-credentials]
    resources: {cpu: 250m}
  - name: hardened
    image: python:3.12-slim
    command: [python, x.py]
    security_context: {run_as_non_root: false, seccomp_profile: Unconfined,
                       allow_privilege_escalation: true}
""")
RUN = RunInfo(id="0123456789abcdef", number=7, source="github", actor="github:octocat",
              sha="c0ffee" + "0" * 34, ref="refs/heads/main")


def test_job_names_are_dns_labels_and_deterministic() -> None:
    long = "x" * 63
    name = job_name(long, 123456, "0123456789abcdef")
    assert len(name) == 63
    assert is_dns_label(name)
    assert name == job_name(long, 123456, "0123456789abcdef")
    assert name.endswith("-123456-" + name.rsplit("-", 1)[1])
    assert job_name("migrate", 7, "a" * 16) != job_name("migrate", 7, "b" * 16)
    assert is_dns_label(job_name("ab-" + "c" * 60, 1, "x"))  # no '-' left before the tail


def test_a_build_image_is_used_at_the_run_sha() -> None:
    manifest = job_manifest(APP, APP.job("migrate"), RUN)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"registry.example.com/shop/api:{RUN.sha}"
    assert container["envFrom"] == [{"secretRef": {"name": "db-credentials"}}]
    assert container["resources"] == {"requests": {"cpu": "250m"}, "limits": {"cpu": "250m"}}
    assert manifest["metadata"]["annotations"]["jobbot.dev/git-sha"] == RUN.sha
    assert manifest["metadata"]["namespace"] == "shop"
    with pytest.raises(BadInput, match="needs a git sha"):
        job_manifest(APP, APP.job("migrate"), RunInfo(id="1", number=1, source="cli",
                                                      actor="cli:me"))


def test_security_context_is_restrictive_unless_overridden() -> None:
    plain = parse_app("app: a\njobs: [{name: j, image: busybox, command: ['true']}]")
    pod = job_manifest(plain, plain.job("j"), RUN)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    loose = job_manifest(APP, APP.job("hardened"), RUN)["spec"]["template"]["spec"]
    assert loose["securityContext"]["runAsNonRoot"] is False
    assert loose["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    assert loose["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is True


def test_build_job_runs_rootless_buildkit_with_registry_cache() -> None:
    manifest = build_manifest(APP, APP.build("api-build"), sha=RUN.sha or "",
                              repository="https://git.example.com/shop.git")
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == BUILDKIT_IMAGE
    assert container["command"] == ["buildctl-daemonless.sh"]
    args = container["args"]
    assert f"context=https://git.example.com/shop.git#{RUN.sha}:services/api" in args
    assert "filename=Dockerfile" in args
    assert f"type=image,name=registry.example.com/shop/api:{RUN.sha},push=true" in args
    assert "type=registry,ref=registry.example.com/shop/api:buildcache,mode=max" in args
    volumes = {v["name"]: v for v in manifest["spec"]["template"]["spec"]["volumes"]}
    assert volumes["registry-credentials"]["secret"]["secretName"] == "registry-credentials"
    assert is_dns_label(manifest["metadata"]["name"])


def test_the_builder_turns_a_github_repository_into_a_clone_url() -> None:
    from core.executors.k8s.builder import KubernetesBuilder
    from jobbot.wiring import git_base_url

    builder = KubernetesBuilder(None, None)  # type: ignore[arg-type]  (only the URL is used)
    assert builder.git_url("acme/shop") == "https://github.com/acme/shop.git"
    assert builder.git_url("https://git.example.com/x.git") == "https://git.example.com/x.git"
    ghes = KubernetesBuilder(None, None, git_base_url=git_base_url(  # type: ignore[arg-type]
        "https://ghe.example.com/api/v3"))
    assert ghes.git_url("acme/shop") == "https://ghe.example.com/acme/shop.git"
    assert git_base_url(None) == git_base_url("https://api.github.com") == "https://github.com"


def test_a_private_build_mounts_its_git_secret_as_a_buildkit_secret_only() -> None:
    public = build_manifest(APP, APP.build("api-build"), sha=RUN.sha or "",
                            repository="https://github.com/acme/shop.git")
    assert "git-credentials" not in str(public)
    manifest = build_manifest(APP, APP.build("api-build"), sha=RUN.sha or "",
                              repository="https://ghe.example.com/acme/shop.git",
                              git_host="ghe.example.com")
    name = manifest["metadata"]["name"]
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["git-credentials"]["secret"]["secretName"] == git_secret_name(name)
    assert {"name": "git-credentials", "mountPath": "/run/secrets/jobbot-git",
            "readOnly": True} in container["volumeMounts"]
    args = container["args"]
    assert args[args.index("--secret") + 1] == (
        "id=GIT_AUTH_TOKEN.ghe.example.com,src=/run/secrets/jobbot-git/token")
    # The registry's docker config serves BuildKit's pulls as well as its pushes.
    assert {"name": "DOCKER_CONFIG", "value": "/home/user/.docker"} in container["env"]
    # The Secret: owned by the Job, the token as stringData (the API server encodes it).
    job = {**manifest, "metadata": {**manifest["metadata"], "uid": "u-1"}}
    secret = git_secret_manifest(job, "ghs_token_value")
    assert secret["metadata"]["name"] == git_secret_name(name)
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "u-1"}]
    assert secret["stringData"] == {"token": "ghs_token_value"}
    assert "ghs_token_value" not in str(manifest)


def test_the_git_host_is_githubs_or_the_enterprise_servers() -> None:
    from core.executors.k8s.builder import KubernetesBuilder
    from jobbot.wiring import git_base_url

    assert KubernetesBuilder(None, None).git_host == "github.com"  # type: ignore[arg-type]
    ghes = KubernetesBuilder(None, None, git_base_url=git_base_url(  # type: ignore[arg-type]
        "https://ghe.example.com:8443/api/v3"))
    assert ghes.git_host == "ghe.example.com:8443"


def test_secret_values_are_decoded_with_docker_credentials_picked_out() -> None:
    import base64
    import json

    from core.executors.k8s.secrets import decoded_values

    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode()

    auth = b64(b"pusher:registry-pass")
    config = json.dumps({"auths": {"registry.example.com": {"auth": auth,
                                                            "identitytoken": "id-token-1"}}})
    secret = {"data": {"PASSWORD": b64(b"hunter2"), "BLOB": b64(b"\xff\xfe"),
                       ".dockerconfigjson": b64(config.encode())},
              "stringData": {"EXTRA": "plain-value"}}
    values = decoded_values(secret)
    assert {"hunter2", b64(b"hunter2"), b64(b"\xff\xfe"), auth, "registry-pass", "id-token-1",
            "plain-value"} <= set(values)
    assert "registry.example.com" not in values and "pusher" not in values


def test_env_holds_only_declared_names_and_jobbots_own_variables() -> None:
    # A job built without `jobbot validate` (which refuses JOBBOT_ names in env).
    job = JobSpec.model_validate({
        "name": "report", "image": "python:3.12-slim", "command": ["python", "r.py"],
        "env": {"MODE": "fast", "JOBBOT_RUN_ID": "forged", "JOBBOT_GIT_SHA": "forged"},
        "secrets": ["db-credentials"]})
    run = RunInfo(id="0123456789abcdef", number=7, source="slack", actor="slack:U1")
    env = {**job.env, "MODE": "slow"}
    container = job_manifest(APP, job, run, env=env)["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "MODE": "slow", "JOBBOT_APP": "shop", "JOBBOT_JOB": "report",
        "JOBBOT_RUN_ID": "0123456789abcdef", "JOBBOT_RUN_NUMBER": "7"}
    # A run never adds a name, so it never shadows what envFrom gives.
    for extra in ("DB_PASSWORD", "PATH"):
        with pytest.raises(BadInput, match=f"report does not declare {extra} in its env"):
            job_manifest(APP, job, run, env={**env, extra: "x"})

"""Every manifest jobbot renders, and manifests/ after `kustomize build`, against the schemas."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from core.executors.k8s.manifests import (
    PLACEHOLDER_SHA,
    RunInfo,
    build_manifest,
    job_manifest,
)
from core.spec import AppSpec, load_app, parse_app
from tests.support.deploy import ROOT, VERSIONS, kustomize_build

RICH_APP = """
app: shop
kubernetes: {namespace: shop-jobs, service_account_name: jobs-runner}
builds:
  - name: api-build
    image: registry.example.com/shop/api
    context: services/api
    dockerfile: services/api/Dockerfile
    registry_secret: registry-credentials
  - name: plain
    image: registry.example.com/shop/plain
jobs:
  - name: db-migrate
    image_from_build: api-build
    command: [yarn, migrate]
    env: {RAILS_ENV: production, PORT: 8080}
    secrets: [db-credentials, other-secret]
    restart_policy: OnFailure
    backoff_limit: 3
    time_limit: 480
    stop_grace_period: 30
    parallelism: 2
    completions: 4
    ttl: 3600
    resources: {cpu: 500m, memory: 512Mi}
    security_context: {run_as_user: 1000, run_as_group: 1000, read_only_root_filesystem: true,
                       capabilities_add: [NET_BIND_SERVICE]}
  - name: a-job-with-a-very-long-name-that-fills-the-whole-dns-label-abcd
    image: python:3.12-slim
    command: [python, report.py]
"""


def rendered(app: AppSpec) -> list[dict[str, Any]]:
    docs = []
    for job in app.jobs:
        run = RunInfo(id="0123456789abcdef", number=12345, source="slack", actor="slack:U123",
                      sha=PLACEHOLDER_SHA, ref="refs/heads/main")
        overrides = {"RAILS_ENV": "staging"} if "RAILS_ENV" in job.env else {}
        docs.append(job_manifest(app, job, run, env={**job.env, **overrides}))
    for build in app.builds:
        docs.append(build_manifest(app, build, sha="a" * 40,
                                   repository="https://git.example.com/shop/api.git"))
    return docs


@pytest.fixture(scope="module")
def deployed() -> list[dict[str, Any]]:
    return kustomize_build(ROOT / "manifests" / "overlays" / "example")


@pytest.mark.parametrize("version", VERSIONS)
def test_rendered_jobs_and_builds_are_valid(version: str) -> None:
    docs = rendered(parse_app(RICH_APP)) + rendered(load_app(ROOT / "app.yaml"))
    assert len(docs) > 5
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("tree", ["base", "overlays/example"])
def test_manifests_build_and_are_valid(version: str, tree: str) -> None:
    docs = kustomize_build(ROOT / "manifests" / tree)
    kinds = sorted(doc["kind"] for doc in docs)
    expected = ["ConfigMap", "Deployment", "Namespace", "Namespace", "PodDisruptionBudget",
                "Role", "RoleBinding", "Service", "ServiceAccount"]
    assert kinds == sorted(expected + (["Secret"] if tree != "base" else []))
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_role_grants_only_what_the_executor_calls(deployed: list[dict[str, Any]]) -> None:
    role = next(d for d in deployed if d["kind"] == "Role")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("batch", "jobs", v) for v in ("create", "get", "list", "watch",
                                                      "delete")} | {
        ("", "pods", v) for v in ("get", "list", "watch")} | {("", "pods/log", "get")} | {
        # get: masking; create and delete: each private build's git Secret, and each run's
        # Secret of secret parameter values.
        ("", "secrets", v) for v in ("get", "create", "delete")}
    binding = next(d for d in deployed if d["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "jobbot",
                                    "namespace": "jobbot"}]


def test_deployment_is_locked_down(deployed: list[dict[str, Any]]) -> None:
    deployment = next(d for d in deployed if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/jobbot"} <= mounts
    env = {e["name"]: e for e in container["env"]}
    assert env["JOBBOT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "jobbot"
    assert env["JOBBOT_EXECUTOR"]["value"] == "kubernetes"
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "registry.example.com/platform/jobbot:0.1.0"


def test_three_replicas_spread_over_nodes_and_one_at_a_time_may_be_disrupted(
        deployed: list[dict[str, Any]]) -> None:
    deployment = next(d for d in deployed if d["kind"] == "Deployment")
    pdb = next(d for d in deployed if d["kind"] == "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 3
    # A drain may take one replica; two answer and take over its work meanwhile.
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {
        "app.kubernetes.io/name": labels["app.kubernetes.io/name"]}}}
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1,
                                                               "maxUnavailable": 0}
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname",
                                                  "topology.kubernetes.io/zone"}
    for constraint in spread:
        assert constraint["maxSkew"] == 1
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # one node still works
        selected = constraint["labelSelector"]["matchLabels"]
        assert selected.items() <= labels.items()

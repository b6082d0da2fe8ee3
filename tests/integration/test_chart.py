"""The Helm chart: it lints, renders valid objects, and deploys what the kustomize base deploys."""

from __future__ import annotations

import copy
import re
import shlex
import textwrap
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.deploy import (
    CHART,
    ROOT,
    VERSIONS,
    helm,
    helm_template,
    kustomize_build,
)

# Labels helm's conventions add (release, chart, version): kustomize has no release to name.
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/version",
               "app.kubernetes.io/managed-by"}
RICH = ["--set", "replicaCount=1", "--set", "executor=local",
        "--set", "image.repository=registry.example.com/platform/jobbot",
        "--set", "image.tag=0.2.0", "--set", "image.pullPolicy=Always",
        "--set", "imagePullSecrets[0].name=regcred", "--set", "service.type=LoadBalancer",
        "--set", "ingress.enabled=true", "--set", "ingress.className=nginx",
        "--set", "ingress.host=jobbot.example.org", "--set", "ingress.tlsSecretName=jobbot-tls",
        "--set", "ingress.annotations.cert-manager\\.io/cluster-issuer=letsencrypt",
        "--set", "database.secretName=postgres-app", "--set", "database.secretKey=uri"]
OTHER_NAMESPACE = ["--set", "jobs.namespace=shop-jobs", "--set", "jobs.createNamespace=false",
                   "--set", "appConfig.kubernetes.namespace=shop-jobs",
                   "--set", "resources.limits.cpu=1"]
# kustomize trees and the chart settings that deploy the same thing. The example overlay's
# Secret stands for the one a chart user creates (`existingSecret`).
SAME = {
    "base": [],
    "overlays/example": ["--set", "replicaCount=3",
                         "--set", "image.repository=registry.example.com/platform/jobbot"],
}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = by_kind(docs, kind)
    return doc


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _drop_labels(labels: dict[str, str] | None) -> None:
    if labels:
        for key in HELM_LABELS & set(labels):
            del labels[key]


def normalised(doc: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """`doc` without what must differ between helm and kustomize.

    helm's release labels go, with its annotation that keeps the jobs' namespace on uninstall
    and the pod annotation that rolls pods on a new app.yaml (the hash suffix of kustomize's
    ConfigMap name does that there) and that suffix (`renames`); app.yaml is compared as data,
    not text.
    """
    doc = copy.deepcopy(doc)
    text = yaml.safe_dump(doc)
    for old, new in renames.items():
        text = text.replace(old, new)
    doc = yaml.safe_load(text)
    _drop_labels(doc["metadata"].get("labels"))
    annotations = doc["metadata"].get("annotations")
    if annotations is not None:
        annotations.pop("helm.sh/resource-policy", None)  # helm only: keep on uninstall
        if not annotations:
            del doc["metadata"]["annotations"]
    spec = doc.get("spec", {})
    selector = spec.get("selector")
    if isinstance(selector, dict):
        _drop_labels(selector.get("matchLabels", selector))
    for spread in spec.get("template", {}).get("spec", {}).get("topologySpreadConstraints", []):
        _drop_labels(spread["labelSelector"]["matchLabels"])
    template = spec.get("template", {}).get("metadata")
    if template:
        _drop_labels(template.get("labels"))
        template.get("annotations", {}).pop("checksum/app-config", None)
        if template.get("annotations") == {}:
            del template["annotations"]
    if doc["kind"] == "ConfigMap":
        doc["data"]["app.yaml"] = yaml.safe_load(doc["data"]["app.yaml"])
    return doc


def keyed(docs: list[dict[str, Any]], renames: dict[str, str]) -> dict[tuple[str, str, str],
                                                                          dict[str, Any]]:
    objects = {}
    for doc in docs:
        doc = normalised(doc, renames)
        meta = doc["metadata"]
        objects[(doc["kind"], meta.get("namespace", ""), meta["name"])] = doc
    return objects


def test_chart_lints_and_its_notes_render() -> None:
    for args in ([], RICH, OTHER_NAMESPACE, ["--set", "githubSecret="]):
        result = helm("lint", "--strict", str(CHART), "--namespace", "jobbot", *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
        result = helm("install", "jobbot", str(CHART), "--namespace", "jobbot",
                      "--dry-run=client", *args)
        assert result.returncode == 0, result.stderr
        notes = result.stdout.split("\nNOTES:\n", 1)[1]
        assert "kubectl -n jobbot exec deploy/jobbot -- jobbot slack-manifest" in notes
        assert "/github/setup" in notes


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("settings", [[], RICH, OTHER_NAMESPACE],
                         ids=["defaults", "rich", "other-namespace"])
def test_chart_renders_valid_objects(version: str, settings: list[str]) -> None:
    docs = helm_template(*settings, kube_version=version)
    assert {"ServiceAccount", "ConfigMap", "Deployment", "Service"} <= {d["kind"] for d in docs}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("tree", sorted(SAME))
def test_chart_deploys_what_the_kustomize_tree_deploys(tree: str) -> None:
    built = kustomize_build(ROOT / "manifests" / tree)
    # helm does not make its release's namespace (`helm install --create-namespace` does), and
    # the chart takes an existing Secret.
    built = [doc for doc in built if doc["kind"] != "Secret"
             and not (doc["kind"] == "Namespace" and doc["metadata"]["name"] == "jobbot")]
    generated = one(built, "ConfigMap")["metadata"]["name"]
    assert re.fullmatch(r"jobbot-app-[a-z0-9]{10}", generated), generated
    ours = keyed(helm_template(*SAME[tree]), {})
    theirs = keyed(built, {generated: "jobbot-app"})
    assert sorted(ours) == sorted(theirs)
    for key, doc in theirs.items():
        assert ours[key] == doc, key


def test_the_jobs_namespace_outlives_the_release() -> None:
    namespace = one(helm_template(), "Namespace")
    assert namespace["metadata"]["name"] == "jobs"
    assert namespace["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_role_and_namespace_follow_the_jobs_namespace() -> None:
    docs = helm_template(*OTHER_NAMESPACE)
    assert not by_kind(docs, "Namespace")
    role, binding = one(docs, "Role"), one(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "shop-jobs"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "jobbot",
                                    "namespace": "jobbot"}]
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["app.yaml"])
    assert config["kubernetes"] == {"namespace": "shop-jobs"}


def test_local_executor_has_no_jobs_namespace_nor_rbac() -> None:
    docs = helm_template(*RICH)
    assert not by_kind(docs, "Namespace") and not by_kind(docs, "Role")
    assert not by_kind(docs, "RoleBinding")
    assert not by_kind(docs, "PodDisruptionBudget")  # one replica: nothing to keep available
    env = env_of(docs)
    assert env["JOBBOT_EXECUTOR"] == "local"
    assert env["JOBBOT_DATABASE_URL"] == {"secretKeyRef": {"name": "postgres-app", "key": "uri"}}
    assert env["JOBBOT_PUBLIC_URL"] == "https://jobbot.example.org"
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["image"] == "registry.example.com/platform/jobbot:0.2.0"
    assert pod["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "jobbot"}},
        {"secretRef": {"name": "jobbot-github", "optional": True}}]
    ingress = one(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["jobbot.example.org"],
                                       "secretName": "jobbot-tls"}]
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "jobbot.example.org"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "jobbot",
                                                              "port": {"name": "http"}}
    assert one(docs, "Service")["spec"]["type"] == "LoadBalancer"


def test_public_url_wins_over_the_ingress_host() -> None:
    env = env_of(helm_template("--set", "ingress.enabled=true",
                               "--set", "publicUrl=https://jobs.example.net/"))
    assert env["JOBBOT_PUBLIC_URL"] == "https://jobs.example.net"
    assert "JOBBOT_PUBLIC_URL" not in env_of(helm_template())


def test_app_config_from_a_file_is_served_as_written_and_rolls_the_pods() -> None:
    text = (ROOT / "manifests" / "base" / "app.yaml").read_text()
    docs = helm_template("--set-file", f"appConfig={ROOT / 'manifests' / 'base' / 'app.yaml'}")
    assert one(docs, "ConfigMap")["data"]["app.yaml"] == text
    checksum = "checksum/app-config"
    before = one(helm_template(), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    after = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert before[checksum] != after[checksum]


@pytest.mark.parametrize(("settings", "message"), [
    (["--set", "jobs.namespace=shop-jobs"],
     "appConfig's app example runs its jobs in namespace jobs, but jobs.namespace is shop-jobs"),
    (["--set", "appConfig.kubernetes=null"],
     "appConfig's app example runs its jobs in namespace example, but jobs.namespace is jobs"),
    (["--set", "executor=kubernetess"], "at '/executor': value must be one of 'kubernetes', "
                                        "'local'"),
    (["--set", "replicas=3"], "additional properties 'replicas' not allowed"),
    (["--set", "jobs.namespace=Jobs"], "at '/jobs/namespace': 'Jobs' does not match pattern"),
    (["--set", "publicUrl=jobbot.example.com"], "at '/publicUrl': 'jobbot.example.com' does not"),
    (["--set-string", "appConfig=app: [unclosed"], "appConfig is not YAML"),
])
def test_settings_that_cannot_work_are_refused(settings: list[str], message: str) -> None:
    result = helm("template", "jobbot", str(CHART), *settings)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert result.stdout == ""


def quick_start_commands() -> list[list[str]]:
    """The shell commands of the README's "Quick start on a cluster", split as a shell would."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start on a cluster\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL):
        text = re.sub(r"\\\n\s*", "", textwrap.dedent(block))
        commands += [shlex.split(line, comments=True) for line in text.splitlines()
                     if line.strip()]
    return commands


def test_the_quick_start_installs_the_chart_with_the_secret_it_reads() -> None:
    commands = quick_start_commands()
    [install] = [c for c in commands if c[:2] == ["helm", "install"]]
    assert install[2:4] == ["jobbot", "charts/jobbot"]
    docs = helm_template(*install[4:])  # its --namespace comes last, and wins
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
    host = one(docs, "Ingress")["spec"]["rules"][0]["host"]
    assert env_of(docs)["JOBBOT_PUBLIC_URL"] == f"https://{host}"
    assert one(docs, "Deployment")["metadata"]["namespace"] == install[
        install.index("--namespace") + 1]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    [create] = [c for c in commands if "generic" in c]
    assert create[create.index("generic") + 1] == values["existingSecret"]
    keys = {arg.split("=", 2)[1] for arg in create if arg.startswith("--from-literal=")}
    assert values["database"]["secretKey"] in keys
    assert {"JOBBOT_SECRET_KEY", "JOBBOT_WEB_TOKEN"} <= keys
    [patch] = [c for c in commands if "patch" in c]
    assert values["existingSecret"] in patch
    assert {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"} <= set(
        yaml.safe_load(patch[patch.index("-p") + 1])["stringData"])
    restarts = [c for c in commands if c[-2:] == ["restart", "deployment/jobbot"]]
    assert len(restarts) == 2  # after Slack's credentials, and after the GitHub App's
    assert values["githubSecret"] in (ROOT / "README.md").read_text().split(
        "**Register the GitHub App.**", 1)[1]

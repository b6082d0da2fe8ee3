"""Pure functions from a run (or a build) to the batch/v1 Job jobbot creates for it.

`jobbot render` prints what these return, so what people review is what the executor sends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import BadInput
from core.overrides import run_environment
from core.spec import AppSpec, BuildSpec, JobSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_APP = "jobbot.dev/app"
LABEL_JOB = "jobbot.dev/job"
LABEL_RUN_ID = "jobbot.dev/run-id"
LABEL_SOURCE = "jobbot.dev/source"
LABEL_BUILD = "jobbot.dev/build"
ANNOTATION_ACTOR = "jobbot.dev/actor"
ANNOTATION_SHA = "jobbot.dev/git-sha"
ANNOTATION_REF = "jobbot.dev/git-ref"
ANNOTATION_RUN_NUMBER = "jobbot.dev/run-number"
SELECTOR = f"{MANAGED_BY}=jobbot"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
CONTAINER = "job"
# Rootless BuildKit, pinned; its daemonless wrapper runs buildkitd for the one build.
BUILDKIT_IMAGE = "moby/buildkit:v0.23.2-rootless"
MAX_NAME = 63
_HASH_LENGTH = 5

# What `jobbot render` puts where a real run has its own values.
PLACEHOLDER_RUN_ID = "0000000000000000"
PLACEHOLDER_NUMBER = 0
PLACEHOLDER_SHA = "0" * 40
# Where a build's git credentials are mounted in its BuildKit container, and the key of its Secret.
GIT_SECRET_DIR = "/run/secrets/jobbot-git"
GIT_SECRET_KEY = "token"
# What `jobbot render --build` shows where a build's Secret and its token go.
PLACEHOLDER_GIT_TOKEN = "<an installation token: this repository only, contents: read, 1 hour>"
# The suffix of the Secret holding a run's secret parameter values (named after its Job).
PARAMS_SUFFIX = "-params"


@dataclass(frozen=True)
class RunInfo:
    """The parts of a run that shape its Job (a Run row, or render's placeholders)."""

    id: str
    number: int
    source: str
    actor: str
    sha: str | None = None
    ref: str | None = None
    image: str | None = None


def short_hash(text: str, length: int = _HASH_LENGTH) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def job_name(job: str, number: int, run_id: str) -> str:
    """`<job>-<number>-<hash of run id>`, a DNS-1123 label; the job part is cut to fit."""
    tail = f"-{number}-{short_hash(run_id)}"
    head = job[: MAX_NAME - len(tail)].rstrip("-")
    return head + tail


def build_job_name(build: str, sha: str) -> str:
    """`<build>-<sha12>-<hash>`: one Job per build and sha, so a repeated push adopts it."""
    tail = f"-{sha[:12]}-{short_hash(build + '@' + sha)}"
    return build[: MAX_NAME - len(tail)].rstrip("-") + tail


def run_image(app: AppSpec, job: JobSpec, run: RunInfo) -> str:
    """The image a run uses: the job's, the run's own, or its build's image at the run's sha."""
    if run.image:
        return run.image
    if job.image:
        return job.image
    if job.image_from_build:
        build = app.build(job.image_from_build)
        if not run.sha:
            raise BadInput(
                f"job {job.name!r} runs the image of build {build.name!r}: "
                "the run needs a git sha to pick <image>:<sha>"
            )
        return f"{build.image}:{run.sha}"
    raise BadInput(f"job {job.name!r} has neither image nor image_from_build")


def job_manifest(app: AppSpec, job: JobSpec, run: RunInfo,
                 env: dict[str, str] | None = None,
                 pod_annotations: dict[str, str] | None = None,
                 secrets: Sequence[str] | None = None,
                 secret_env: Collection[str] = ()) -> dict[str, Any]:
    """The batch/v1 Job for one run of `job`; `env` is job env plus run overrides (BadInput
    for a name the job does not declare).

    `pod_annotations` go on the pod template (a deployment's mesh or cost tooling; none by
    default, and `jobbot render` shows none). `secrets` are the Secrets the run gets, the
    job's by default (none for a fork pull request's run: `secret_names`). The names in
    `secret_env` (the run's secret parameters) take their value from the key of that name in
    the run's own Secret (`params_secret_name`), so the Job holds no secret value.
    """
    name = job_name(job.name, run.number, run.id)
    labels = {
        MANAGED_BY: "jobbot", LABEL_APP: app.app, LABEL_JOB: job.name,
        LABEL_RUN_ID: run.id, LABEL_SOURCE: run.source,
    }
    annotations = {ANNOTATION_ACTOR: run.actor, ANNOTATION_RUN_NUMBER: str(run.number)}
    if run.sha:
        annotations[ANNOTATION_SHA] = run.sha
    if run.ref:
        annotations[ANNOTATION_REF] = run.ref
    # Only names the job declares (so a run never shadows its envFrom secrets), and the
    # JOBBOT_ names from jobbot alone.
    variables = run_environment(job, job.env if env is None else env)
    variables.update({"JOBBOT_APP": app.app, "JOBBOT_JOB": job.name, "JOBBOT_RUN_ID": run.id,
                      "JOBBOT_RUN_NUMBER": str(run.number)})
    if run.sha:
        variables["JOBBOT_GIT_SHA"] = run.sha
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": run_image(app, job, run),
        "command": list(job.command),
        "env": [_env_var(k, v, name, secret_env) for k, v in variables.items()],
        "securityContext": _container_security(job),
    }
    secrets = job.secrets if secrets is None else secrets
    if secrets:
        # The kubelet hands the values to the pod; jobbot reads them only to mask logs.
        container["envFrom"] = [{"secretRef": {"name": secret}} for secret in secrets]
    resources = {k: v for k, v in (("cpu", job.resources.cpu),
                                   ("memory", job.resources.memory)) if v}
    if resources:
        container["resources"] = {"requests": dict(resources), "limits": dict(resources)}
    pod_spec: dict[str, Any] = {
        "restartPolicy": job.restart_policy,
        "terminationGracePeriodSeconds": job.stop_grace_period,
        "securityContext": _pod_security(job),
        "containers": [container],
    }
    if app.kubernetes.service_account_name:
        pod_spec["serviceAccountName"] = app.kubernetes.service_account_name
    template_meta: dict[str, Any] = {"labels": {k: labels[k] for k in (
        MANAGED_BY, LABEL_APP, LABEL_JOB, LABEL_RUN_ID)}}
    if pod_annotations:
        template_meta["annotations"] = dict(pod_annotations)
    spec: dict[str, Any] = {
        "backoffLimit": job.backoff_limit,
        "parallelism": job.parallelism,
        "completions": job.completions,
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if job.time_limit:
        spec["activeDeadlineSeconds"] = job.time_limit
    if job.ttl is not None:
        spec["ttlSecondsAfterFinished"] = job.ttl
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": app.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def _env_var(key: str, value: str, job: str, secret_env: Collection[str]) -> dict[str, Any]:
    if key not in secret_env:
        return {"name": key, "value": value}
    return {"name": key, "valueFrom": {"secretKeyRef": {"name": params_secret_name(job),
                                                        "key": key}}}


def _pod_security(job: JobSpec) -> dict[str, Any]:
    wanted = job.security_context
    context: dict[str, Any] = {
        "runAsNonRoot": True if wanted.run_as_non_root is None else wanted.run_as_non_root,
        "seccompProfile": {"type": wanted.seccomp_profile or "RuntimeDefault"},
    }
    if wanted.run_as_user is not None:
        context["runAsUser"] = wanted.run_as_user
    if wanted.run_as_group is not None:
        context["runAsGroup"] = wanted.run_as_group
    return context


def _container_security(job: JobSpec) -> dict[str, Any]:
    wanted = job.security_context
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if wanted.capabilities_add:
        capabilities["add"] = list(wanted.capabilities_add)
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": bool(wanted.allow_privilege_escalation),
        "capabilities": capabilities,
    }
    if wanted.read_only_root_filesystem is not None:
        context["readOnlyRootFilesystem"] = wanted.read_only_root_filesystem
    return context


def git_secret_name(job_name: str) -> str:
    """The Secret holding a build Job's git token: named after the Job, which owns it."""
    return f"{job_name}-git"


def git_secret_manifest(job: dict[str, Any], token: str) -> dict[str, Any]:
    """The Secret with a build's short-lived git token, owned by its Job (`job` as the API
    returned it, uid included), so that it goes when the Job goes."""
    meta = job["metadata"]
    labels = {k: v for k, v in (meta.get("labels") or {}).items()
              if k in (MANAGED_BY, LABEL_APP, LABEL_BUILD)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": git_secret_name(meta["name"]), "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                 "uid": meta["uid"]}],
        },
        "stringData": {GIT_SECRET_KEY: token},
    }


def params_secret_name(job_name: str) -> str:
    """The Secret holding a run's secret parameter values: `<Job name>-params`, a DNS-1123
    label; a Job name too long for the suffix is cut and a hash of it keeps it apart."""
    if len(job_name) + len(PARAMS_SUFFIX) <= MAX_NAME:
        return job_name + PARAMS_SUFFIX
    tail = f"-{short_hash(job_name)}{PARAMS_SUFFIX}"
    return job_name[: MAX_NAME - len(tail)].rstrip("-") + tail


def params_secret_manifest(job: dict[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """The Secret with a run's secret parameter values (a key per variable name), owned by
    its Job (`job` as the API returned it, uid included), so that it goes when the Job goes.
    Immutable: a run's values never change; a rerun is a new run with a Secret of its own."""
    meta = job["metadata"]
    labels = {k: v for k, v in (meta.get("labels") or {}).items()
              if k in (MANAGED_BY, LABEL_APP, LABEL_JOB, LABEL_RUN_ID)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": {
            "name": params_secret_name(meta["name"]), "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                 "uid": meta["uid"]}],
        },
        "stringData": dict(values),
    }


def build_manifest(app: AppSpec, build: BuildSpec, *, sha: str, repository: str,
                   ref: str | None = None, actor: str = "jobbot",
                   git_host: str | None = None) -> dict[str, Any]:
    """A rootless BuildKit Job that builds `<image>:<sha>` from `repository` at `sha` and pushes it.

    The context is BuildKit's git context (`<repository>#<sha>:<context dir>`), so nothing is
    fetched by jobbot. With `git_host`, the Secret `git_secret_name(<Job name>)` is mounted
    into the BuildKit container and handed to BuildKit as the build secret
    `GIT_AUTH_TOKEN.<git_host>`, which its git source uses to clone a private repository:
    the token is in no argument and no environment value.
    """
    image = f"{build.image}:{sha}"
    cache = f"{build.image}:buildcache"
    subdir = "" if build.context in (".", "./", "") else f":{build.context.strip('/')}"
    dockerfile = build.dockerfile
    if subdir and dockerfile.startswith(build.context.rstrip("/") + "/"):
        dockerfile = dockerfile[len(build.context.rstrip("/")) + 1:]
    labels = {MANAGED_BY: "jobbot", LABEL_APP: app.app, LABEL_BUILD: build.name}
    annotations = {ANNOTATION_ACTOR: actor, ANNOTATION_SHA: sha}
    if ref:
        annotations[ANNOTATION_REF] = ref
    args = [
        "build", "--frontend", "dockerfile.v0",
        "--opt", f"context={repository}#{sha}{subdir}",
        "--opt", f"filename={dockerfile}",
        "--output", f"type=image,name={image},push=true",
        "--export-cache", f"type=registry,ref={cache},mode=max",
        "--import-cache", f"type=registry,ref={cache}",
    ]
    env: list[dict[str, Any]] = [
        # Rootless BuildKit cannot create a new process sandbox inside an unprivileged pod.
        {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "buildkitd", "mountPath": "/home/user/.local/share/buildkit"},
    ]
    volumes: list[dict[str, Any]] = [{"name": "buildkitd", "emptyDir": {}}]
    name = build_job_name(build.name, sha)
    if git_host:
        args += ["--secret", f"id=GIT_AUTH_TOKEN.{git_host},"
                             f"src={GIT_SECRET_DIR}/{GIT_SECRET_KEY}"]
        mounts.append({"name": "git-credentials", "mountPath": GIT_SECRET_DIR,
                       "readOnly": True})
        volumes.append({"name": "git-credentials", "secret": {
            "secretName": git_secret_name(name), "defaultMode": 0o440,
            "items": [{"key": GIT_SECRET_KEY, "path": GIT_SECRET_KEY}]}})
    if build.registry_secret:
        # buildctl reads this docker config for every registry it talks to: the push of the
        # image and cache, and the pulls of private base images and of the cache.
        env.append({"name": "DOCKER_CONFIG", "value": "/home/user/.docker"})
        mounts.append({"name": "registry-credentials", "mountPath": "/home/user/.docker",
                       "readOnly": True})
        volumes.append({"name": "registry-credentials", "secret": {
            "secretName": build.registry_secret,
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}})
    container = {
        "name": "buildkit",
        "image": BUILDKIT_IMAGE,
        "command": ["buildctl-daemonless.sh"],
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        # BuildKit's rootless mode needs user namespaces: seccomp and AppArmor must allow them.
        "securityContext": {
            "runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": True,
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "fsGroup": 1000},
        "containers": [container],
        "volumes": volumes,
    }
    if app.kubernetes.service_account_name:
        pod_spec["serviceAccountName"] = app.kubernetes.service_account_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": app.namespace,
                     "labels": labels, "annotations": annotations},
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }

"""Smoke tests of the e2e cluster itself: Jobs run, fail and time out; logs and RBAC work."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import KubeCluster, wait_for

# What the product's Role will roughly grant; the real one will come from manifests/.
JOBBOT_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
]
TIMEOUT = 60.0


def _create_job(
    batch: client.BatchV1Api,
    namespace: str,
    annotations: dict[str, str] | None = None,
    *,
    backoff_limit: int = 0,
    active_deadline_seconds: int | None = None,
    ttl_seconds_after_finished: int | None = None,
) -> str:
    """Create a one-container Job whose pod outcome the annotations choose; return its name."""
    name = f"job-{uuid.uuid4().hex[:6]}"
    batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1JobSpec(
                backoff_limit=backoff_limit,
                active_deadline_seconds=active_deadline_seconds,
                ttl_seconds_after_finished=ttl_seconds_after_finished,
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(annotations=annotations),
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[
                            client.V1Container(name="main", image="busybox:1.36", command=["true"])
                        ],
                    ),
                ),
            ),
        ),
    )
    return name


def _terminal_condition(
    batch: client.BatchV1Api, namespace: str, name: str
) -> client.V1JobCondition | None:
    """The Job's Complete or Failed condition once it is True, else None."""
    status = batch.read_namespaced_job(name, namespace).status
    for condition in (status and status.conditions) or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return condition
    return None


def _job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def _phase(pod: client.V1Pod) -> str | None:
    return pod.status.phase if pod.status else None


def _exit_codes(pod: client.V1Pod) -> list[int | None]:
    statuses = (pod.status and pod.status.container_statuses) or []
    return [
        s.state.terminated.exit_code if s.state and s.state.terminated else None for s in statuses
    ]


@pytest.fixture
def jobbot_ns(kube_cluster: KubeCluster, namespace: str) -> str:
    """A namespace where the jobbot ServiceAccount holds JOBBOT_RULES."""
    kube_cluster.grant_jobbot(namespace, JOBBOT_RULES)
    return namespace


def test_job_runs_on_a_kwok_node_and_completes(
    kube_cluster: KubeCluster, jobbot_client: client.ApiClient, jobbot_ns: str
) -> None:
    batch = client.BatchV1Api(jobbot_client)
    core = client.CoreV1Api(jobbot_client)
    name = _create_job(batch, jobbot_ns)

    condition = wait_for(
        lambda: _terminal_condition(batch, jobbot_ns, name),
        timeout=TIMEOUT,
        what=f"Job {name} to finish",
    )

    assert condition.type == "Complete"
    pods = _job_pods(core, jobbot_ns, name)
    assert len(pods) == 1
    assert pods[0].spec is not None
    assert pods[0].spec.node_name in kube_cluster.nodes
    assert _phase(pods[0]) == "Succeeded"


def test_failing_job_exhausts_its_backoff_limit(
    jobbot_client: client.ApiClient, jobbot_ns: str
) -> None:
    batch = client.BatchV1Api(jobbot_client)
    core = client.CoreV1Api(jobbot_client)
    name = _create_job(batch, jobbot_ns, {"e2e.jobbot.dev/exit-code": "3"}, backoff_limit=1)

    # The Job controller waits ~10s before the retry; TIMEOUT leaves room for that.
    condition = wait_for(
        lambda: _terminal_condition(batch, jobbot_ns, name),
        timeout=TIMEOUT,
        what=f"Job {name} to finish",
    )

    assert (condition.type, condition.reason) == ("Failed", "BackoffLimitExceeded")
    pods = _job_pods(core, jobbot_ns, name)
    assert len(pods) == 2
    assert [(_phase(p), _exit_codes(p)) for p in pods] == [("Failed", [3])] * 2


def test_job_past_its_deadline_fails_and_its_pod_is_stopped(
    jobbot_client: client.ApiClient, jobbot_ns: str
) -> None:
    batch = client.BatchV1Api(jobbot_client)
    core = client.CoreV1Api(jobbot_client)
    name = _create_job(
        batch, jobbot_ns, {"e2e.jobbot.dev/run": "forever"}, active_deadline_seconds=3
    )

    condition = wait_for(
        lambda: _terminal_condition(batch, jobbot_ns, name),
        timeout=TIMEOUT,
        what=f"Job {name} to finish",
    )

    assert (condition.type, condition.reason) == ("Failed", "DeadlineExceeded")
    wait_for(
        lambda: not _job_pods(core, jobbot_ns, name) or None,
        timeout=TIMEOUT,
        what=f"pods of Job {name} to be deleted",
    )


def test_duration_annotation_keeps_the_pod_running_until_it_succeeds(
    jobbot_client: client.ApiClient, jobbot_ns: str
) -> None:
    batch = client.BatchV1Api(jobbot_client)
    core = client.CoreV1Api(jobbot_client)
    name = _create_job(batch, jobbot_ns, {"e2e.jobbot.dev/duration": "4s"})

    wait_for(
        lambda: [p for p in _job_pods(core, jobbot_ns, name) if _phase(p) == "Running"],
        timeout=TIMEOUT,
        what=f"a Running pod of Job {name}",
    )
    condition = wait_for(
        lambda: _terminal_condition(batch, jobbot_ns, name),
        timeout=TIMEOUT,
        what=f"Job {name} to finish",
    )

    assert condition.type == "Complete"


def test_deleting_a_running_job_removes_it_and_its_pods(
    jobbot_client: client.ApiClient, jobbot_ns: str
) -> None:
    batch = client.BatchV1Api(jobbot_client)
    core = client.CoreV1Api(jobbot_client)
    name = _create_job(batch, jobbot_ns, {"e2e.jobbot.dev/run": "forever"})
    wait_for(
        lambda: [p for p in _job_pods(core, jobbot_ns, name) if _phase(p) == "Running"],
        timeout=TIMEOUT,
        what=f"a Running pod of Job {name}",
    )

    # Foreground: the garbage collector deletes the pods before the Job itself goes.
    batch.delete_namespaced_job(name, jobbot_ns, propagation_policy="Foreground")

    def all_gone() -> bool:
        jobs = batch.list_namespaced_job(jobbot_ns, field_selector=f"metadata.name={name}")
        return not jobs.items and not _job_pods(core, jobbot_ns, name)

    wait_for(all_gone, timeout=TIMEOUT, what=f"Job {name} and its pods to be deleted")


def test_finished_job_is_deleted_after_its_ttl(
    jobbot_client: client.ApiClient, jobbot_ns: str
) -> None:
    batch = client.BatchV1Api(jobbot_client)
    name = _create_job(batch, jobbot_ns, ttl_seconds_after_finished=1)

    def job_gone() -> bool:
        jobs = batch.list_namespaced_job(jobbot_ns, field_selector=f"metadata.name={name}")
        return not jobs.items

    wait_for(job_gone, timeout=TIMEOUT, what=f"Job {name} to be deleted by its TTL")


def _running_pod(core: client.CoreV1Api, namespace: str) -> str:
    name = f"pod-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox")]),
        ),
    )
    wait_for(
        lambda: _phase(core.read_namespaced_pod(name, namespace)) == "Running",
        timeout=TIMEOUT,
        what=f"pod {name} Running",
    )
    return name


def test_pod_log_is_read_through_the_apiserver(
    kube_cluster: KubeCluster,
    admin_client: client.ApiClient,
    jobbot_client: client.ApiClient,
    jobbot_ns: str,
) -> None:
    pod = _running_pod(client.CoreV1Api(admin_client), jobbot_ns)
    kube_cluster.set_pod_log(jobbot_ns, pod, ["building jobbot", "tests passed"])
    core = client.CoreV1Api(jobbot_client)

    def chosen_log() -> str | None:
        # kwok learns about the Logs object through a watch, so the first reads may
        # still return the default log.
        text = core.read_namespaced_pod_log(pod, jobbot_ns, container="main")
        return text if "tests passed" in text else None

    text = wait_for(chosen_log, timeout=TIMEOUT, what=f"the log of pod {pod}")

    assert text == "building jobbot\ntests passed\n"


def test_default_log_is_served_for_pods_without_their_own(
    admin_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin_client)
    pod = _running_pod(core, namespace)

    assert core.read_namespaced_pod_log(pod, namespace) == "hello from jobbot e2e\n"


def test_deleted_pod_goes_away(admin_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin_client)
    pod = _running_pod(core, namespace)

    core.delete_namespaced_pod(pod, namespace)  # graceful: 30s grace period by default

    def gone() -> bool:
        try:
            core.read_namespaced_pod(pod, namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, timeout=TIMEOUT, what=f"pod {pod} to be removed")


@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(
            lambda api, ns: client.CoreV1Api(api).delete_collection_namespaced_secret(ns),
            id="delete-secrets",
        ),
        pytest.param(
            lambda api, ns: client.CoreV1Api(api).list_namespaced_secret(ns),
            id="list-secrets",
        ),
        pytest.param(
            lambda api, ns: client.CoreV1Api(api).create_namespaced_pod(
                ns,
                client.V1Pod(
                    metadata=client.V1ObjectMeta(name="sneaky"),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="main", image="busybox")]
                    ),
                ),
            ),
            id="create-pods",
        ),
        pytest.param(
            lambda api, ns: client.BatchV1Api(api).list_namespaced_job("default"),
            id="jobs-outside-granted-namespace",
        ),
    ],
)
def test_jobbot_service_account_is_refused_what_its_role_does_not_grant(
    jobbot_client: client.ApiClient, jobbot_ns: str, attempt: Any
) -> None:
    # The same identity may do what it was granted: the 403 below is RBAC, not bad auth.
    client.BatchV1Api(jobbot_client).list_namespaced_job(jobbot_ns)

    with pytest.raises(ApiException) as refused:
        attempt(jobbot_client, jobbot_ns)

    assert refused.value.status == 403

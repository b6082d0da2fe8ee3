"""The Kubernetes executor against the fake API server, over HTTP, with the official client."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.errors import BadInput
from core.executors.k8s.manifests import job_manifest, job_name, params_secret_name
from core.executors.kubernetes import KubernetesExecutor, run_info
from core.models import Run
from core.policy import Actor
from core.service import JobService
from core.spec import AppSpec, parse_app
from core.store import Store
from tests.fakes.kubernetes import FakeKubernetes
from tests.support.kube import api_for, eventually, kube_service

NS = "shop-jobs"
APP_YAML = """
app: shop
kubernetes: {namespace: shop-jobs, service_account_name: jobs-runner}
jobs:
  - name: migrate
    image: python:3.12-slim
    command: [python, migrate.py]
    backoff_limit: 2
    time_limit: 60
    env: {MODE: fast, API_TOKEN: ""}
  - name: report
    image: python:3.12-slim
    command: [python, report.py]
  - name: preview
    image: python:3.12-slim
    command: [python, preview.py]
    secrets: [preview-db]
    pull_requests: true
  - name: trusted-preview
    image: python:3.12-slim
    command: [python, preview.py]
    secrets: [preview-db]
    pull_requests: true
    fork_secrets: true
  - name: db
    image: python:3.12-slim
    command: [python, db.py]
    env: {DB_USER: app, SERVICE_PASSWORD: env-pass-1234, API_TOKEN: env-token-0000}
    secrets: [db-credentials]
    parameters: [{name: PHRASE, secret: true}]
  - name: deploy
    image: python:3.12-slim
    command: [python, deploy.py]
    backoff_limit: 1
    time_limit: 60
    env: {REGION: eu}
    parameters:
      - {name: STAGE, type: choice, choices: [blue, green], default: blue}
      - {name: DEPLOY_KEY, secret: true}
  - name: a-deploy-job-whose-name-is-as-long-as-a-dns-label-may-ever-be-x
    image: python:3.12-slim
    command: [python, deploy.py]
    parameters: [{name: DEPLOY_KEY, secret: true}]
"""
ACTOR = Actor.cli("alice")
# What the Secret db-credentials holds; the pods of job `db` print it.
DB_PASSWORD = "hunter2-in-the-cluster"
CERT = "-----BEGIN KEY-----\nline-one-abcdef\nline-two-ghijkl\n-----END KEY-----\n"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def app() -> AppSpec:
    return parse_app(APP_YAML)


@pytest.fixture
async def service(app: AppSpec, sqlite_store: Store, tmp_path: Path,
                  fake: FakeKubernetes) -> AsyncIterator[JobService]:
    service = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    yield service
    await service.shutdown()


async def _job_of(fake: FakeKubernetes, run: Run) -> str:
    name = job_name(run.job, run.number, run.id)
    await eventually(lambda: _true((NS, name) in fake.jobs), f"Job {name}")
    return name


async def _true(value: bool) -> bool:
    return value


async def _final(service: JobService, run: Run) -> Run:
    async def probe() -> Run | None:
        latest = await service.get_run(run.id)
        return latest if latest.run_state.is_final else None
    result: Run = await eventually(probe, f"{run.label} to finish")
    return result


async def test_a_run_becomes_a_job_and_succeeds_with_its_log(
        service: JobService, fake: FakeKubernetes) -> None:
    result = await service.trigger("migrate", ACTOR, overrides={"API_TOKEN": "s3cr3t-value"})
    run = result.run
    name = await _job_of(fake, run)
    job = fake.job(NS, name)
    assert job["metadata"]["labels"]["jobbot.dev/run-id"] == run.id
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "jobbot"
    assert job["metadata"]["annotations"]["jobbot.dev/actor"] == ACTOR.id
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == 60
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "jobs-runner"
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODE"] == "fast"
    assert env["API_TOKEN"] == "s3cr3t-value"
    pod = await fake.add_pod(NS, name, log=["starting", "token is s3cr3t-value"])
    await fake.append_log(NS, pod, "migrated 3 tables")
    await eventually(lambda: _running(service, run), "the run to be running")
    await fake.set_pod(NS, pod, "Succeeded")
    await fake.finish_job(NS, name, "Complete")
    final = await _final(service, run)
    assert final.state == "succeeded"
    assert final.exit_code == 0
    assert final.external_id == f"{NS}/{name}"
    detail = await service.detail(run.id)
    assert [(a.index, a.state, a.exit_code, a.handle) for a in detail.attempts] == [
        (1, "succeeded", 0, pod)]
    lines = [line async for _, line in service.logs(run.id)]
    assert lines == ["starting", "token is ********", "migrated 3 tables"]


async def _running(service: JobService, run: Run) -> bool:
    return (await service.get_run(run.id)).state == "running"


async def test_failed_attempts_are_retried_then_the_run_fails(
        service: JobService, fake: FakeKubernetes) -> None:
    run = (await service.trigger("migrate", ACTOR)).run
    name = await _job_of(fake, run)
    first = await fake.add_pod(NS, name, log=["boom"])
    await fake.set_pod(NS, first, "Failed", exit_code=3)
    second = await fake.add_pod(NS, name, log=["boom again"])
    await fake.set_pod(NS, second, "Failed", exit_code=4)
    await fake.finish_job(NS, name, "Failed", "BackoffLimitExceeded")
    final = await _final(service, run)
    assert final.state == "failed"
    assert final.exit_code == 4
    assert final.reason == "failed 2 times (backoff_limit 2); last exit code 4"
    attempts = (await service.detail(run.id)).attempts
    assert [(a.index, a.state, a.exit_code, a.reason) for a in attempts] == [
        (1, "failed", 3, "exit code 3"), (2, "failed", 4, "exit code 4")]
    assert [line async for _, line in service.logs(run.id, attempt=2)] == ["boom again"]


async def test_deadline_exceeded_is_timed_out(service: JobService,
                                              fake: FakeKubernetes) -> None:
    run = (await service.trigger("migrate", ACTOR)).run
    name = await _job_of(fake, run)
    pod = await fake.add_pod(NS, name)
    await eventually(lambda: _attempts(service, run, 1), "attempt 1")
    await fake.finish_job(NS, name, "FailureTarget", "DeadlineExceeded")
    final = await _final(service, run)
    assert final.state == "timed_out"
    assert final.reason == "time limit of 1m reached"
    attempt = (await service.detail(run.id)).attempts[0]
    assert (attempt.state, attempt.handle) == ("timed_out", pod)


async def _attempts(service: JobService, run: Run, count: int) -> bool:
    return len((await service.detail(run.id)).attempts) >= count


async def test_success_criteria_met_settles_the_run(service: JobService,
                                                    fake: FakeKubernetes) -> None:
    run = (await service.trigger("report", ACTOR)).run
    name = await _job_of(fake, run)
    pod = await fake.add_pod(NS, name)
    await fake.set_pod(NS, pod, "Succeeded")
    await fake.finish_job(NS, name, "SuccessCriteriaMet", "CompletionsReached")
    assert (await _final(service, run)).state == "succeeded"


async def test_cancel_deletes_the_job_in_the_background(service: JobService,
                                                         fake: FakeKubernetes) -> None:
    run = (await service.trigger("migrate", ACTOR)).run
    name = await _job_of(fake, run)
    await fake.add_pod(NS, name, log=["working"])
    await eventually(lambda: _attempts(service, run, 1), "attempt 1")
    await service.cancel(run.id, Actor.cli("bob"))
    final = await _final(service, run)
    assert (final.state, final.reason) == ("cancelled", "cancelled by bob")
    assert (NS, name) not in fake.jobs
    deletes = [q for method, path, q in fake.requests if method == "DELETE"]
    assert deletes == [{"propagationPolicy": "Background"}] or deletes[0].get(
        "propagationPolicy") == "Background"
    assert (await service.detail(run.id)).attempts[0].state == "cancelled"


async def test_a_retried_create_adopts_the_existing_job(
        service: JobService, fake: FakeKubernetes, app: AppSpec) -> None:
    # The first create reached the API but its answer was lost: the Job exists already.
    def existing_before_create(job: dict[str, object]) -> None:
        fake.on_create = None
    original = await service.trigger("report", ACTOR)
    name = await _job_of(fake, original.run)
    executor = service.executor
    assert isinstance(executor, KubernetesExecutor)
    launches_before = sum(1 for m, p, _ in fake.requests if m == "POST")
    # Launch the same run again, as a retry after a timeout would.
    from core.executors.base import Launch
    run = await service.get_run(original.run.id)
    await executor.launch(Launch(run=run, app=app, job=app.job("report")))
    assert sum(1 for m, p, _ in fake.requests if m == "POST") == launches_before + 1
    assert [k for k in fake.jobs if k[1].startswith("report-")] == [(NS, name)]
    pod = await fake.add_pod(NS, name)
    await fake.set_pod(NS, pod, "Succeeded")
    await fake.finish_job(NS, name, "Complete")
    assert (await _final(service, run)).state == "succeeded"
    assert len((await service.detail(run.id)).attempts) == 1
    existing_before_create({})


async def test_throttling_is_retried_after_retry_after(service: JobService,
                                                       fake: FakeKubernetes) -> None:
    fake.fail("POST", "/jobs", 429, count=2, headers={"Retry-After": "0"},
              reason="TooManyRequests")
    fake.fail("GET", "/pods", 503, count=1)
    fake.fail("GET", "/pods", 0, count=1)  # a connection reset
    run = (await service.trigger("report", ACTOR)).run
    name = await _job_of(fake, run)
    assert sum(1 for m, p, _ in fake.requests if m == "POST") == 3
    pod = await fake.add_pod(NS, name)
    await fake.set_pod(NS, pod, "Succeeded")
    await fake.finish_job(NS, name, "Complete")
    assert (await _final(service, run)).state == "succeeded"


async def test_forbidden_names_the_missing_rbac_rule(service: JobService,
                                                     fake: FakeKubernetes) -> None:
    fake.fail("POST", "/jobs", 403, count=1, reason="Forbidden")
    run = (await service.trigger("report", ACTOR)).run
    final = await _final(service, run)
    assert final.state == "failed"
    assert final.reason is not None
    assert "HTTP 403" in final.reason
    assert "verb 'create' on resource 'jobs' in namespace 'shop-jobs'" in final.reason
    assert fake.jobs == {}


async def test_an_expired_watch_lists_again_and_misses_nothing(
        service: JobService, fake: FakeKubernetes) -> None:
    run = (await service.trigger("report", ACTOR)).run
    name = await _job_of(fake, run)
    lists_before = _plain_lists(fake)
    # While the watch is down its history is compacted, and the Job finishes meanwhile.
    fake.fail("GET", "/jobs?watch", 503, count=3)
    fake.expire_history()
    pod = await fake.add_pod(NS, name)
    await fake.set_pod(NS, pod, "Succeeded")
    await fake.finish_job(NS, name, "Complete")
    assert (await _final(service, run)).state == "succeeded"
    assert _plain_lists(fake) > lists_before


def _plain_lists(fake: FakeKubernetes) -> int:
    return sum(1 for m, p, q in fake.requests
               if m == "GET" and p.endswith("/jobs") and q.get("watch") != "true")


async def test_a_job_deleted_by_someone_else_fails_the_run(service: JobService,
                                                           fake: FakeKubernetes) -> None:
    run = (await service.trigger("report", ACTOR)).run
    name = await _job_of(fake, run)
    await eventually(lambda: _running(service, run), "running")
    await fake.remove_job(NS, name)
    final = await _final(service, run)
    assert final.state == "failed"
    assert final.reason == f"its Kubernetes Job {NS}/{name} was deleted before it finished " \
                           "(not by jobbot)"


async def test_a_restarted_jobbot_adopts_running_jobs_and_settles_vanished_ones(
        app: AppSpec, sqlite_store: Store, tmp_path: Path, fake: FakeKubernetes) -> None:
    first = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    kept = (await first.trigger("migrate", ACTOR)).run
    lost = (await first.trigger("report", ACTOR)).run
    kept_name = await _job_of(fake, kept)
    lost_name = await _job_of(fake, lost)
    pod = await fake.add_pod(NS, kept_name, log=["before the restart"])
    await eventually(lambda: _attempts(first, kept, 1), "attempt 1")
    await first.shutdown("jobbot restarting")
    # While no jobbot watches: one Job's TTL removes it, the other finishes.
    await fake.remove_job(NS, lost_name)
    await fake.append_log(NS, pod, "after the restart")
    await fake.set_pod(NS, pod, "Succeeded")
    await fake.finish_job(NS, kept_name, "Complete")
    assert (await first.get_run(kept.id)).state == "running"

    second = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    try:
        assert await second.reconcile() == 2
        adopted = await _final(second, kept)
        assert adopted.state == "succeeded"
        vanished = await _final(second, lost)
        assert vanished.state == "failed"
        assert vanished.reason == (f"its Kubernetes Job {NS}/{lost_name} no longer exists "
                                   "(deleted, or removed by its TTL) while jobbot was not "
                                   "watching; marked failed at start-up")
        attempts = (await second.detail(kept.id)).attempts
        assert [(a.index, a.state) for a in attempts] == [(1, "succeeded")]
        lines = [line async for _, line in second.logs(kept.id)]
        assert lines == ["before the restart", "after the restart"]
    finally:
        await second.shutdown()


async def test_manifest_sent_is_the_rendered_one(service: JobService, fake: FakeKubernetes,
                                                 app: AppSpec) -> None:
    run = (await service.trigger("migrate", ACTOR, overrides={"MODE": "slow"})).run
    name = await _job_of(fake, run)
    sent = fake.job(NS, name)
    expected = job_manifest(app, app.job("migrate"), run_info(run),
                            env={**app.job("migrate").env, "MODE": "slow"})
    assert sent["spec"] == expected["spec"]
    assert sent["metadata"]["labels"] == expected["metadata"]["labels"]
    assert sent["metadata"]["annotations"] == expected["metadata"]["annotations"]


async def test_fork_pull_request_runs_get_no_secrets_unless_the_job_says_so(
        service: JobService, fake: FakeKubernetes) -> None:
    fork = {"fork": True, "pull_request": 7}

    async def secret_refs(job: str, origin: dict[str, object]) -> list[object]:
        run = (await service.trigger(job, ACTOR, origin=origin)).run
        container = fake.job(NS, await _job_of(fake, run))["spec"]["template"]["spec"][
            "containers"][0]
        return list(container.get("envFrom", []))

    fake.add_secret(NS, "preview-db", {"PREVIEW_PASSWORD": "preview-pass"})
    preview_db = [{"secretRef": {"name": "preview-db"}}]
    assert await secret_refs("preview", {"pull_request": 7}) == preview_db
    assert await secret_refs("preview", fork) == []
    assert await secret_refs("trusted-preview", fork) == preview_db


async def test_watch_resumes_from_its_resource_version(service: JobService,
                                                       fake: FakeKubernetes) -> None:
    run = (await service.trigger("report", ACTOR)).run
    name = await _job_of(fake, run)
    pod = await fake.add_pod(NS, name)
    await eventually(lambda: _attempts(service, run, 1), "attempt 1 (seen through the watch)")
    fake.drop_watches.set()  # the connection drops; the watch comes back where it was
    await eventually(lambda: _true(sum(1 for m, p, q in fake.requests
                                       if q.get("watch") == "true") >= 2), "a second watch")
    resumed = [q for m, p, q in fake.requests if q.get("watch") == "true"][-1]
    assert int(resumed["resourceVersion"]) > 100
    await fake.set_pod(NS, pod, "Failed", exit_code=2)
    await fake.finish_job(NS, name, "Failed", "BackoffLimitExceeded")
    final = await _final(service, run)
    assert (final.state, final.exit_code) == ("failed", 2)


async def test_wiring_builds_the_executor_from_a_kubeconfig(
        tmp_path: Path, fake: FakeKubernetes) -> None:
    from jobbot.settings import Settings
    from jobbot.wiring import build_runtime

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}]}))
    (tmp_path / "app.yaml").write_text(APP_YAML)
    settings = Settings(JOBBOT_APP_CONFIG=tmp_path / "app.yaml", JOBBOT_DATA_DIR=tmp_path / "d",
                        JOBBOT_EXECUTOR="kubernetes", JOBBOT_KUBECONFIG=kubeconfig)
    runtime = build_runtime(settings)
    try:
        assert isinstance(runtime.service.executor, KubernetesExecutor)
        run = (await runtime.service.trigger("report", ACTOR)).run
        assert (NS, job_name("report", run.number, run.id)) in fake.jobs
    finally:
        await runtime.service.shutdown()
        runtime.close()
    missing = Settings(JOBBOT_APP_CONFIG=tmp_path / "app.yaml", JOBBOT_DATA_DIR=tmp_path / "d",
                       JOBBOT_EXECUTOR="kubernetes", JOBBOT_KUBECONFIG=tmp_path / "nope")
    with pytest.raises(BadInput, match="cannot load Kubernetes credentials"):
        build_runtime(missing)


# -- masking: Secret values and sensitive env never reach the log or a reason -------------


def _add_db_secret(fake: FakeKubernetes) -> None:
    fake.add_secret(NS, "db-credentials", {"DB_PASSWORD": DB_PASSWORD, "CERT": CERT,
                                           "DB_HOST": "db.internal"},
                    binary={"BLOB": b"\xff\xfe-binary-value"})


def _leaks(text: str) -> list[str]:
    """The secret values (or their base64) that appear in `text`."""
    import base64

    values = [DB_PASSWORD, "line-two-ghijkl", "env-pass-1234", "override-tok-5678",
              base64.b64encode(b"\xff\xfe-binary-value").decode()]
    values += [base64.b64encode(v.encode()).decode() for v in values[:3]]
    return [v for v in values if v in text]


async def test_a_pod_printing_its_secret_has_it_masked_in_the_log_and_the_reason(
        service: JobService, fake: FakeKubernetes, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    import base64

    _add_db_secret(fake)
    run = (await service.trigger("db", ACTOR, overrides={"API_TOKEN": "override-tok-5678"})).run
    name = await _job_of(fake, run)
    printed = [f"DB_PASSWORD={DB_PASSWORD}",
               f"encoded {base64.b64encode(DB_PASSWORD.encode())!r}",
               "second key line: line-two-ghijkl",
               "env says env-pass-1234 and override-tok-5678",
               "blob " + base64.b64encode(b"\xff\xfe-binary-value").decode(),
               "connecting to db.internal as app"]
    pod = await fake.add_pod(NS, name, log=printed)
    await fake.set_pod(NS, pod, "Failed", exit_code=1)
    await fake.finish_job(NS, name, "Failed", "PodFailurePolicy",
                          f"container job exited with {DB_PASSWORD} in its message")
    final = await _final(service, run)
    assert final.state == "failed"
    assert final.reason == "container job exited with ******** in its message; last exit code 1"
    lines = [line async for _, line in service.logs(run.id)]
    # Every value of the Secret is masked (DB_HOST too); a line of a multi-line value too.
    assert lines == ["DB_PASSWORD=********", "encoded b'********'",
                     "second key line: ********", "env says ******** and ********",
                     "blob ********", "connecting to ******** as app"]
    stored = (tmp_path / "jobbot.db").read_bytes().decode("latin-1")
    assert _leaks(stored) == []
    assert _leaks(caplog.text) == []
    assert not any(DB_PASSWORD in str(r.args) for r in caplog.records)


@pytest.mark.parametrize(("status", "expected"), [
    (403, "cannot read Secret shop-jobs/db-credentials to mask its values: Kubernetes refused "
          "to get secrets in namespace shop-jobs (HTTP 403, forbidden): give jobbot's "
          "ServiceAccount a Role with verb 'get' on resource 'secrets' in namespace "
          "'shop-jobs'"),
    (404, "Secret shop-jobs/db-credentials does not exist, so the pod could not start: create "
          "it, or remove it from the job's secrets"),
])
async def test_a_secret_jobbot_cannot_read_fails_the_run_before_its_job_exists(
        service: JobService, fake: FakeKubernetes, status: int, expected: str) -> None:
    if status == 403:
        _add_db_secret(fake)
        fake.fail("GET", "/secrets/db-credentials", 403, reason="Forbidden")
    run = (await service.trigger("db", ACTOR)).run
    final = await _final(service, run)
    assert (final.state, final.reason) == ("failed", f"could not start: {expected}")
    assert final.external_id is None
    assert fake.jobs == {}


async def test_an_adopted_run_keeps_masking_secrets_and_sensitive_env(
        app: AppSpec, sqlite_store: Store, tmp_path: Path, fake: FakeKubernetes) -> None:
    _add_db_secret(fake)
    first = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    run = (await first.trigger("db", ACTOR, overrides={"API_TOKEN": "override-tok-5678",
                                                       "PHRASE": "phrase-value-9999"})).run
    name = await _job_of(fake, run)
    pod = await fake.add_pod(NS, name, log=[f"before {DB_PASSWORD} phrase-value-9999"])
    await eventually(lambda: _attempts(first, run, 1), "attempt 1")
    await first.shutdown("jobbot restarting")
    # The secret parameter is masked by its name's `secret: true`, after a restart too.
    await fake.append_log(NS, pod, f"after {DB_PASSWORD}", "env-pass-1234 override-tok-5678",
                          "line-two-ghijkl", "phrase-value-9999")
    second = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    try:
        assert await second.reconcile() == 1
        await fake.set_pod(NS, pod, "Succeeded")
        await fake.finish_job(NS, name, "Complete")
        assert (await _final(second, run)).state == "succeeded"
        lines = [line async for _, line in second.logs(run.id)]
        assert lines == ["before ******** ********", "after ********", "******** ********",
                         "********", "********"]
    finally:
        await second.shutdown()


async def test_an_adopted_run_whose_secret_is_gone_has_its_pod_log_withheld(
        app: AppSpec, sqlite_store: Store, tmp_path: Path, fake: FakeKubernetes) -> None:
    _add_db_secret(fake)
    first = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    run = (await first.trigger("db", ACTOR)).run
    name = await _job_of(fake, run)
    pod = await fake.add_pod(NS, name, log=[f"before {DB_PASSWORD}"])
    await eventually(lambda: _log_has(first, run, "before ********"), "the masked first line")
    await first.shutdown("jobbot restarting")
    # Deleted while no jobbot watched: its pod still has the values, jobbot cannot know them.
    del fake.secrets[(NS, "db-credentials")]
    await fake.append_log(NS, pod, f"after {DB_PASSWORD}")
    second = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    try:
        assert await second.reconcile() == 1
        await fake.set_pod(NS, pod, "Succeeded")
        await fake.finish_job(NS, name, "Complete")
        assert (await _final(second, run)).state == "succeeded"
        lines = [line async for _, line in second.logs(run.id)]
        assert lines == [
            "before ********",
            f"[jobbot] the log of pod {pod} is not copied: Secret {NS}/db-credentials no longer "
            "exists, so its values cannot be masked"]
    finally:
        await second.shutdown()


async def _log_has(service: JobService, run: Run, line: str) -> bool:
    return line in [text async for _, text in service.logs(run.id)]


async def test_a_run_may_not_override_a_name_its_secret_holds(
        service: JobService, fake: FakeKubernetes) -> None:
    # DB_USER is declared in env, and the Secret holds it too: envFrom gives the pod the
    # Secret's value unless a run's env shadows it, so no run may set it.
    fake.add_secret(NS, "db-credentials", {"DB_PASSWORD": DB_PASSWORD, "DB_USER": "admin"})
    with pytest.raises(BadInput, match="DB_USER"):
        await service.trigger("db", ACTOR, overrides={"DB_USER": "attacker"})
    assert fake.jobs == {}
    run = (await service.trigger("db", ACTOR, overrides={"API_TOKEN": "fine-1234"})).run
    assert await _job_of(fake, run)


async def _log_is(service: JobService, run: Run, lines: list[str]) -> bool:
    return [line async for _, line in service.logs(run.id)] == lines


async def test_a_takeover_copies_a_pod_log_on_from_the_last_line_kept(
        app: AppSpec, store: Store, tmp_path: Path, fake: FakeKubernetes) -> None:
    # With PostgreSQL the second jobbot is another replica (its own data directory).
    shared = store.dialect != "postgresql"
    first = kube_service(app, store, tmp_path / "a", api_for(fake.url))
    run = (await first.trigger("migrate", ACTOR)).run
    name = await _job_of(fake, run)
    now = time.time_ns()
    pod = await fake.add_pod(NS, name)
    await fake.append_log(NS, pod, "one", "two", at=now - 2_000_000_000)
    await fake.append_log(NS, pod, "three", "four", at=now)
    await eventually(lambda: _log_is(first, run, ["one", "two", "three", "four"]), "4 lines")
    await first.shutdown("replica gone")
    # Written while nobody copies: one line in the very nanosecond of the last two kept.
    await fake.append_log(NS, pod, "five", at=now)
    await fake.append_log(NS, pod, "six")
    second = kube_service(app, store, tmp_path / ("a" if shared else "b"), api_for(fake.url))
    try:
        assert await second.reconcile() == 1
        everything = ["one", "two", "three", "four", "five", "six"]
        await eventually(lambda: _log_is(second, run, everything), "the lines after")
        await fake.append_log(NS, pod, "seven")
        await fake.set_pod(NS, pod, "Succeeded")
        await fake.finish_job(NS, name, "Complete")
        assert (await _final(second, run)).state == "succeeded"
        assert [line async for _, line in second.logs(run.id)] == [*everything, "seven"]
        reads = [query for method, path, query in fake.requests
                 if method == "GET" and path.endswith(f"/pods/{pod}/log")]
        assert reads[0].get("timestamps") == "true" and "sinceSeconds" not in reads[0]
        assert reads[-1].get("timestamps") == "true" and int(reads[-1]["sinceSeconds"]) > 2
    finally:
        await second.shutdown()


# -- secret parameters: in a Secret of the run's own, never in its Job --------------------

DEPLOY_KEY = "deploy-key-never-in-the-job-7331"


def _params(fake: FakeKubernetes, name: str) -> dict[str, object] | None:
    return fake.secrets.get((NS, params_secret_name(name)))


def _secret_deletes(fake: FakeKubernetes, name: str) -> int:
    path = f"/api/v1/namespaces/{NS}/secrets/{params_secret_name(name)}"
    return sum(1 for method, p, _ in fake.requests if method == "DELETE" and p == path)


async def _deploy(service: JobService, fake: FakeKubernetes,
                  key: str = DEPLOY_KEY) -> tuple[Run, str]:
    run = (await service.trigger("deploy", ACTOR, overrides={"STAGE": "green",
                                                             "DEPLOY_KEY": key})).run
    name = await _job_of(fake, run)
    await eventually(lambda: _true(_params(fake, name) is not None), "the run's Secret")
    return run, name


async def test_a_secret_parameter_is_in_a_secret_the_job_owns_and_never_in_the_job(
        service: JobService, fake: FakeKubernetes, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    import base64

    run, name = await _deploy(service, fake)
    job = fake.job(NS, name)
    # Nowhere in the Job: env, args, labels, annotations, pod template.
    assert DEPLOY_KEY not in json.dumps(job)
    assert base64.b64encode(DEPLOY_KEY.encode()).decode() not in json.dumps(job)
    secret_name = params_secret_name(name)
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[:3] == [
        {"name": "REGION", "value": "eu"}, {"name": "STAGE", "value": "green"},
        {"name": "DEPLOY_KEY", "valueFrom": {"secretKeyRef": {"name": secret_name,
                                                              "key": "DEPLOY_KEY"}}}]
    # The Secret: created after the Job, owned by it (its uid), holding the value alone.
    [created] = fake.created_secrets
    assert created["metadata"]["name"] == secret_name
    assert created["metadata"]["ownerReferences"] == [{
        "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"]}]
    assert created["metadata"]["labels"]["jobbot.dev/run-id"] == run.id
    assert {k: base64.b64decode(v).decode() for k, v in created["data"].items()} == {
        "DEPLOY_KEY": DEPLOY_KEY}
    assert fake.owned_secrets(NS, name) == [fake.secrets[(NS, secret_name)]]
    posts = [p for m, p, _ in fake.requests if m == "POST"]
    assert posts == [f"/apis/batch/v1/namespaces/{NS}/jobs", f"/api/v1/namespaces/{NS}/secrets"]
    # A pod printing it has it masked; the run ends, and the Secret with it (the Job stays).
    pod = await fake.add_pod(NS, name, log=[f"key is {DEPLOY_KEY}"])
    await fake.set_pod(NS, pod, "Succeeded")
    await fake.finish_job(NS, name, "Complete")
    assert (await _final(service, run)).state == "succeeded"
    assert (NS, name) in fake.jobs
    assert _params(fake, name) is None
    assert _secret_deletes(fake, name) == 1
    assert [line async for _, line in service.logs(run.id)] == ["key is ********"]
    stored = (tmp_path / "jobbot.db").read_bytes().decode("latin-1")
    assert DEPLOY_KEY not in stored and DEPLOY_KEY not in caplog.text


@pytest.mark.parametrize("ending", ["failed", "timed_out", "cancelled"])
async def test_the_runs_secret_is_deleted_however_the_run_ends(
        service: JobService, fake: FakeKubernetes, ending: str) -> None:
    run, name = await _deploy(service, fake)
    pod = await fake.add_pod(NS, name)
    await eventually(lambda: _attempts(service, run, 1), "attempt 1")
    if ending == "failed":
        await fake.set_pod(NS, pod, "Failed", exit_code=2)
        await fake.finish_job(NS, name, "Failed", "BackoffLimitExceeded")
    elif ending == "timed_out":
        await fake.finish_job(NS, name, "FailureTarget", "DeadlineExceeded")
    else:
        await service.cancel(run.id, Actor.cli("bob"))
    assert (await _final(service, run)).state == ending
    assert _params(fake, name) is None
    # Deleted by jobbot itself (a cancelled run's Job is gone, and the fake's garbage
    # collector would take the Secret with it too).
    assert _secret_deletes(fake, name) == 1
    assert ((NS, name) in fake.jobs) is (ending != "cancelled")


async def test_a_rerun_gets_a_fresh_secret_with_the_same_value(
        service: JobService, fake: FakeKubernetes) -> None:
    import base64

    first, first_name = await _deploy(service, fake)
    pod = await fake.add_pod(NS, first_name)
    await fake.set_pod(NS, pod, "Failed", exit_code=1)
    await fake.finish_job(NS, first_name, "Failed", "BackoffLimitExceeded")
    await _final(service, first)
    rerun = (await service.rerun(first.id, ACTOR)).run
    name = await _job_of(fake, rerun)
    await eventually(lambda: _true(_params(fake, name) is not None), "the rerun's Secret")
    assert name != first_name and _params(fake, first_name) is None
    secret = fake.secrets[(NS, params_secret_name(name))]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == fake.job(NS, name)[
        "metadata"]["uid"]
    assert base64.b64decode(secret["data"]["DEPLOY_KEY"]).decode() == DEPLOY_KEY
    assert DEPLOY_KEY not in json.dumps(fake.job(NS, name))
    assert len(fake.created_secrets) == 2


async def test_a_run_without_secret_parameters_has_no_secret(
        service: JobService, fake: FakeKubernetes, app: AppSpec) -> None:
    run = (await service.trigger("deploy", ACTOR, overrides={"STAGE": "green"})).run
    name = await _job_of(fake, run)
    sent = fake.job(NS, name)
    assert "valueFrom" not in json.dumps(sent)
    expected = job_manifest(app, app.job("deploy"), run_info(run),
                            env={"REGION": "eu", "STAGE": "green"})
    assert sent["spec"] == expected["spec"]
    pod = await fake.add_pod(NS, name)
    await fake.set_pod(NS, pod, "Succeeded")
    await fake.finish_job(NS, name, "Complete")
    assert (await _final(service, run)).state == "succeeded"
    assert fake.created_secrets == []
    assert [p for m, p, _ in fake.requests if "/secrets" in p] == []


@pytest.mark.parametrize(("status", "expected"), [
    (403, "Kubernetes refused to create secrets in namespace shop-jobs (HTTP 403, forbidden): "
          "give jobbot's ServiceAccount a Role with verb 'create' on resource 'secrets' in "
          "namespace 'shop-jobs'"),
    (422, "HTTP 422: injected 422"),
])
async def test_a_secret_that_cannot_be_created_fails_the_run_and_leaves_nothing(
        service: JobService, fake: FakeKubernetes, caplog: pytest.LogCaptureFixture,
        status: int, expected: str) -> None:
    fake.fail("POST", "/secrets", status, reason="Forbidden" if status == 403 else "Invalid")
    run = (await service.trigger("deploy", ACTOR, overrides={"DEPLOY_KEY": DEPLOY_KEY})).run
    final = await _final(service, run)
    name = job_name("deploy", run.number, run.id)
    assert (final.state, final.reason) == (
        "failed", f"could not start: could not give Job {NS}/{name} its secret parameters "
                  f"(the Job is deleted): {expected}")
    assert fake.jobs == {} and fake.secrets == {}
    assert [m for m, p, _ in fake.requests if p.endswith(f"/jobs/{name}")] == ["DELETE"]
    assert DEPLOY_KEY not in caplog.text
    # The next run of it starts as usual.
    after, _ = await _deploy(service, fake)
    assert (await service.get_run(after.id)).state in ("queued", "running")


async def test_a_long_job_name_gets_a_secret_name_that_fits(
        service: JobService, fake: FakeKubernetes) -> None:
    job = "a-deploy-job-whose-name-is-as-long-as-a-dns-label-may-ever-be-x"
    run = (await service.trigger(job, ACTOR, overrides={"DEPLOY_KEY": DEPLOY_KEY})).run
    name = await _job_of(fake, run)
    [created] = await eventually(lambda: _value(fake.created_secrets), "the run's Secret")
    secret = created["metadata"]["name"]
    assert len(name) == 63 and len(secret) <= 63 and secret.endswith("-params")
    env = fake.job(NS, name)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == secret


async def _value(value: object) -> object:
    return value


async def test_a_restarted_jobbot_deletes_the_secret_of_a_run_it_finds_finished(
        app: AppSpec, sqlite_store: Store, tmp_path: Path, fake: FakeKubernetes) -> None:
    first = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    run, name = await _deploy(first, fake)
    pod = await fake.add_pod(NS, name, log=[f"before {DEPLOY_KEY}"])
    await eventually(lambda: _attempts(first, run, 1), "attempt 1")
    await first.shutdown("jobbot restarting")
    # The Job runs on (a retry's pod needs the Secret too): stopping leaves it in place.
    assert _params(fake, name) is not None and _secret_deletes(fake, name) == 0
    await fake.append_log(NS, pod, f"after {DEPLOY_KEY}")
    await fake.set_pod(NS, pod, "Succeeded")
    await fake.finish_job(NS, name, "Complete")
    second = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    try:
        assert await second.reconcile() == 1
        assert (await _final(second, run)).state == "succeeded"
        assert _params(fake, name) is None and (NS, name) in fake.jobs
        # Masked after the restart too: jobbot read the values back from the run's Secret.
        assert [line async for _, line in second.logs(run.id)] == [
            "before ********", "after ********"]
    finally:
        await second.shutdown()


async def test_a_run_whose_secret_was_never_made_fails_on_adoption(
        app: AppSpec, sqlite_store: Store, tmp_path: Path, fake: FakeKubernetes) -> None:
    first = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    run, name = await _deploy(first, fake)
    await first.shutdown("jobbot restarting")
    # As if jobbot had stopped between creating the Job and its Secret: its pod waits.
    del fake.secrets[(NS, params_secret_name(name))]
    second = kube_service(app, sqlite_store, tmp_path / "data", api_for(fake.url))
    try:
        assert await second.reconcile() == 1
        final = await _final(second, run)
        assert (final.state, final.reason) == (
            "failed", f"its Secret {NS}/{params_secret_name(name)} with the values of its "
                      "secret parameters was never created (jobbot stopped while starting "
                      "it); its Job was deleted at start-up")
        assert (NS, name) not in fake.jobs
    finally:
        await second.shutdown()

"""Runs through JobService and the local executor: retries, time limits, cancel, logs, secrets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.errors import BadInput, Conflict, NotFound, PermissionDenied
from core.masking import MASK
from core.models import RunState, Source
from core.policy import Actor
from core.service import JobService
from core.spec import AppSpec
from core.store import Store
from tests.support.apps import make_service, python_job, service_for, stored_log

ADA = Actor.cli("ada")


async def run_to_end(service: JobService, job: str, **kwargs: object) -> tuple[str, str]:
    result = await service.trigger(job, ADA, **kwargs)  # type: ignore[arg-type]
    run = await asyncio.wait_for(service.wait(result.run.id), 30)
    return run.id, run.state


async def log_of(service: JobService, run_id: str) -> list[str]:
    return [line async for _, line in service.logs(run_id)]


async def test_a_quick_job_succeeds_with_its_env_and_overrides(
        store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("hello", """
        import os
        env = os.environ
        print("hello", env["GREETING"], env["JOBBOT_JOB"], env["JOBBOT_RUN_NUMBER"])
        print("cwd", os.getcwd())
    """, env={"GREETING": "hi"})])
    run_id, state = await run_to_end(service, "hello", overrides={"GREETING": "hey"})
    assert state == "succeeded"
    lines = await log_of(service, run_id)
    assert lines[0] == "hello hey hello 1"
    assert lines[1] == f"cwd {tmp_path / 'app'}"
    detail = await service.detail(run_id)
    assert [(a.index, a.state, a.exit_code) for a in detail.attempts] == [(1, "succeeded", 0)]
    assert detail.run.exit_code == 0
    assert detail.run.started_at
    assert detail.run.finished_at


async def test_jobbot_credentials_never_reach_a_job(store: Store, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    service = service_for(tmp_path, store, [python_job("env", """
        import os
        print(sorted(k for k in os.environ if k.startswith("SLACK")))
    """)])
    run_id, _ = await run_to_end(service, "env")
    assert await log_of(service, run_id) == ["[]"]


async def test_retries_until_backoff_limit_then_fails(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("flaky", """
        import os, sys
        print("attempt", os.environ["JOBBOT_ATTEMPT"])
        sys.exit(3)
    """, backoff_limit=2)])
    run_id, state = await run_to_end(service, "flaky")
    detail = await service.detail(run_id)
    assert state == "failed"
    assert [(a.index, a.exit_code) for a in detail.attempts] == [(1, 3), (2, 3), (3, 3)]
    assert detail.run.exit_code == 3
    assert detail.run.reason == "failed 3 times (backoff_limit 2); last exit code 3"
    assert [line async for _, line in service.logs(run_id, attempt=2)] == [
        "[jobbot] retry 1 of 2", "attempt 2"]


async def test_a_retry_that_succeeds_makes_the_run_succeed(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("flaky", """
        import os, sys
        sys.exit(0 if os.environ["JOBBOT_ATTEMPT"] == "2" else 1)
    """, backoff_limit=5, restart_policy="OnFailure")])
    run_id, state = await run_to_end(service, "flaky")
    assert state == "succeeded"
    assert len((await service.detail(run_id)).attempts) == 2


async def test_time_limit_beats_retries(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("slow", """
        import time
        print("working", flush=True)
        time.sleep(30)
    """, time_limit=1, backoff_limit=5, stop_grace_period=1)])
    run_id, state = await run_to_end(service, "slow")
    detail = await service.detail(run_id)
    assert state == "timed_out"
    assert detail.run.reason == "time limit of 1s reached"
    assert len(detail.attempts) == 1
    assert detail.attempts[0].state == "timed_out"
    assert detail.attempts[0].exit_code == 128 + 15  # SIGTERM ended it


async def test_cancel_sends_sigterm_then_sigkill_after_the_grace_period(
        store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("stubborn", """
        import signal, time
        signal.signal(signal.SIGTERM, lambda *a: print("ignoring SIGTERM", flush=True))
        print("started", flush=True)
        while True:
            time.sleep(0.1)
    """, stop_grace_period=1)])
    result = await service.trigger("stubborn", ADA)
    await _wait_for_line(service, result.run.id, "started")
    await service.cancel(result.run.id, Actor.cli("bob"))
    run = await asyncio.wait_for(service.wait(result.run.id), 10)
    assert run.state == "cancelled"
    assert run.reason == "cancelled by bob"
    assert run.cancel_requested_by == "bob"
    attempt = (await service.detail(run.id)).attempts[0]
    assert attempt.exit_code == 128 + 9  # it ignored SIGTERM, so SIGKILL ended it
    assert "ignoring SIGTERM" in await log_of(service, run.id)
    with pytest.raises(Conflict, match="already cancelled"):
        await service.cancel(run.id, ADA)


async def test_parallel_completions(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("batch", """
        import os, time
        time.sleep(0.3)
        print("done", os.environ["JOBBOT_ATTEMPT"])
    """, completions=4, parallelism=2)])
    run_id, state = await run_to_end(service, "batch")
    detail = await service.detail(run_id)
    assert state == "succeeded"
    assert [a.index for a in detail.attempts] == [1, 2, 3, 4]
    # Two at a time: the third starts only after one of the first two ended.
    first_end = min(a.finished_at for a in detail.attempts[:2] if a.finished_at)
    assert detail.attempts[2].started_at >= first_end


async def test_jobbot_variables_come_from_jobbot_alone(store: Store, tmp_path: Path) -> None:
    secrets = tmp_path / "data" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "vars.env").write_text("JOBBOT_JOB=forged\nJOBBOT_GIT_SHA=forged\n")
    # A job built without `jobbot validate` (which refuses JOBBOT_ names in env).
    app = AppSpec.model_validate({"app": "demo", "directory": str(tmp_path), "jobs": [
        python_job("env", """
            import os
            print(sorted((k, v) for k, v in os.environ.items() if k.startswith("JOBBOT_")))
        """, secrets=["vars"], env={"JOBBOT_RUN_ID": "forged", "JOBBOT_GIT_SHA": "forged",
                                    "JOBBOT_ATTEMPT": "forged", "JOBBOT_EXTRA": "forged"})]})
    service = make_service(app, store, tmp_path / "data")
    run_id, state = await run_to_end(service, "env")
    assert state == "succeeded"
    assert await log_of(service, run_id) == [str([
        ("JOBBOT_APP", "demo"), ("JOBBOT_ATTEMPT", "1"), ("JOBBOT_JOB", "env"),
        ("JOBBOT_RUN_ID", run_id), ("JOBBOT_RUN_NUMBER", "1")])]


async def test_a_run_never_overrides_its_secrets_or_undeclared_names(
        store: Store, tmp_path: Path) -> None:
    secrets = tmp_path / "data" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "db.env").write_text("DB_HOST=db.prod\nexport DB_PASSWORD='hunter2-long'\n")
    service = service_for(tmp_path, store, [python_job(
        "migrate", "import os; print(os.environ['DB_HOST'], os.environ['MODE'])",
        env={"MODE": "fast", "DB_HOST": "db.internal"}, secrets=["db"])])
    accepts = "; a run of migrate may set only MODE"
    for overrides, refusal in [
            ({"DB_HOST": "attacker.example"}, "DB_HOST comes from the secrets of migrate"),
            ({"DB_PASSWORD": "x"}, "DB_PASSWORD comes from the secrets of migrate"),
            ({"MODE": "slow", "PATH": "/tmp"}, "PATH changes how programs are loaded"),
            ({"EXTRA": "1"}, "migrate does not declare EXTRA in its env")]:
        with pytest.raises(BadInput) as refused:
            await service.trigger("migrate", ADA, overrides=overrides)
        assert str(refused.value).startswith(refusal)
        assert str(refused.value).endswith(accepts)
    assert await service.runs() == []
    run_id, state = await run_to_end(service, "migrate", overrides={"MODE": "slow"})
    assert (state, await log_of(service, run_id)) == ("succeeded", ["db.internal slow"])


async def test_secret_values_are_masked_in_logs(store: Store, tmp_path: Path) -> None:
    secrets = tmp_path / "data" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "db-credentials.env").write_text("DB_PASSWORD='hunter2-long'\nDB_USER=app\n")
    service = service_for(tmp_path, store, [python_job("leaky", """
        import os
        print("password is", os.environ["DB_PASSWORD"])
        print("token is", os.environ["API_TOKEN"])
        print("user is", os.environ["DB_USER"])
    """, secrets=["db-credentials"], env={"API_TOKEN": ""})])
    run_id, state = await run_to_end(service, "leaky", overrides={"API_TOKEN": "tok-123456"})
    assert state == "succeeded"
    lines = await log_of(service, run_id)
    assert lines == [f"password is {MASK}", f"token is {MASK}", "user is app"]
    raw = stored_log(service, run_id).decode()
    assert raw.startswith("password is")
    assert "hunter2" not in raw
    assert "tok-123456" not in raw


async def test_a_missing_secret_fails_the_run_with_a_clear_reason(
        store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("x", "print(1)", secrets=["nope"])])
    run_id, state = await run_to_end(service, "x")
    run = (await service.detail(run_id)).run
    assert state == "failed"
    assert run.reason is not None
    assert "secret 'nope' not found" in run.reason


async def test_a_missing_command_fails_with_127(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [{"name": "ghost", "image": "x",
                                             "command": ["no-such-program-jobbot"]}])
    run_id, state = await run_to_end(service, "ghost")
    assert state == "failed"
    assert (await service.detail(run_id)).run.exit_code == 127
    assert "cannot start 'no-such-program-jobbot'" in (await log_of(service, run_id))[0]


async def test_follow_streams_lines_while_the_run_goes(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("ticker", """
        import time
        for i in range(5):
            print("tick", i, flush=True)
            time.sleep(0.2)
    """)])
    result = await service.trigger("ticker", ADA)
    seen = []
    async for _, line in service.logs(result.run.id, follow=True):
        seen.append(line)
        if len(seen) == 1:
            # The first line arrives while the job still runs.
            assert (await service.get_run(result.run.id)).state == "running"
    assert seen == [f"tick {i}" for i in range(5)]


async def test_idempotency_key_never_starts_a_second_run(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("hello", "print(1)")])
    first = await service.trigger("hello", ADA, idempotency_key="slack:T1")
    second = await service.trigger("hello", ADA, idempotency_key="slack:T1")
    assert first.created
    assert not second.created
    assert second.run.id == first.run.id
    await service.wait(first.run.id)
    assert len(await service.runs("hello")) == 1


async def test_manual_trigger_reports_other_active_runs(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("slow", "import time; time.sleep(5)",
                                                       stop_grace_period=0)])
    first = await service.trigger("slow", ADA)
    second = await service.trigger("slow", ADA)
    assert [r.id for r in second.active] == [first.run.id]
    await service.shutdown("test over")
    assert (await service.get_run(first.run.id)).state == "cancelled"
    assert (await service.get_run(second.run.id)).reason == "test over"


async def test_rerun_repeats_the_overrides(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job(
        "hello", "import os; print(os.environ.get('X'))", env={"X": "1"})])
    run_id, _ = await run_to_end(service, "hello", overrides={"X": "42"}, ref="main")
    again = await service.rerun("hello#1", Actor.cli("bob"))
    final = await service.wait(again.run.id)
    assert final.rerun_of == run_id
    assert final.ref == "main"
    assert final.actor == "cli:bob"
    assert await log_of(service, final.id) == ["42"]


async def test_bad_requests_are_refused_before_anything_is_written(
        store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("hello", "print(1)")])
    with pytest.raises(NotFound, match="did you mean hello"):
        await service.trigger("helo", ADA)
    with pytest.raises(BadInput, match="JOBBOT_ variables"):
        await service.trigger("hello", ADA, overrides={"JOBBOT_RUN_ID": "x"})
    with pytest.raises(BadInput, match="not a run"):
        await service.get_run("yesterday's")
    with pytest.raises(NotFound):
        await service.get_run("hello#99")
    assert store.list_runs() == []


async def test_policy_is_enforced_and_audited(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job(
        "migrate", "print(1)", allow={"slack_users": ["U1"], "slack_channels": ["C9"]})])
    mallory = Actor(id="slack:U2", source=Source.SLACK, slack_user="U2", slack_channel="C9")
    with pytest.raises(PermissionDenied, match=r"only users <@U1> in <#C9> may"):
        await service.trigger("migrate", mallory)
    assert store.list_runs() == []
    assert store.audit_log()[0].result == "denied"
    alice = Actor(id="slack:U1", source=Source.SLACK, slack_user="U1", slack_channel="C9")
    result = await service.trigger("migrate", alice)
    assert (await service.wait(result.run.id)).state == "succeeded"


async def test_pause_and_resume_are_recorded(store: Store, tmp_path: Path) -> None:
    service = service_for(tmp_path, store, [python_job("report", "print(1)",
                                                       schedule="0 3 * * *")])
    assert await service.pause("report", ADA)
    assert not await service.pause("report", ADA)
    summary = await service.job_summary("report")
    assert summary.paused
    assert summary.paused_by == "ada"
    assert await service.resume("report", ADA)
    assert [e.action for e in store.audit_log()][:3] == ["resume", "pause", "pause"]


async def test_a_job_without_a_schedule_cannot_be_paused(store: Store, tmp_path: Path) -> None:
    # Pausing only stops the scheduler; manual runs of a paused job still work.
    service = service_for(tmp_path, store, [python_job("manual", "print(1)")])
    with pytest.raises(BadInput, match=r"^manual has no schedule: nothing to pause$"):
        await service.pause("manual", ADA)
    with pytest.raises(BadInput, match=r"^manual has no schedule: nothing to resume$"):
        await service.resume("manual", ADA)
    assert not (await service.job_summary("manual")).paused
    assert store.audit_log() == []
    # Left paused by a schedule since removed from app.yaml: resume still clears it.
    store.set_paused("demo", "manual", True, "ada")
    assert await service.resume("manual", ADA)
    assert not (await service.job_summary("manual")).paused


async def _wait_for_line(service: JobService, run_id: str, text: str) -> None:
    async def scan() -> None:
        async for _, line in service.logs(run_id, follow=True):
            if line == text:
                return

    await asyncio.wait_for(scan(), 10)


async def test_cancel_from_another_process_reaches_the_owner(store: Store, tmp_path: Path) -> None:
    jobs = [python_job("slow", """
        import time
        print("started", flush=True)
        time.sleep(30)
    """, stop_grace_period=1)]
    owner = service_for(tmp_path, store, jobs)
    result = await owner.trigger("slow", ADA)
    await _wait_for_line(owner, result.run.id, "started")
    # A second service on the same database stands for `jobbot cancel` in another process.
    other = service_for(tmp_path / "other", store, jobs)
    await other.cancel(result.run.id, Actor.cli("bob"))
    run = await asyncio.wait_for(owner.wait(result.run.id), 10)
    assert (run.state, run.reason) == (RunState.CANCELLED.value, "cancelled by bob")

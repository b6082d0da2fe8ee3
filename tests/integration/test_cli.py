"""The `jobbot` command as people use it: separate processes, exit codes, crashes and restarts."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.links import Links
from tests.support.apps import python_job, write_app
from tests.support.net import free_port

SLOW = python_job("slow", """
    import time
    print("started", flush=True)
    time.sleep(60)
""", stop_grace_period=1)
JOBS = [
    python_job("hello", "print('hello from the job')", env={"GREETING": "hello"}),
    python_job("broken", "import sys; print('bad'); sys.exit(3)"),
    SLOW,
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_app(tmp_path, JOBS)
    return tmp_path


def jobbot(workdir: Path, *args: str, timeout: float = 60,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobbot", *args], cwd=workdir, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "JOBBOT_RETRY_DELAY": "0.01", **(env or {})},
        check=False,
    )


_SPAWNED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_spawned() -> Iterator[None]:
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def spawn(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A background `jobbot`; its pipes are closed and it is reaped after the test."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobbot", *args], cwd=workdir, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )
    _SPAWNED.append(proc)
    return proc


def wait_for(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_run_follow_prints_the_log_and_exits_0(workdir: Path) -> None:
    result = jobbot(workdir, "run", "hello", "--follow")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the job\n"
    assert "hello #1 succeeded" in result.stderr


def test_a_failed_run_exits_1(workdir: Path) -> None:
    result = jobbot(workdir, "run", "broken")
    assert result.returncode == 1
    assert "broken #1 failed" in result.stderr
    assert "exit code 3" in result.stderr


def test_validate_lists_jobs(workdir: Path) -> None:
    result = jobbot(workdir, "validate")
    assert result.returncode == 0
    assert "app demo, 3 jobs" in result.stdout
    assert "hello" in result.stdout
    assert "slow" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("run", "helo"), "no job 'helo' (did you mean hello?)"),
    (("run", "hello", "NOEQUALS"), "bad override 'NOEQUALS': use KEY=VALUE"),
    (("logs", "hello#7"), "no run 'hello#7'"),
    (("cancel", "nonsense"), "no run 'nonsense'"),
    (("pause", "nope"), "no job 'nope'"),
    (("pause", "hello"), "hello has no schedule: nothing to pause"),
    (("runs", "nope"), "no job 'nope'"),
    (("run", "hello", "PATH=/tmp/x"), "PATH changes how programs are loaded or started: no run "
     "may set it; a run of hello may set only GREETING"),
    (("run", "hello", "GREETING=hi", "LD_PRELOAD=/tmp/x.so"), "LD_PRELOAD changes how programs "
     "are loaded or started: no run may set it; a run of hello may set only GREETING"),
    (("run", "hello", "DB_HOST=attacker.example"), "hello does not declare DB_HOST in its env; "
     "a run of hello may set only GREETING"),
    (("run", "broken", "GREETING=hi"), "broken does not declare GREETING in its env; a run of "
     "broken may set no variables (it declares none in its env)"),
    (("run", "hello", "JOBBOT_JOB=other"), "JOBBOT_JOB is set by jobbot itself (JOBBOT_ "
     "variables are jobbot's): no run may set it; a run of hello may set only GREETING"),
    (("run", "hello", "GREETING\n=1"), "bad override 'GREETING\\n': names are letters, "
     "digits and _, not starting with a digit"),
    (("run", "hello", "GREETING=two\nlines"), "bad override GREETING: the value contains a "
     "newline; values are one line of text"),
    (("run", "hello", "GREETING=" + "x" * 4097), "bad override GREETING: the value is longer "
     "than 4096 characters"),
    (("render", "hello", "PYTHONPATH=/tmp"), "PYTHONPATH changes how programs are loaded or "
     "started: no run may set it; a run of hello may set only GREETING"),
    (("render", "hello", "EXTRA=1"), "hello does not declare EXTRA in its env; a run of hello "
     "may set only GREETING"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
        workdir: Path, args: tuple[str, ...], message: str) -> None:
    result = jobbot(workdir, *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"jobbot: {message}"]
    assert not (workdir / ".jobbot").exists()


def test_a_run_may_not_set_a_key_of_the_jobs_secrets(tmp_path: Path) -> None:
    write_app(tmp_path, [python_job("dbjob", "import os; print('env', os.environ['RAILS_ENV'])",
                                    env={"RAILS_ENV": "production", "DB_HOST": "db.internal"},
                                    secrets=["db-credentials"])])
    secrets = tmp_path / ".jobbot" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "db-credentials.env").write_text("DB_HOST=db.prod\nDB_PASSWORD=hunter2-long\n")
    for command in ("run", "render"):
        for key in ("DB_HOST", "DB_PASSWORD"):
            result = jobbot(tmp_path, command, "dbjob", f"{key}=attacker.example")
            assert result.returncode == 2
            assert result.stderr.splitlines() == [
                f"jobbot: {key} comes from the secrets of dbjob: no run may set it; a run of "
                "dbjob may set only RAILS_ENV"]
            assert result.stdout == ""
    assert sorted(p.name for p in (tmp_path / ".jobbot").iterdir()) == ["secrets"]
    result = jobbot(tmp_path, "run", "dbjob", "RAILS_ENV=staging", "--follow")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "env staging\n"


@pytest.mark.parametrize(("env", "message"), [
    ({"JOBBOT_PORT": "abc"}, "JOBBOT_PORT must be a port number (1-65535), not 'abc'"),
    ({"JOBBOT_PORT": "70000"}, "JOBBOT_PORT must be a port number (1-65535), not '70000'"),
    ({"JOBBOT_EXECUTOR": "nomad"},
     "JOBBOT_EXECUTOR must be 'local' or 'kubernetes', not 'nomad'"),
    ({"JOBBOT_SECRET_KEY": "tooshort-secret"},
     "JOBBOT_SECRET_KEY must be at least 16 bytes long"),
    ({"JOBBOT_DATABASE_URL": "mysql://me:hunter2-password@db/jobbot"},
     "JOBBOT_DATABASE_URL must be sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB, "
     "not a mysql:// URL"),
    ({"JOBBOT_METRICS_OPEN": "maybe"}, "JOBBOT_METRICS_OPEN must be true or false, not 'maybe'"),
    ({"JOBBOT_PORT": "abc", "JOBBOT_EXECUTOR": "nomad"},
     "JOBBOT_EXECUTOR must be 'local' or 'kubernetes', not 'nomad' (and 1 more)"),
])
def test_bad_settings_exit_2_with_one_line_naming_the_variable(
        workdir: Path, env: dict[str, str], message: str) -> None:
    for command in (("validate",), ("run", "hello")):
        result = jobbot(workdir, *command, env=env)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [f"jobbot: {message}"]
        assert result.stdout == ""
    # Secrets are never echoed, not even a database URL's password.
    assert "tooshort-secret" not in result.stderr
    assert "hunter2" not in result.stderr
    assert not (workdir / ".jobbot").exists()


def test_an_unreachable_database_is_one_line_without_the_password(workdir: Path) -> None:
    result = jobbot(workdir, "runs", env={
        "JOBBOT_DATABASE_URL": f"postgresql://me:hunter2-password@127.0.0.1:{free_port()}/x"})
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("jobbot: cannot open the database (JOBBOT_DATABASE_URL): ")
    assert "hunter2" not in line


def test_a_short_generated_link_key_is_one_line(workdir: Path) -> None:
    (workdir / ".jobbot").mkdir()
    (workdir / ".jobbot" / "secret_key").write_text("short\n")
    result = jobbot(workdir, "run", "hello")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"jobbot: {(workdir / '.jobbot' / 'secret_key').resolve()} must hold a key of at least "
        "16 bytes (delete it to have a new one made, or set JOBBOT_SECRET_KEY)")


def test_cancel_of_something_that_is_not_a_run(workdir: Path) -> None:
    jobbot(workdir, "run", "hello")
    result = jobbot(workdir, "cancel", "nonsense")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "jobbot: 'nonsense' is not a run: give its id or JOB#NUMBER (e.g. migrate#4)")
    done = jobbot(workdir, "cancel", "hello#1")
    assert done.returncode == 2
    assert done.stderr.strip() == "jobbot: hello #1 already succeeded; nothing to cancel"


def test_logs_of_an_attempt_the_run_does_not_have_is_an_error(tmp_path: Path) -> None:
    write_app(tmp_path, [python_job("retried", "print('try'); raise SystemExit(1)",
                                    backoff_limit=1)])
    assert jobbot(tmp_path, "run", "retried").returncode == 1
    second = jobbot(tmp_path, "logs", "retried#1", "--attempt", "2")
    assert second.returncode == 0, second.stderr
    assert second.stdout.endswith("try\n")
    for attempt in ("3", "9", "0"):
        result = jobbot(tmp_path, "logs", "retried#1", "--attempt", attempt)
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"jobbot: retried #1 has 2 attempts: there is no attempt {attempt}"]


def test_numbers_in_options_are_bounded_digits_or_exit_2(workdir: Path) -> None:
    assert jobbot(workdir, "run", "hello").returncode == 0
    for args in (("runs", "--limit", "99999999999999999999"), ("runs", "--limit", "-5"),
                 ("runs", "--limit", "0"), ("runs", "--limit", "٣"),
                 ("runs", "--limit", "9" * 5000), ("logs", "hello#1", "--attempt", "²"),
                 ("logs", "hello#1", "--attempt", "99999999999999999999"),
                 ("logs", "hello#1", "--attempt", "-1"), ("schedule", "hello", "--count", "1_0")):
        result = jobbot(workdir, *args)
        assert result.returncode == 2, args
        assert "must be a whole number from" in result.stderr, args
        assert "Traceback" not in result.stderr and result.stdout == "", args
        assert len(result.stderr) < 1000  # the bad value is quoted back cut short
    listed = jobbot(workdir, "runs", "--limit", "1000")
    assert listed.returncode == 0 and "hello" in listed.stdout


def test_a_broken_app_yaml_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text("app: demo\njobs:\n  - name: x\n    comand: [true]\n")
    result = jobbot(tmp_path, "run", "x")
    assert result.returncode == 2
    assert result.stderr.startswith("jobbot: app.yaml:3: jobs[x]: needs image")
    assert "(and 2 more; see `jobbot validate`)" in result.stderr
    assert not (tmp_path / ".jobbot").exists()
    result = jobbot(tmp_path, "validate")
    assert result.returncode == 2
    assert "app.yaml:4: jobs[x].comand: unknown key 'comand' (did you mean 'command'?)" in (
        result.stderr)


def test_a_missing_app_yaml_exits_2(tmp_path: Path) -> None:
    result = jobbot(tmp_path, "runs")
    assert result.returncode == 2
    assert result.stderr.strip() == "jobbot: app.yaml: file not found"


def test_two_runs_at_once_on_one_sqlite_file_both_succeed(workdir: Path) -> None:
    procs = [spawn(workdir, "run", "hello") for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = jobbot(workdir, "runs", "hello")
    assert "hello #1" in runs.stdout
    assert "hello #2" in runs.stdout


def test_a_sigkilled_jobbot_leaves_no_run_running_after_the_next_start(workdir: Path) -> None:
    proc = spawn(workdir, "run", "slow", "--follow")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert "running" in jobbot(workdir, "runs").stdout
    # The next process to start settles it, says why, and kills what was left of it.
    result = jobbot(workdir, "run", "hello")
    assert result.returncode == 0
    runs = jobbot(workdir, "runs", "slow").stdout
    assert "failed" in runs
    assert f"jobbot process {proc.pid} stopped while the run was running" in runs


def test_cancel_from_the_cli_stops_a_run_of_another_process(workdir: Path) -> None:
    proc = spawn(workdir, "run", "slow", "--follow")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    result = jobbot(workdir, "cancel", "slow#1")
    assert result.returncode == 0, result.stderr
    assert "slow #1 cancelled" in result.stderr
    assert proc.wait(timeout=20) == 1


def test_ctrl_c_cancels_the_run_and_records_it(workdir: Path) -> None:
    proc = spawn(workdir, "run", "slow", "--follow")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 1
    runs = jobbot(workdir, "runs", "slow").stdout
    assert "cancelled" in runs
    assert "interrupted" in runs


def test_serve_answers_health_and_stops_runs_cleanly_on_sigterm(workdir: Path) -> None:
    port = free_port()
    server = spawn(workdir, "serve", env={"JOBBOT_PORT": str(port),
                                          "JOBBOT_METRICS_TOKEN": "scrape-me"})
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(healthy)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            body = json.loads(response.read())
        assert body == {"status": "ok", "checks": {"database": "ok", "migrations": "ok",
                                                   "executor": "ok"}}
        # The pages are mounted: /metrics answers Prometheus' bearer token, and browsing needs
        # the link serve printed.
        scrape = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                        headers={"Authorization": "Bearer scrape-me"})
        with urllib.request.urlopen(scrape, timeout=5) as response:
            assert b"jobbot_runs_finished_total" in response.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs", timeout=5)
        assert refused.value.code == 403
        refused.value.close()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    _, stderr = server.communicate(timeout=10)
    assert "Slack is not configured" in stderr


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = jobbot(workdir, "serve", env={"JOBBOT_PORT": str(port),
                                               "JOBBOT_SECRET_KEY": "k" * 32})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"jobbot: cannot listen on 127.0.0.1:{port} (Address already in use): "
        "set JOBBOT_HOST or JOBBOT_PORT"]


def test_serve_with_half_configured_slack_refuses_to_start(workdir: Path) -> None:
    result = jobbot(workdir, "serve", env={"JOBBOT_PORT": str(free_port()),
                                           "JOBBOT_SECRET_KEY": "k" * 32,
                                           "SLACK_BOT_TOKEN": "xoxb-half-configured"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "jobbot: Slack is half configured: SLACK_BOT_TOKEN needs SLACK_SIGNING_SECRET "
        "(HTTP mode) or SLACK_APP_TOKEN (Socket Mode)"]


def test_a_run_number_too_large_for_the_database_is_exit_2(workdir: Path) -> None:
    result = jobbot(workdir, "logs", "hello#99999999999999999999")
    assert result.returncode == 2
    assert result.stderr.startswith("jobbot: ")
    assert "Traceback" not in result.stderr


def test_serve_logs_a_malformed_http_request_as_one_line_without_its_header_values(
        workdir: Path) -> None:
    port = free_port()
    server = spawn(workdir, "serve", env={"JOBBOT_PORT": str(port)})
    try:
        wait_for(lambda: _answers(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") != b"")
        for raw in (b"GARBAGE\r\n\r\n",
                    b"GET /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: hunter2-value\r\n\r\n"):
            assert _answers(port, raw).startswith(b"HTTP/1.0 400 Bad Request")
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    _, stderr = server.communicate(timeout=10)
    assert "Traceback" not in stderr
    assert "hunter2" not in stderr
    refused = [line for line in stderr.splitlines() if "malformed HTTP request" in line]
    assert len(refused) == 1, stderr
    assert "Content-Length" in refused[0]


def _answers(port: int, raw: bytes) -> bytes:
    """What jobbot answers to `raw` bytes sent on a fresh connection (b"" if it is not up)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(raw)
            return connection.recv(200)
    except OSError:
        return b""

# -- local first: the printed browse link, and run page links from the CLI ------------------

BROWSE_LINK = re.compile(r"(http://\S+)/\?token=([A-Za-z0-9_-]{32,})")


def printed_link(proc: subprocess.Popen[str]) -> tuple[str, str, list[str]]:
    """Read serve's stderr up to the line with the browse link: (base URL, token, lines)."""
    assert proc.stderr is not None
    lines: list[str] = []
    while line := proc.stderr.readline():
        lines.append(line)
        found = BROWSE_LINK.search(line)
        if found:
            return found.group(1), found.group(2), lines
    raise AssertionError(f"serve printed no browse link: {lines}")


def fetch(url: str, cookie: str | None = None) -> tuple[int, dict[str, str], str]:
    """GET without following redirects: (status, headers, body)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                           headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    return stderr


def test_serve_on_loopback_prints_one_browse_link_with_a_fresh_token(workdir: Path) -> None:
    port = free_port()
    server = spawn(workdir, "serve", env={"JOBBOT_PORT": str(port)})
    base, token, before = printed_link(server)
    assert base == f"http://127.0.0.1:{port}"
    assert sum(1 for line in before if "?token=" in line) == 1
    status, headers, _ = fetch(f"{base}/?token={token}")
    assert (status, headers["Location"]) == (303, "/jobs")
    cookie = headers["Set-Cookie"].split(";")[0]
    assert token not in cookie
    status, _, body = fetch(f"{base}/jobs", cookie)
    assert status == 200
    assert "hello" in body and "broken" in body
    status, _, body = fetch(f"{base}/?token=not-the-token")
    assert status == 403
    assert "wrong or from an earlier start" in body
    rest = stop(server)
    assert token not in rest  # printed once, never logged
    # The next start makes a new token: the old link and its cookie open nothing.
    again = spawn(workdir, "serve", env={"JOBBOT_PORT": str(port)})
    _, fresh, _ = printed_link(again)
    assert fresh != token
    assert fetch(f"{base}/?token={token}")[0] == 403
    assert fetch(f"{base}/jobs", cookie)[0] == 403
    assert fetch(f"{base}/?token={fresh}")[0] == 303
    stop(again)


def test_serve_on_other_addresses_or_with_sign_in_keeps_todays_rules(workdir: Path) -> None:
    for env in ({"JOBBOT_HOST": "0.0.0.0"}, {"JOBBOT_WEB_TOKEN": "configured-shared-token"}):
        port = free_port()
        server = spawn(workdir, "serve", env={"JOBBOT_PORT": str(port), **env})
        health = f"http://127.0.0.1:{port}/healthz"
        wait_for(lambda url=health: fetch_status(url) == 200)
        status, _, body = fetch(f"http://127.0.0.1:{port}/jobs")
        assert status == 403
        if "JOBBOT_WEB_TOKEN" in env:
            assert fetch(f"http://127.0.0.1:{port}/?token=configured-shared-token")[0] == 303
        else:
            assert "Browsing is off" in body
        assert "?token=" not in stop(server), env


def fetch_status(url: str) -> int:
    try:
        return fetch(url)[0]
    except OSError:
        return 0


def test_run_runs_and_logs_print_the_run_pages_link(workdir: Path) -> None:
    result = jobbot(workdir, "run", "hello")
    assert result.returncode == 0, result.stderr
    key = (workdir / ".jobbot" / "secret_key").read_text().strip().encode()
    links = Links("http://127.0.0.1:8080", key)
    pages = re.findall(r"^page: (http://127\.0\.0\.1:8080/runs/(\w+)\?t=(\S+))$",
                       result.stderr, re.M)
    assert len(pages) == 1, result.stderr
    _, run_id, token = pages[0]
    assert links.verify(run_id, token)
    listed = jobbot(workdir, "runs")
    assert f"/runs/{run_id}?t=" in listed.stdout
    assert re.search(r"^RUN .* PAGE .*REASON$", listed.stdout, re.M)
    logs = jobbot(workdir, "logs", "hello#1")
    assert logs.stdout == "hello from the job\n"
    assert re.search(rf"^page: http://127\.0\.0\.1:8080/runs/{run_id}\?t=\S+$", logs.stderr,
                     re.M)
    public = jobbot(workdir, "logs", "hello#1",
                    env={"JOBBOT_PUBLIC_URL": "https://jobbot.example.com/"})
    assert f"page: https://jobbot.example.com/runs/{run_id}?t=" in public.stderr
    port = jobbot(workdir, "runs", env={"JOBBOT_PORT": "9999"})
    assert f"http://127.0.0.1:9999/runs/{run_id}?t=" in port.stdout

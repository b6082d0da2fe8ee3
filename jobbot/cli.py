"""The `jobbot` command line: one subcommand per thing people do (see the README's CLI table)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from core.catalog import Catalog, JobRef
from core.durations import format_duration
from core.errors import BadInput, ConfigError, Conflict, JobbotError, NotFound, PermissionDenied
from core.locks import line_text
from core.models import RunState
from core.numbers import INT32_MAX, bounded_int
from core.overrides import check_values, parse_overrides
from core.parameters import Parameters
from core.policy import Actor
from core.scheduler import fire_times
from core.secrets import LocalSecrets
from core.service import unscheduled
from jobbot import render
from jobbot.logsetup import setup_logging
from jobbot.settings import Settings, settings_error
from jobbot.wiring import Runtime, build_runtime, git_base_url, load_config

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT = 0, 1, 2
MAX_LIMIT = 1000  # runs listed by `jobbot runs`
MAX_COUNT = 10_000  # fire times printed by `jobbot schedule`


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"jobbot: {settings_error(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.config:
        settings = settings.model_copy(update={"JOBBOT_APP_CONFIG": Path(args.config)})
    setup_logging(settings.JOBBOT_LOG_FORMAT, verbose=getattr(args, "verbose", False))
    command: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return command(args, settings)
    except ConfigError as exc:
        if args.command == "validate":
            print(exc, file=sys.stderr)
        else:
            first = exc.problems[0]
            more = len(exc.problems) - 1
            tail = f" (and {more} more; see `jobbot validate`)" if more else ""
            print(f"jobbot: {first}{tail}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (BadInput, Conflict, PermissionDenied) as exc:
        print(f"jobbot: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except JobbotError as exc:
        print(f"jobbot: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobbot", description=__doc__)
    parser.add_argument("--config", metavar="FILE",
                        help="app.yaml to use (default $JOBBOT_APP_CONFIG or ./app.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    add("validate", cmd_validate, "check app.yaml and list its jobs")
    run = add("run", cmd_run, "run a job now and wait for it")
    run.add_argument("job")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    run.add_argument("--follow", "-f", action="store_true", help="stream the log while it runs")
    run.add_argument("--ref", help="git ref to record with the run")
    run.add_argument("--yes", "-y", action="store_true", help="do not ask for confirm: jobs")
    runs = add("runs", cmd_runs, "list recent runs")
    runs.add_argument("job", nargs="?")
    runs.add_argument("--limit", type=_number(1, MAX_LIMIT, "--limit"), default=20,
                      help=f"how many (default 20, at most {MAX_LIMIT})")
    logs = add("logs", cmd_logs, "print a run's log")
    logs.add_argument("run", help="run id or JOB#NUMBER")
    logs.add_argument("--follow", "-f", action="store_true")
    logs.add_argument("--attempt", type=_number(0, INT32_MAX, "--attempt"),
                      help="only this attempt's log")
    cancel = add("cancel", cmd_cancel, "cancel a queued or running run")
    cancel.add_argument("run", help="run id or JOB#NUMBER")
    pause = add("pause", cmd_pause, "stop scheduling a job")
    pause.add_argument("job")
    resume = add("resume", cmd_resume, "schedule a paused job again")
    resume.add_argument("job")
    render_cmd = add("render", cmd_render,
                     "print the Kubernetes Job jobbot creates for a run of JOB (YAML)")
    render_cmd.add_argument("job", nargs="?")
    render_cmd.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    render_cmd.add_argument("--build", metavar="NAME", help="print the build's Job instead")
    render_cmd.add_argument("--sha", help="git sha (default a placeholder of 40 zeros)")
    render_cmd.add_argument("--ref", help="git ref to record in the annotations")
    render_cmd.add_argument("--repository", default=PLACEHOLDER_REPOSITORY,
                            help="git URL a build fetches (default a placeholder)")
    chat = add("chat", cmd_chat, "answer a Slack `/job ...` command here, as the CLI user")
    chat.add_argument("text", help='the command, e.g. "/job run hello GREETING=hi"')
    chat.add_argument("--yes", "-y", action="store_true", help="do not ask for confirm: jobs")
    schedule = add("schedule", cmd_schedule, "print a cron job's next fire times")
    schedule.add_argument("job")
    schedule.add_argument("--from", dest="start", metavar="ISO8601",
                          help="start after this time (default now; without an offset it is "
                               "read in the job's time zone)")
    schedule.add_argument("--count", "-n", type=_number(1, MAX_COUNT, "--count"), default=5,
                          help=f"how many (default 5, at most {MAX_COUNT})")
    manifest = add("slack-manifest", cmd_slack_manifest,
                   "print the Slack app manifest for this deployment (from JOBBOT_PUBLIC_URL)")
    manifest.add_argument("--socket-mode", action="store_true",
                          help="use Socket Mode (SLACK_APP_TOKEN): no public URL needed")
    manifest.add_argument("--format", choices=("yaml", "json"), default="yaml")
    manifest.add_argument("--name", default="jobbot", help="the app's name in Slack")
    serve = add("serve", cmd_serve, "serve HTTP, run jobs and schedules")
    serve.add_argument("--verbose", "-v", action="store_true")
    return parser


def _number(lo: int, hi: int, name: str) -> Callable[[str], int]:
    """An argparse type: a bounded whole number (argparse answers bad ones with exit code 2)."""
    def parse(text: str) -> int:
        try:
            return bounded_int(text, lo, hi, name=name)
        except BadInput as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor.cli(user)


def _checked_overrides(settings: Settings, target: JobRef, items: list[str]) -> Parameters:
    """KEY=VALUE arguments, checked by the rule every run follows and the job's parameters
    before anything is written (the service checks them again), with the keys of the local
    executor's secret files."""
    overrides = parse_overrides(items)
    keys: frozenset[str] = frozenset()
    if target.job.secrets and settings.JOBBOT_EXECUTOR == "local":
        keys = LocalSecrets(settings.JOBBOT_DATA_DIR / "secrets").keys(target.job.secrets)
    return check_values(target.job, overrides, keys)


def _with_runtime(settings: Settings, body: Callable[[Runtime], Coroutine[Any, Any, int]], *,
                  lease: bool = False) -> int:
    """Run `body`; with `lease`, this process holds a replica lease meanwhile (it follows
    runs: other replicas must leave them to it while it lives)."""
    runtime = build_runtime(settings, serving=False)
    try:
        return asyncio.run(_leased(runtime, body) if lease else body(runtime))
    finally:
        runtime.close()


async def _leased(runtime: Runtime, body: Callable[[Runtime], Coroutine[Any, Any, int]]) -> int:
    replica = runtime.service.replica
    await replica.register()
    heartbeat = asyncio.create_task(replica.run())
    try:
        return await body(runtime)
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await replica.end()


# -- commands -----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    app = load_config(settings)
    print(f"{app.source}: app {app.app}, {len(app.jobs)} jobs, {len(app.builds)} builds")
    for job in app.jobs:
        print("  " + render.job_line(job))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    # Everything that can be wrong with the request is checked before anything is written.
    app = load_config(settings)
    target = Catalog([app]).resolve(args.job)
    overrides = _checked_overrides(settings, target, args.overrides)
    if target.job.confirm and not args.yes:
        if not sys.stdin.isatty():
            raise BadInput(f"{target.job.name} asks for confirmation: pass --yes to run it")
        answer = input(f"Run {target.job.name}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("not run")
            return EXIT_OK

    async def body(runtime: Runtime) -> int:
        service = runtime.service
        await service.reconcile()
        result = await service.trigger(target.key, _actor(), ref=args.ref,
                                       overrides=overrides.env())
        run = result.run
        if result.joined:
            print(f"joined {run.label} (id {run.id}), waiting for {run.lock}: the same request "
                  "is already in line", file=sys.stderr)
        elif run.state == RunState.NEEDS_APPROVAL.value:
            print(f"{run.label} waits for approval (id {run.id}): approve it in its Slack "
                  "thread or with /approve on its pull request", file=sys.stderr)
        else:
            print(f"started {run.label} (id {run.id})", file=sys.stderr)
        place = await service.line_place(run)
        if place is not None:
            print(line_text(place), file=sys.stderr)
        print(f"page: {runtime.links.run_url(run.id)}", file=sys.stderr)
        if result.active:
            others = ", ".join(f"#{r.number} ({r.state})" for r in result.active)
            print(f"note: other runs of {run.job} are active: {others}", file=sys.stderr)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        follower = asyncio.create_task(_follow(runtime, run.id)) if args.follow else None
        waiter = asyncio.create_task(service.wait(run.id))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set() and not waiter.done():
            print("\ninterrupted: cancelling the run", file=sys.stderr)
            waiting = (await service.get_run(run.id)).state in (
                RunState.NEEDS_APPROVAL.value, RunState.WAITING.value)
            if service.executor.name == "kubernetes" or waiting:
                # Stopping this process leaves the Job running (or the run waiting for
                # approval or its lock): end it on purpose.
                await service.cancel(run.id, _actor())
            else:
                await service.shutdown(f"cancelled: {_actor().name} interrupted `jobbot run`")
        final = await waiter
        stopper.cancel()
        if follower:
            await follower
        print(render.run_summary(final), file=sys.stderr)
        return EXIT_OK if final.state == RunState.SUCCEEDED.value else EXIT_RUN_FAILED

    return _with_runtime(settings, body, lease=True)


async def _follow(runtime: Runtime, run_id: str) -> None:
    status = _StatusLine(runtime, run_id)
    ticker = asyncio.create_task(status.tick())
    try:
        async for attempt, line in runtime.service.logs(run_id, follow=True):
            status.clear()
            print(line, flush=True)
            status.attempt = attempt
            status.draw()
    finally:
        ticker.cancel()
        status.clear()


class _StatusLine:
    """A status line at the bottom of a terminal (only when stderr is one)."""

    def __init__(self, runtime: Runtime, run_id: str) -> None:
        self.runtime = runtime
        self.run_id = run_id
        self.attempt = 1
        self.text = ""
        self.enabled = sys.stderr.isatty()

    async def tick(self) -> None:
        while self.enabled:
            run = await self.runtime.service.get_run(self.run_id)
            elapsed = format_duration(run.duration or 0)
            self.text = f"[{run.label} {run.state} · attempt {self.attempt} · {elapsed}]"
            self.draw()
            await asyncio.sleep(1)

    def clear(self) -> None:
        if self.enabled and self.text:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def draw(self) -> None:
        if self.enabled and self.text:
            sys.stderr.write(self.text)
            sys.stderr.flush()


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    app = load_config(settings)
    if args.job:
        Catalog([app]).resolve(args.job)

    async def body(runtime: Runtime) -> int:
        runs = await runtime.service.runs(args.job, limit=args.limit)
        print(render.run_table(runs, runtime.links.run_url) if runs else "no runs yet")
        return EXIT_OK

    return _with_runtime(settings, body)


def _require_database(settings: Settings, missing: str) -> None:
    """Commands that only look runs up must not create a database to find nothing in it."""
    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise NotFound(missing)


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    load_config(settings)
    _require_database(settings, f"no run {args.run!r}")

    async def body(runtime: Runtime) -> int:
        detail = await runtime.service.detail(args.run)
        if args.attempt is not None:
            missing = detail.missing_attempt(args.attempt, follow=args.follow)
            if missing:
                raise NotFound(missing)
        print(f"page: {runtime.links.run_url(detail.run.id)}", file=sys.stderr)
        last = None
        async for attempt, line in runtime.service.logs(detail.run.id, attempt=args.attempt,
                                                          follow=args.follow):
            if attempt != last and (len(detail.attempts) > 1 or attempt > 1):
                print(f"── attempt {attempt} ──", file=sys.stderr)
            last = attempt
            print(line, flush=True)
        return EXIT_OK

    return _with_runtime(settings, body)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    load_config(settings)
    _require_database(settings, f"no run {args.run!r}")

    async def body(runtime: Runtime) -> int:
        service = runtime.service
        run = await service.cancel(args.run, _actor())
        print(f"cancel requested for {run.label}", file=sys.stderr)
        job = service.catalog.resolve(f"{run.app}/{run.job}").job
        try:
            final = await asyncio.wait_for(service.wait(run.id), job.stop_grace_period + 10)
        except TimeoutError:
            print(f"{run.label} is still stopping", file=sys.stderr)
            return EXIT_OK
        print(render.run_summary(final), file=sys.stderr)
        return EXIT_OK

    return _with_runtime(settings, body)


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    return _pause_or_resume(args, settings, pause=True)


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    return _pause_or_resume(args, settings, pause=False)


def _pause_or_resume(args: argparse.Namespace, settings: Settings, *, pause: bool) -> int:
    job = Catalog([load_config(settings)]).resolve(args.job).job
    if pause and not job.is_scheduled:
        # Checked before the runtime too, so bad input writes nothing (not even a database).
        raise unscheduled(job, "pause")

    async def body(runtime: Runtime) -> int:
        service = runtime.service
        changed = await (service.pause if pause else service.resume)(args.job, _actor())
        word = "paused" if pause else "resumed"
        print(f"{args.job} {word}" if changed else f"{args.job} was already {word}")
        return EXIT_OK

    return _with_runtime(settings, body)


PLACEHOLDER_REPOSITORY = "https://example.invalid/REPOSITORY.git"


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    """What the executor would create, with placeholders for the run's own values."""
    import yaml

    from core.executors.k8s import manifests

    app = load_config(settings)
    sha = args.sha or manifests.PLACEHOLDER_SHA
    if args.build:
        if args.job:
            raise BadInput("give either JOB or --build NAME, not both")
        try:
            build = app.build(args.build)
        except NotFound as exc:
            raise BadInput(str(exc)) from None
        host = urlsplit(git_base_url(settings.GITHUB_API_URL)).netloc
        manifest = manifests.build_manifest(app, build, sha=sha, repository=args.repository,
                                            ref=args.ref, actor=_actor().id, git_host=host)
        secret = manifests.git_secret_name(manifest["metadata"]["name"])
        # The Secret itself is made for each build, after its Job: nothing to print but where
        # it goes.
        sys.stdout.write(f"# Secret {secret}: made per build, owned by this Job, deleted when "
                         f"the build ends;\n# it holds {manifests.PLACEHOLDER_GIT_TOKEN}, "
                         "read by BuildKit as GIT_AUTH_TOKEN.<host>.\n")
    else:
        if not args.job:
            raise BadInput("name a job to render (or --build NAME)")
        target = Catalog([app]).resolve(args.job)
        overrides = _checked_overrides(settings, target, args.overrides)
        run = manifests.RunInfo(id=manifests.PLACEHOLDER_RUN_ID,
                                number=manifests.PLACEHOLDER_NUMBER, source="cli",
                                actor=_actor().id, sha=args.sha, ref=args.ref)
        if target.job.image_from_build and run.sha is None:
            run = dataclasses.replace(run, sha=sha)
        # Secret parameters stand masked, and the Job refers to its run's Secret for them.
        hidden = sorted(overrides.secrets)
        manifest = manifests.job_manifest(app, target.job, run,
                                          env={**target.job.env, **overrides.shown()},
                                          secret_env=hidden)
        if hidden:
            secret = manifests.params_secret_name(manifest["metadata"]["name"])
            sys.stdout.write(f"# Secret {secret}: made per run, owned by this Job, deleted when "
                             f"the run ends;\n# it holds the values of {', '.join(hidden)}.\n")
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return EXIT_OK


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from bot.mrkdwn import unescape
    from bot.router import Request, Router

    load_config(settings)

    async def body(runtime: Runtime) -> int:
        service = runtime.service
        await service.reconcile()
        router = Router(service, runtime.links)
        answer = await router.handle(Request(args.text, _actor(), confirmed=args.yes))
        print(unescape(answer.text))
        if answer.started_run is None:
            return EXIT_OK if answer.ok else EXIT_BAD_INPUT
        # Nothing else drives a local run once this process ends: stay until it is done.
        final = await service.wait(answer.started_run)
        print(render.run_summary(final), file=sys.stderr)
        return EXIT_OK if final.state == RunState.SUCCEEDED.value else EXIT_RUN_FAILED

    return _with_runtime(settings, body, lease=True)


def cmd_schedule(args: argparse.Namespace, settings: Settings) -> int:
    job = Catalog([load_config(settings)]).resolve(args.job).job
    if not job.is_scheduled:
        raise BadInput(f"{job.name} has no schedule")
    zone = ZoneInfo(job.timezone)
    if args.start is None:
        start = datetime.now(UTC)
    else:
        try:
            start = datetime.fromisoformat(args.start)
        except ValueError:
            raise BadInput(f"--from {args.start!r} is not an ISO 8601 time "
                           "(e.g. 2026-03-29T01:00:00+01:00)") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=zone)
    for at in fire_times(job, start.astimezone(UTC), args.count):
        print(at.astimezone(zone).isoformat())
    return EXIT_OK


def cmd_slack_manifest(args: argparse.Namespace, settings: Settings) -> int:
    """Slack's app manifest: create the app from it, install it, copy two values."""
    import json

    import yaml

    from bot.manifest import manifest

    if not 1 <= len(args.name) <= 35 or not args.name.isprintable():
        raise BadInput("--name must be 1 to 35 printable characters (Slack's limit)")
    document = manifest(settings.JOBBOT_PUBLIC_URL, socket_mode=args.socket_mode,
                        name=args.name)
    if args.format == "json":
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from jobbot.server import serve

    runtime = build_runtime(settings)
    try:
        return asyncio.run(serve(runtime))
    finally:
        runtime.close()


if __name__ == "__main__":
    sys.exit(main())

"""app.yaml -> AppSpec / JobSpec / BuildSpec; every problem reported as file:line: key: message."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from core.durations import parse_duration
from core.envnames import RESERVED_PREFIX, forbidden, is_env_name
from core.errors import ConfigError, ConfigProblem, NotFound
from core.names import closest, is_dns_label, is_dns_subdomain
from core.parameters import convert
from core.yamlsource import LineMap, Problem, dotted, load

Duration = Annotated[int, BeforeValidator(parse_duration)]
DnsLabel = Annotated[str, Field(min_length=1, max_length=63)]
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_IMAGE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*$")
# An image reference as a container runtime takes it: [host[:port]/]path[:tag][@digest].
_IMAGE_REFERENCE = re.compile(
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(:\d+)?/)?"
    r"[a-z0-9]+([._-]{1,2}[a-z0-9]+|-+[a-z0-9]+)*(/[a-z0-9]+([._-]{1,2}[a-z0-9]+|-+[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
_SECRET_NAME_RULE = ("use at most 253 lowercase letters, digits, '-' and '.', starting and "
                     "ending with a letter or digit")
_SCHEDULE_ONLY = ("concurrency_policy", "starting_deadline", "suspend", "timezone", "history")
_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# What people coming from Kubernetes, cron or CI systems tend to write instead.
_SYNONYMS = {
    "retries": "backoff_limit", "retry": "backoff_limit", "timeout": "time_limit",
    "active_deadline_seconds": "time_limit", "cron": "schedule", "args": "command",
    "tz": "timezone", "concurrency": "concurrency_policy", "environment": "env",
    "restartPolicy": "restart_policy", "backoffLimit": "backoff_limit",
}
NotifyEvent = Literal["start", "retry", "success", "failure"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("start", "retry", "success", "failure")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_value(value: object) -> str:
    # YAML turns `PORT: 8080` into an int; accept numbers, but a bare yes/true is ambiguous.
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} must be quoted: environment values are strings")
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError("environment values are strings")


EnvValue = Annotated[str, BeforeValidator(_env_value)]


class Resources(_Strict):
    """CPU and memory for each of the job's containers (requests = limits)."""

    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: object) -> str:
        text = str(value)
        if not _QUANTITY.match(text):
            raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 1, 512Mi, 2Gi)")
        return text


class SecurityContext(_Strict):
    """Overrides of jobbot's restrictive default pod security context."""

    run_as_user: int | None = Field(default=None, ge=0)
    run_as_group: int | None = Field(default=None, ge=0)
    run_as_non_root: bool | None = None
    read_only_root_filesystem: bool | None = None
    allow_privilege_escalation: bool | None = None
    capabilities_add: tuple[str, ...] = ()
    seccomp_profile: Literal["RuntimeDefault", "Unconfined"] | None = None


class Allow(_Strict):
    """Who may run, cancel, pause and resume a job; empty means everyone."""

    slack_users: tuple[str, ...] = ()
    slack_usergroups: tuple[str, ...] = ()
    slack_channels: tuple[str, ...] = ()
    github_permission: Literal["read", "triage", "write", "maintain", "admin"] = "write"

    @property
    def restricts_pushes(self) -> bool:
        """Whether `github_permission` is written out (in the job or its defaults): only then
        does a push's sender need it for the job to run after the push (GitHub's branch
        rules already decided who may push)."""
        return "github_permission" in self.model_fields_set


class ApprovalFrom(_Strict):
    """Who may approve a run: any of these; none given means anyone who may run the job."""

    slack_users: tuple[str, ...] = ()
    slack_usergroups: tuple[str, ...] = ()
    github_permission: Literal["write", "maintain", "admin"] | None = None

    @property
    def any(self) -> bool:
        return bool(self.slack_users or self.slack_usergroups or self.github_permission)


class Approval(_Strict):
    """How many people must approve a run before it starts, who, and for how long it waits."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    required: int = Field(default=1, ge=1, le=100)
    from_: ApprovalFrom = Field(default=ApprovalFrom(), alias="from")
    allow_self: bool = Field(default=False, alias="self")
    expires: Duration = 3600


class Notify(_Strict):
    """Where a job's runs are announced, and on which events."""

    slack_channel: str | None = None
    on: tuple[NotifyEvent, ...] = NOTIFY_EVENTS


class History(_Strict):
    """How many finished runs of a scheduled job to keep."""

    succeeded: int = Field(default=20, ge=0)
    failed: int = Field(default=20, ge=0)


class BuildSpec(_Strict):
    """A container image built from the repository at a sha, as `<image>:<sha>`."""

    name: DnsLabel
    image: str
    dockerfile: str = "Dockerfile"
    context: str = "."
    branches: tuple[str, ...] = ()
    registry_secret: str | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not _IMAGE.match(value):
            raise ValueError(
                f"{value!r} is not an image name without a tag (it is built as <image>:<sha>)"
            )
        return value


class KubernetesSpec(_Strict):
    """Where the app's Jobs go on Kubernetes."""

    namespace: str | None = None
    service_account_name: str | None = None


ParameterType = Literal["string", "int", "bool", "choice"]


def _scalar_text(value: object) -> object:
    # YAML reads `choices: [1, 2]` and `default: 3` as numbers; parameters are text.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


ScalarText = Annotated[str, BeforeValidator(_scalar_text)]


class ParameterSpec(_Strict):
    """A value a run of the job may (or must) be given; it reaches the job as an env var."""

    name: str = Field(min_length=1)
    type: ParameterType = "string"
    choices: tuple[ScalarText, ...] = ()
    pattern: str | None = None
    default: ScalarText | None = None
    required: bool = False
    description: str = ""
    secret: bool = False


class JobSpec(_Strict):
    """One job: what to run, how to retry and time it out, who may run it, and when."""

    name: DnsLabel
    command: tuple[str, ...] = Field(min_length=1)
    image: str | None = None
    image_from_build: str | None = None
    env: dict[str, EnvValue] = Field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    run_on_image_change: Literal["never", "cd", "always"] = "never"
    restart_policy: Literal["OnFailure", "Never"] = "Never"
    backoff_limit: int = Field(default=0, ge=0, le=100)
    time_limit: Duration | None = None
    stop_grace_period: Duration = 30
    parallelism: int = Field(default=1, ge=1, le=100)
    completions: int = Field(default=1, ge=1, le=1000)
    ttl: Duration | None = None
    resources: Resources = Resources()
    security_context: SecurityContext = SecurityContext()
    allow: Allow = Allow()
    confirm: bool = False
    notify: Notify = Notify()
    pull_requests: bool = False
    fork_secrets: bool = False
    schedule: tuple[str, ...] = ()
    timezone: str = "UTC"
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    starting_deadline: Duration | None = None
    suspend: bool = False
    history: History = History()
    description: str = ""
    parameters: tuple[ParameterSpec, ...] = ()
    approval: Approval | None = None
    # One run at a time among the app's jobs naming this lock; the others wait in line.
    lock: str | None = None

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(
                "give the command as a list, e.g. [yarn, migrate]: it is never run through a shell"
            )
        return value

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @property
    def is_scheduled(self) -> bool:
        return bool(self.schedule)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class AppSpec(_Strict):
    """A whole app.yaml: the app's name, its builds and its jobs."""

    app: DnsLabel
    defaults: dict[str, Any] = Field(default_factory=dict)
    kubernetes: KubernetesSpec = KubernetesSpec()
    builds: tuple[BuildSpec, ...] = ()
    jobs: tuple[JobSpec, ...] = ()
    source: str = Field(default="app.yaml", exclude=True)
    directory: str = Field(default=".", exclude=True)

    @property
    def namespace(self) -> str:
        return self.kubernetes.namespace or self.app

    def job(self, name: str) -> JobSpec:
        """The job called `name`; NotFound names the closest job if there is none."""
        for job in self.jobs:
            if job.name == name:
                return job
        names = [job.name for job in self.jobs]
        raise NotFound(f"no job {name!r} in app {self.app!r}", closest(name, names))

    def build(self, name: str) -> BuildSpec:
        for build in self.builds:
            if build.name == name:
                return build
        names = [build.name for build in self.builds]
        raise NotFound(f"no build {name!r} in app {self.app!r}", closest(name, names))


def load_app(path: str | Path) -> AppSpec:
    """Read and validate the app.yaml at `path`; raises ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(str(path), 0, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(str(path), 0, "", f"cannot read: {exc}")]) from None
    return parse_app(text, str(path), directory=str(path.resolve().parent))


def parse_app(text: str, filename: str = "app.yaml", directory: str = ".") -> AppSpec:
    """Validate app.yaml text; raises ConfigError listing every problem, in line order."""
    data, lines, problems = load(text)
    checker = _Checker(filename, lines)
    spec = checker.check(data, directory, problems)
    if checker.problems or spec is None:
        raise ConfigError(_unique_sorted(checker.problems))
    return spec


class _Checker:
    """Collects problems while validating; one instance per file."""

    def __init__(self, filename: str, lines: LineMap) -> None:
        self.filename = filename
        self.lines = lines
        self.problems: list[ConfigProblem] = []
        self.job_names: dict[int, str] = {}

    def problem(self, path: tuple[str | int, ...], message: str, line: int | None = None) -> None:
        line = self.lines.line(path) if line is None else line
        self.problems.append(ConfigProblem(self.filename, line, self._key(path), message))

    def _key(self, path: tuple[str | int, ...]) -> str:
        if len(path) >= 2 and path[0] == "jobs" and isinstance(path[1], int):
            name = self.job_names.get(path[1])
            if name:
                return f"jobs[{name}]" + dotted(("x", *path[2:]))[1:]
        return dotted(path)

    def check(self, data: Any, directory: str, parse_problems: list[Problem]) -> AppSpec | None:
        if isinstance(data, dict) and isinstance(data.get("jobs"), list):
            for index, raw in enumerate(data["jobs"]):
                if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                    self.job_names[index] = raw["name"]
        for path, line, message in parse_problems:
            self.problem(path, message, line)
        if data is None:
            if not parse_problems:
                self.problem((), "the file is empty; it needs at least `app:` and `jobs:`")
            return None
        if not isinstance(data, dict):
            self.problem((), "the top level must be a mapping with `app:` and `jobs:`")
            return None
        allowed_top = set(AppSpec.model_fields) - {"source", "directory"}
        for key in data:
            if key not in allowed_top:
                self._unknown((key,), key, allowed_top)
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            self.problem(("defaults",), "must be a mapping of job settings")
            defaults = {}
        self._check_defaults(defaults)
        builds = self._builds(data.get("builds") or [])
        kubernetes = self._validate(KubernetesSpec, data.get("kubernetes") or {},
                                    ("kubernetes",))
        raw_jobs = data.get("jobs", [])
        if not isinstance(raw_jobs, list):
            self.problem(("jobs",), "must be a list of jobs")
            raw_jobs = []
        jobs: list[JobSpec] = []
        checked: list[JobSpec] = []
        for index, raw in enumerate(raw_jobs):
            if not isinstance(raw, dict):
                self.problem(("jobs", index), "each job must be a mapping with name and command")
                continue
            merged, inherited = self._merge_defaults(index, raw, defaults)
            job = self._validate(JobSpec, merged, ("jobs", index))
            if isinstance(job, JobSpec):
                jobs.append(job)
            else:
                # Check what is left, so one bad field does not hide the other problems.
                job = self._partial(merged)
            if job is not None:
                checked.append(job)
                self._check_job(index, job, inherited)
                self._check_parameters(("jobs", index), job, merged.get("parameters"))
        app = self._validate(AppSpec, {k: data[k] for k in ("app",) if k in data}, ())
        if isinstance(app, AppSpec) and not is_dns_label(app.app):
            self.problem(("app",), _dns_message(app.app))
        if isinstance(kubernetes, KubernetesSpec) and kubernetes.namespace and (
                not is_dns_label(kubernetes.namespace)):
            self.problem(("kubernetes", "namespace"), _dns_message(kubernetes.namespace))
        account = (kubernetes.service_account_name
                   if isinstance(kubernetes, KubernetesSpec) else None)
        if account and not is_dns_subdomain(account):
            self.problem(("kubernetes", "service_account_name"),
                         f"{account!r} is not a valid ServiceAccount name: {_SECRET_NAME_RULE}")
        self._check_names(raw_jobs, data.get("builds"), checked)
        if not isinstance(app, AppSpec) or not isinstance(kubernetes, KubernetesSpec):
            return None
        return app.model_copy(update={
            "jobs": tuple(jobs), "builds": tuple(builds), "kubernetes": kubernetes,
            "defaults": defaults, "source": self.filename, "directory": directory,
        })

    def _builds(self, raw_builds: Any) -> list[BuildSpec]:
        if not isinstance(raw_builds, list):
            self.problem(("builds",), "must be a list of builds")
            return []
        builds = []
        for index, raw in enumerate(raw_builds):
            build = self._validate(BuildSpec, raw, ("builds", index))
            if isinstance(build, BuildSpec):
                builds.append(build)
                if not is_dns_label(build.name):
                    self.problem(("builds", index, "name"), _dns_message(build.name))
                if build.registry_secret and not is_dns_subdomain(build.registry_secret):
                    self.problem(("builds", index, "registry_secret"),
                                 f"{build.registry_secret!r} is not a valid Secret name: "
                                 f"{_SECRET_NAME_RULE}")
                for key, example in (("context", "."), ("dockerfile", "Dockerfile")):
                    value = getattr(build, key)
                    if value.startswith("/") or ".." in value.split("/"):
                        self.problem(("builds", index, key), f"{value!r} leaves the "
                                     f"repository: give a path inside it, such as {example}")
        return builds

    def _check_defaults(self, defaults: dict[str, Any]) -> None:
        for key in defaults:
            if key == "name" or key not in JobSpec.model_fields:
                allowed = set(JobSpec.model_fields) - {"name"}
                self._unknown(("defaults", key), key, allowed)
        sample = {"name": "defaults", "command": ["true"]}
        known = {k: v for k, v in defaults.items() if k in JobSpec.model_fields and k != "name"}
        self._validate(JobSpec, {**sample, **known}, ("defaults",))

    def _merge_defaults(
        self, index: int, raw: dict[str, Any], defaults: dict[str, Any]
    ) -> tuple[dict[str, Any], set[str]]:
        merged = dict(raw)
        inherited: set[str] = set()
        for key, value in defaults.items():
            if key not in JobSpec.model_fields or key == "name":
                continue
            if key not in merged:
                merged[key] = value
                inherited.add(key)
                self.lines.alias(("jobs", index, key), ("defaults", key))
            elif isinstance(value, dict) and isinstance(merged[key], dict):
                # Mappings (env, notify, resources, ...) merge one level deep: the job wins.
                merged[key] = {**value, **merged[key]}
                for sub in value:
                    if sub not in raw[key]:
                        self.lines.alias(("jobs", index, key, sub), ("defaults", key, sub))
        return merged, inherited

    def _validate(self, model: type[BaseModel], data: Any, path: tuple[str | int, ...]) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                loc = (*path, *error["loc"])
                if error["type"] == "extra_forbidden":
                    parent = _model_at(model, error["loc"][:-1])
                    allowed = _keys(parent) if parent else set()
                    allowed -= {"source", "directory"}
                    self._unknown(loc, str(loc[-1]), allowed)
                elif error["type"] == "missing":
                    self.problem(loc, "is required")
                else:
                    self.problem(loc, _message(error))
            return None

    def _unknown(self, path: tuple[str | int, ...], key: str, allowed: set[str]) -> None:
        hint = _SYNONYMS.get(key) if _SYNONYMS.get(key) in allowed else None
        hint = hint or closest(key, sorted(allowed))
        message = f"unknown key {key!r}"
        if hint:
            message += f" (did you mean {hint!r}?)"
        if allowed:
            message += "; allowed: " + ", ".join(sorted(allowed))
        self.problem(path, message)

    def _check_job(self, index: int, job: JobSpec, inherited: set[str]) -> None:
        path: tuple[str | int, ...] = ("jobs", index)
        if not is_dns_label(job.name):
            self.problem((*path, "name"), _dns_message(job.name))
        for key, value in job.env.items():
            reason = forbidden(key)
            if not is_env_name(key):
                # Quoted if need be, so a name with a newline stays on its one line.
                shown = key if key.isprintable() else repr(key)
                self.problem((*path, "env", shown), "not a valid environment variable "
                             "name: use letters, digits and '_', not starting with a digit",
                             self.lines.line((*path, "env", key)))
            elif reason is not None:
                hint = "" if key.upper().startswith(RESERVED_PREFIX) else (
                    " (set it in the image or the command instead)")
                self.problem((*path, "env", key),
                             f"{key} {reason}: neither env nor a run may set it{hint}")
            if "\0" in value:
                self.problem((*path, "env", key), "the value contains a NUL character, which "
                             "no environment variable can hold")
        for i, secret in enumerate(job.secrets):
            if not is_dns_subdomain(secret):
                self.problem((*path, "secrets", i),
                             f"{secret!r} is not a valid Secret name: {_SECRET_NAME_RULE}")
        if job.image and not _IMAGE_REFERENCE.match(job.image):
            self.problem((*path, "image"), f"{job.image!r} is not an image reference, such as "
                         "python:3.12-slim or registry.example.com/team/app:1.4")
        if job.image and job.image_from_build:
            self.problem((*path, "image_from_build"), "give either image or image_from_build")
        if not job.image and not job.image_from_build:
            self.problem(path, "needs image (e.g. python:3.12-slim) or image_from_build")
        if job.run_on_image_change != "never" and not job.image_from_build:
            self.problem(
                (*path, "run_on_image_change"),
                "only applies to jobs with image_from_build",
            )
        if job.parallelism > job.completions:
            self.problem(
                (*path, "parallelism"),
                f"parallelism {job.parallelism} is more than completions {job.completions}",
            )
        if job.lock is not None and not is_dns_label(job.lock):
            self.problem((*path, "lock"), f"{_dns_message(job.lock)} (a lock is named like a "
                         "job, e.g. db-prod)")
        if job.fork_secrets and not job.pull_requests:
            self.problem((*path, "fork_secrets"), "only applies with pull_requests: true")
        if job.time_limit == 0:
            self.problem((*path, "time_limit"), "must be more than 0 seconds")
        if job.approval is not None and job.approval.expires == 0:
            self.problem((*path, "approval", "expires"), "must be more than 0 seconds")
        for i, expression in enumerate(job.schedule):
            problem = cron_problem(expression, job.name)
            if problem:
                self.problem((*path, "schedule", i) if len(job.schedule) > 1 else
                             (*path, "schedule"), problem)
        try:
            ZoneInfo(job.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            hint = ""
            if "/" not in job.timezone:
                hint = " (IANA names look like Europe/Berlin or America/New_York)"
            self.problem((*path, "timezone"), f"unknown time zone {job.timezone!r}{hint}")
        if not job.schedule:
            for key in _SCHEDULE_ONLY:
                if key in job.model_fields_set and key not in inherited:
                    what = f"concurrency_policy {job.concurrency_policy}" if (
                        key == "concurrency_policy") else key
                    self.problem((*path, key), f"{what} only applies to jobs with a schedule")

    def _check_parameters(self, path: tuple[str | int, ...], job: JobSpec, raw: Any) -> None:
        """Each parameter that is well-formed on its own (the others were reported when the
        job was read), so one bad parameter does not hide the problems of the rest."""
        seen: set[str] = set()
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            try:
                parameter = ParameterSpec.model_validate(item)
            except ValidationError:
                continue
            where = (*path, "parameters", i)
            for problem in parameter_problems(parameter):
                key, message = problem
                self.problem((*where, key), message)
            name = parameter.name
            if name in seen:
                self.problem((*where, "name"), f"parameter {name} is defined twice")
            seen.add(name)
            if name in job.env:
                self.problem((*where, "name"), f"{name} is also in env: give its default "
                             "value in the parameter instead")
            if job.schedule and parameter.required and parameter.default is None:
                self.problem((*where, "required"), f"{name} is required and has no default, "
                             "but scheduled runs give no parameters: add a default")

    @staticmethod
    def _partial(merged: dict[str, Any]) -> JobSpec | None:
        """The job with its invalid fields left at their defaults, or None if that fails too."""
        data = dict(merged)
        try:
            JobSpec.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                if error["loc"]:
                    data.pop(str(error["loc"][0]), None)
        data.setdefault("command", ["?"])
        if not isinstance(data.get("name"), str):
            return None
        try:
            return JobSpec.model_validate(data)
        except ValidationError:
            return None

    def _check_names(self, raw_jobs: list[Any], raw_builds: Any, jobs: list[JobSpec]) -> None:
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_jobs):
            name = raw.get("name") if isinstance(raw, dict) else None
            if isinstance(name, str):
                if name in seen:
                    self.problem(("jobs", index, "name"), f"job {name!r} is defined twice")
                seen.setdefault(name, index)
        build_names: set[str] = set()
        for index, raw in enumerate(raw_builds if isinstance(raw_builds, list) else []):
            name = raw.get("name") if isinstance(raw, dict) else None
            if isinstance(name, str):
                if name in build_names:
                    self.problem(("builds", index, "name"), f"build {name!r} is defined twice")
                build_names.add(name)
        for job in jobs:
            if job.image_from_build and job.image_from_build not in build_names:
                hint = closest(job.image_from_build, sorted(build_names))
                message = f"no build named {job.image_from_build!r}"
                message += f" (did you mean {hint!r}?)" if hint else ""
                message += "; builds: " + (", ".join(sorted(build_names)) or "none defined")
                self.problem(("jobs", seen[job.name], "image_from_build"), message)


def parameter_problems(parameter: ParameterSpec) -> list[tuple[str, str]]:
    """(key, message) for each way `parameter` is not one jobbot accepts: its name (an
    environment variable a run may set), its pattern, choices and default."""
    problems: list[tuple[str, str]] = []
    name = parameter.name
    reason = forbidden(name)
    if not is_env_name(name):
        shown = name if name.isprintable() else repr(name)
        problems.append(("name", f"{shown!r} is not a valid environment variable name: use "
                                 "letters, digits and '_', not starting with a digit"))
    elif reason is not None:
        problems.append(("name", f"{name} {reason}: no run may set it"))
    if parameter.pattern is not None:
        if parameter.type != "string":
            problems.append(("pattern", f"only applies to type string, not {parameter.type}"))
        else:
            try:
                re.compile(parameter.pattern)
            except re.error as exc:
                problems.append(("pattern", f"{parameter.pattern!r} is not a regular "
                                            f"expression: {exc}"))
                return problems
    if parameter.type == "choice" and not parameter.choices:
        problems.append(("choices", "type choice needs choices, e.g. [staging, production]"))
    elif parameter.choices and parameter.type != "choice":
        problems.append(("choices", f"only apply to type choice, not {parameter.type}"))
    if len(set(parameter.choices)) != len(parameter.choices):
        problems.append(("choices", "each choice must appear once"))
    if parameter.default is not None:
        if parameter.secret:
            problems.append(("default", "a secret parameter has no default: it would be "
                                        "readable in app.yaml"))
        else:
            try:
                convert(parameter, parameter.default)
            except ValueError as exc:
                problems.append(("default", f"the default does not fit the parameter: {exc}"))
    return problems


def cron_problem(expression: str, job_name: str) -> str | None:
    """Why `expression` is not a schedule jobbot accepts, or None if it is fine."""
    text = expression.strip()
    if text.startswith("@"):
        if text in _ALIASES:
            return None
        return f"unknown schedule {text!r}; allowed: " + ", ".join(_ALIASES) + " or 5 cron fields"
    fields = text.split()
    if len(fields) != 5:
        return (
            f"{text!r} has {len(fields)} fields; a schedule has 5 "
            "(minute hour day-of-month month day-of-week), e.g. '0 3 * * *'"
        )
    if not croniter.is_valid(text, hash_id=job_name.encode()):
        return f"{text!r} is not a valid cron expression"
    return None


def iter_jobs(apps: Mapping[str, AppSpec]) -> Iterator[tuple[AppSpec, JobSpec]]:
    for app in apps.values():
        for job in app.jobs:
            yield app, job


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for name, f in current.model_fields.items()
                      if (f.alias or name) == str(part)), None)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        current = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)),
                       annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _keys(model: type[BaseModel]) -> set[str]:
    """The keys app.yaml writes for `model`'s fields (`from` and `self` of an approval)."""
    return {field.alias or name for name, field in model.model_fields.items()}


def _message(error: Any) -> str:
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if error["type"] in ("int_parsing", "int_type"):
        message = f"{error['input']!r} is not a whole number"
    elif error["type"] in ("bool_parsing", "bool_type"):
        message = f"{error['input']!r} is not true or false"
    elif error["type"] == "literal_error":
        message = f"{error['input']!r} is not allowed; {message[0].lower()}{message[1:]}"
    elif error["type"] in _BOUNDS:
        limit = next(iter(error.get("ctx", {}).values()), "?")
        message = f"{error['input']!r} is too {_BOUNDS[error['type']]} {limit}"
    elif error["type"] == "too_short":
        least = error.get("ctx", {}).get("min_length", 1)
        message = "must not be empty" if least == 1 else f"needs at least {least} items"
    return message


# pydantic's bound errors, as "is too small: at least N" and the like.
_BOUNDS = {"greater_than_equal": "small: the least allowed is",
           "greater_than": "small: it must be more than",
           "less_than_equal": "large: the most allowed is",
           "less_than": "large: it must be less than"}


def _dns_message(name: str) -> str:
    return (
        f"{name!r} is not a valid name: use at most 63 lowercase letters, digits and '-', "
        "starting and ending with a letter or digit"
    )


def _unique_sorted(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    seen: set[tuple[int, str, str]] = set()
    unique = []
    for problem in problems:
        key = (problem.line, problem.key, problem.message)
        if key not in seen:
            seen.add(key)
            unique.append(problem)
    return sorted(unique, key=lambda p: (p.line, p.key))

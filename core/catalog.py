"""The apps jobbot serves, and how `app/job` or a bare `job` name is resolved among them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from core.errors import NotFound
from core.names import closest
from core.spec import AppSpec, JobSpec


@dataclass(frozen=True)
class JobRef:
    app: AppSpec
    job: JobSpec

    @property
    def key(self) -> str:
        return f"{self.app.app}/{self.job.name}"


class Catalog:
    """Every app's definitions, keyed by app name; replaced whole when a file changes."""

    def __init__(self, apps: list[AppSpec]) -> None:
        self._apps = {app.app: app for app in apps}

    @property
    def apps(self) -> dict[str, AppSpec]:
        return dict(self._apps)

    def app(self, name: str) -> AppSpec:
        try:
            return self._apps[name]
        except KeyError:
            raise NotFound(f"no app {name!r}", closest(name, list(self._apps))) from None

    def replace(self, app: AppSpec) -> None:
        self._apps[app.app] = app

    def jobs(self) -> Iterator[JobRef]:
        for app in self._apps.values():
            for job in app.jobs:
                yield JobRef(app, job)

    def resolve(self, name: str) -> JobRef:
        """`app/job`, or `job` alone when only one app has a job of that name."""
        if "/" in name:
            app_name, job_name = name.split("/", 1)
            app = self.app(app_name)
            return JobRef(app, app.job(job_name))
        matches = [ref for ref in self.jobs() if ref.job.name == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            options = ", ".join(ref.key for ref in matches)
            raise NotFound(f"job {name!r} is in several apps; say which: {options}")
        names = [ref.job.name for ref in self.jobs()]
        raise NotFound(f"no job {name!r}", closest(name, names))

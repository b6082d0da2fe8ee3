"""Shared fixtures: a store on SQLite and on a real PostgreSQL server, app specs, services."""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from core.store import Store
from tests.support import hang_guard
from tests.support.fake_servers import github, kube, slack  # noqa: F401  (fixtures)
from tests.support.postgres import Cluster
from tests.support.stores import sqlite_store  # noqa: F401  (a fixture, for every test)

BACKENDS = ["sqlite", "postgresql"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Each test (its fixtures' setup and teardown too) runs under the hang guard."""
    capture = item.config.pluginmanager.getplugin("capturemanager")

    def release_output() -> str:
        if capture is None:
            return ""
        capture.suspend_global_capture(in_=False)
        out, err = capture.read_global_capture()
        return f"{out}{err}"

    with hang_guard.watch(item.nodeid, release_output):
        return (yield)


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test must never reach a real Slack or GitHub, whatever the developer's shell holds.
    for name in list(os.environ):
        if name.startswith(("SLACK_", "GITHUB_", "JOBBOT_")) and name != "JOBBOT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL: JOBBOT_TEST_DATABASE_URL, or a throwaway local cluster."""
    given = os.environ.get("JOBBOT_TEST_DATABASE_URL")
    if given:
        yield given
        return
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def _admin_engine(postgres_server: str) -> Iterator[sqlalchemy.Engine]:
    url = postgres_server.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def fresh_database_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of `kind`, dropped after the test."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'jobbot.db'}"
    admin: sqlalchemy.Engine = request.getfixturevalue("_admin_engine")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    request.addfinalizer(drop)
    return admin.url.set(database=name).render_as_string(hide_password=False).replace(
        "postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return fresh_database_url(request.param, tmp_path, request)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    store.migrate()
    yield store
    store.close()

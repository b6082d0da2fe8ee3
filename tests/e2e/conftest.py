"""Fixtures of the end-to-end suite: one real control plane per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.cluster import Binaries, KubeCluster


def pytest_configure(config: pytest.Config) -> None:
    """Register the e2e marker, so a unit-test run can deselect the suite with -m 'not e2e'."""
    config.addinivalue_line("markers", "e2e: needs the real control plane (make e2e)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e as e2e."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A running cluster. Build or start failures raise, so every e2e test fails (never skips)."""
    binaries = Binaries.build()
    cluster = KubeCluster(binaries, workdir=tmp_path_factory.mktemp("kube-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _cluster_alive(kube_cluster: KubeCluster) -> None:
    """Fail a test up front, with the component's log, if the cluster died before it."""
    kube_cluster.check_alive()


@pytest.fixture
def admin_client(kube_cluster: KubeCluster) -> client.ApiClient:
    """An ApiClient with cluster-admin rights, shared by the session."""
    return kube_cluster.admin


@pytest.fixture
def jobbot_client(kube_cluster: KubeCluster) -> Iterator[client.ApiClient]:
    """An ApiClient authenticated as the jobbot ServiceAccount (token from TokenRequest)."""
    api = kube_cluster.api_client(kube_cluster.jobbot_kubeconfig)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> str:
    """A fresh namespace for one test, ready for pods (its default ServiceAccount exists)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube_cluster.create_namespace(name)
    return name

"""A real Kubernetes control plane on 127.0.0.1 whose nodes and pods are simulated by kwok.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real binaries
(built by build.sh); only the kubelet is replaced by kwok, driven by the Stages in
./stages. Used by the pytest fixture in tests/e2e/conftest.py and by
`python -m tests.e2e.cluster up`.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .binaries import Binaries
from .components import (
    FAKE_NODE_ANNOTATION,
    SA_ISSUER,
    SERVICE_IP,
    Layout,
    Ports,
    apiserver_args,
    controller_manager_args,
    etcd_args,
    kwok_args,
    scheduler_args,
)
from .kubeconfig import write_kubeconfig
from .pki import Pki, generate_pki
from .procs import Component, ComponentError, Supervisor
from .wait import wait_for

logger = logging.getLogger(__name__)

JOBBOT_NAMESPACE = "jobbot"
JOBBOT_SERVICE_ACCOUNT = "jobbot"
START_TIMEOUT = 90.0


def cri_log_lines(lines: Iterable[str], stream: str = "stdout") -> str:
    """Render lines in the CRI log format kwok serves: `<RFC3339 time> <stream> F <text>`."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return "".join(f"{now} {stream} F {line}\n" for line in lines)


class KubeCluster:
    """Start, use and stop one throwaway cluster; also a context manager."""

    def __init__(self, binaries: Binaries, workdir: Path | None = None, nodes: int = 1) -> None:
        self.binaries = binaries
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="jobbot-e2e-"))
        self.nodes = [f"kwok-node-{i}" for i in range(nodes)]
        self.ports = Ports.pick()
        self.supervisor = Supervisor(self.workdir)
        self.server = self._server_url()
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self.jobbot_kubeconfig = self.workdir / "jobbot.kubeconfig"
        self.default_log = self.workdir / "logs" / "default.log"
        self._layout: Layout | None = None
        self._admin: client.ApiClient | None = None
        self.start_seconds: float | None = None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _server_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def start(self) -> None:
        """Start every component and wait until Jobs can run; on failure stop what started."""
        began = time.monotonic()
        for attempt in (1, 2):
            try:
                self._start()
                break
            except ComponentError as error:
                self.stop()
                # Ports are picked free but released before the components bind them, so a
                # parallel run can take one in between: retry once with fresh ports.
                if attempt == 2 or "address already in use" not in str(error):
                    raise
                logger.warning("a port was taken during start; retrying", exc_info=True)
                shutil.rmtree(self.workdir)
                self.ports = Ports.pick()
                self.server = self._server_url()
            except BaseException:
                self.stop()
                raise
        self.start_seconds = time.monotonic() - began
        logger.info(
            "cluster started",
            extra={"seconds": round(self.start_seconds, 1), "workdir": str(self.workdir)},
        )

    def stop(self) -> None:
        """Terminate every component; the work directory (logs) is kept for post-mortems."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self.supervisor.stop()

    def check_alive(self) -> None:
        """Raise ComponentError, with its log tail, if any component has died."""
        self.supervisor.check_alive()

    def remove_workdir(self) -> None:
        """Delete the work directory (certificates, etcd data, logs)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.set_default_log(["hello from jobbot e2e"])
        pki = generate_pki(self.workdir / "pki", SERVICE_IP)
        layout = self._layout = Layout(self.binaries, self.ports, pki, self.workdir)
        etcd = self.supervisor.start("etcd", etcd_args(layout))
        self._wait_http(etcd, f"http://127.0.0.1:{self.ports.etcd_client}/health", None)
        apiserver = self.supervisor.start("kube-apiserver", apiserver_args(layout))
        self._wait_http(apiserver, f"{self.server}/readyz", self._admin_ssl_context(pki))
        write_kubeconfig(
            self.admin_kubeconfig,
            server=self.server,
            ca_cert=pki.ca.cert,
            user="admin",
            client=pki.admin,
        )
        self.supervisor.start("kube-controller-manager", controller_manager_args(layout))
        self.supervisor.start("kube-scheduler", scheduler_args(layout))
        self._install_logs_crd()
        self.supervisor.start("kwok", kwok_args(layout))
        self._create_nodes()
        self._wait_nodes_ready()
        self._wait_service_account("default", "default")
        self._create_jobbot_identity()

    # -- readiness ------------------------------------------------------------------

    def _admin_ssl_context(self, pki: Pki) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(pki.ca.cert))
        context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        return context

    def _wait_http(self, component: Component, url: str, context: ssl.SSLContext | None) -> None:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        try:
            wait_for(
                healthy,
                timeout=START_TIMEOUT,
                what=f"{component.name} at {url}",
                on_tick=self.supervisor.check_alive,
            )
        except AssertionError as error:
            raise component.failure(str(error)) from None

    def _wait(self, what: str, probe: Callable[[], object], blame: str) -> None:
        """Wait for probe; on timeout raise with the log of the component to blame."""
        try:
            wait_for(
                probe,
                timeout=START_TIMEOUT,
                what=what,
                interval=0.2,
                on_tick=self.supervisor.check_alive,
            )
        except AssertionError as error:
            component = next(c for c in self.supervisor.components if c.name == blame)
            raise component.failure(str(error)) from None

    # -- API access -------------------------------------------------------------------

    @property
    def admin(self) -> client.ApiClient:
        """An ApiClient authenticated as cluster admin (system:masters)."""
        if self._admin is None:
            self._admin = config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        return self._admin

    def api_client(self, kubeconfig: Path) -> client.ApiClient:
        """A new ApiClient for a kubeconfig, e.g. jobbot_kubeconfig; the caller closes it."""
        return config.new_client_from_config(config_file=str(kubeconfig))

    def _install_logs_crd(self) -> None:
        ext = client.ApiextensionsV1Api(self.admin)
        body = yaml.safe_load(self.binaries.kwok_logs_crd.read_text())
        name = body["metadata"]["name"]
        ext.create_custom_resource_definition(body)

        def established() -> bool:
            crd = ext.read_custom_resource_definition(name)
            conditions = (crd.status and crd.status.conditions) or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        self._wait(f"CRD {name} established", established, "kube-apiserver")

    def _create_nodes(self) -> None:
        core = client.CoreV1Api(self.admin)
        for name in self.nodes:
            # No kwok taint: every node is fake, and product Jobs must schedule unchanged.
            core.create_node(
                client.V1Node(
                    metadata=client.V1ObjectMeta(
                        name=name,
                        annotations={FAKE_NODE_ANNOTATION: "fake"},
                        labels={
                            "type": "kwok",
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                        },
                    )
                )
            )

    def _wait_nodes_ready(self) -> None:
        core = client.CoreV1Api(self.admin)

        def ready(name: str) -> bool:
            node = core.read_node(name)
            conditions = (node.status and node.status.conditions) or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        def schedulable(name: str) -> bool:
            # The node-lifecycle controller lifts node.kubernetes.io/not-ready once Ready.
            node = core.read_node(name)
            return not (node.spec and node.spec.taints)

        self._wait(f"nodes {self.nodes} Ready", lambda: all(map(ready, self.nodes)), "kwok")
        self._wait(
            f"nodes {self.nodes} without taints",
            lambda: all(map(schedulable, self.nodes)),
            "kube-controller-manager",
        )

    def _wait_service_account(self, namespace: str, name: str) -> None:
        core = client.CoreV1Api(self.admin)

        def exists() -> bool:
            try:
                core.read_namespaced_service_account(name, namespace)
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            return True

        self._wait(f"ServiceAccount {namespace}/{name}", exists, "kube-controller-manager")

    def _create_jobbot_identity(self) -> None:
        assert self._layout is not None
        core = client.CoreV1Api(self.admin)
        self.create_namespace(JOBBOT_NAMESPACE)
        core.create_namespaced_service_account(
            JOBBOT_NAMESPACE,
            client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=JOBBOT_SERVICE_ACCOUNT)),
        )
        # A day, so a manual `make e2e-cluster-up` session keeps working.
        status = core.create_namespaced_service_account_token(
            JOBBOT_SERVICE_ACCOUNT,
            JOBBOT_NAMESPACE,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[SA_ISSUER], expiration_seconds=86400)
            ),
        ).status
        if status is None or not status.token:
            raise RuntimeError("TokenRequest for the jobbot ServiceAccount returned no token")
        token = status.token
        write_kubeconfig(
            self.jobbot_kubeconfig,
            server=self.server,
            ca_cert=self._layout.pki.ca.cert,
            user=f"system:serviceaccount:{JOBBOT_NAMESPACE}:{JOBBOT_SERVICE_ACCOUNT}",
            token=token,
            namespace=JOBBOT_NAMESPACE,
        )

    # -- helpers for tests --------------------------------------------------------------

    def create_namespace(self, name: str) -> None:
        """Create a namespace and wait for its default ServiceAccount (pods need it)."""
        client.CoreV1Api(self.admin).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
        self._wait_service_account(name, "default")

    def grant_jobbot(
        self, namespace: str, rules: Sequence[dict[str, Any]], name: str = "jobbot"
    ) -> None:
        """Create or replace a Role with rules in namespace, bound to the jobbot ServiceAccount."""
        self.apply_rbac(
            [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": name, "namespace": namespace},
                    "rules": list(rules),
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": name, "namespace": namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": name,
                    },
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "name": JOBBOT_SERVICE_ACCOUNT,
                            "namespace": JOBBOT_NAMESPACE,
                        }
                    ],
                },
            ]
        )

    def apply_rbac(self, manifests: Iterable[dict[str, Any]]) -> None:
        """Create or replace RBAC objects (Role, RoleBinding, ClusterRole, ClusterRoleBinding).

        Meant for the product's manifests/ once they exist; other kinds are refused so a
        typo does not silently do nothing.
        """
        rbac = client.RbacAuthorizationV1Api(self.admin)
        for doc in manifests:
            kind, meta = doc["kind"], doc["metadata"]
            snake = {
                "Role": "role",
                "RoleBinding": "role_binding",
                "ClusterRole": "cluster_role",
                "ClusterRoleBinding": "cluster_role_binding",
            }.get(kind)
            if snake is None:
                raise ValueError(f"apply_rbac handles RBAC kinds only, not {kind}")
            namespaced = kind in ("Role", "RoleBinding")
            ns_args = (meta["namespace"],) if namespaced else ()
            scope = "namespaced_" if namespaced else ""
            try:
                getattr(rbac, f"create_{scope}{snake}")(*ns_args, doc)
            except ApiException as error:
                if error.status != 409:
                    raise
                getattr(rbac, f"replace_{scope}{snake}")(meta["name"], *ns_args, doc)

    def set_default_log(self, lines: Iterable[str]) -> None:
        """Set the log every container serves unless set_pod_log chose one for its pod."""
        self.default_log.write_text(cri_log_lines(lines))

    def set_pod_log(self, namespace: str, pod: str, lines: Iterable[str]) -> None:
        """Make every container of one pod serve these lines (through a kwok Logs object)."""
        path = self.workdir / "logs" / f"{namespace}_{pod}.log"
        path.write_text(cri_log_lines(lines))
        body = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Logs",
            "metadata": {"name": pod, "namespace": namespace},
            "spec": {"logs": [{"logsFile": str(path), "follow": False}]},
        }
        client.CustomObjectsApi(self.admin).create_namespaced_custom_object(
            "kwok.x-k8s.io", "v1alpha1", namespace, "logs", body
        )

    def describe(self) -> str:
        """A short human summary: where things are and how to reach the cluster."""
        return json.dumps(
            {
                "server": self.server,
                "admin_kubeconfig": str(self.admin_kubeconfig),
                "jobbot_kubeconfig": str(self.jobbot_kubeconfig),
                "workdir": str(self.workdir),
                "nodes": self.nodes,
            },
            indent=2,
        )


__all__ = ["ComponentError", "KubeCluster", "cri_log_lines"]

"""Command lines of the cluster's components and kwok's configuration file."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import yaml

from .binaries import Binaries
from .kubeconfig import write_kubeconfig
from .pki import CertPair, Pki

STAGES_DIR = Path(__file__).with_name("stages")
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# kwok manages only nodes carrying this annotation (the selector kwok's docs use).
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class Ports:
    """The TCP ports on 127.0.0.1 of one cluster, picked free at start."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def pick(cls) -> Ports:
        """Ask the kernel for six distinct free ports (held open together so none repeats)."""
        sockets = [socket.socket() for _ in range(6)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for s in sockets:
                s.close()


@dataclass(frozen=True)
class Layout:
    """Where one cluster's pieces are: binaries, ports, certificates, work directory."""

    binaries: Binaries
    ports: Ports
    pki: Pki
    workdir: Path

    @property
    def server(self) -> str:
        """The apiserver's URL."""
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def default_log(self) -> Path:
        """The CRI log file every container serves unless a Logs object says otherwise."""
        return self.workdir / "logs" / "default.log"

    def kubeconfig(self, name: str, pair: CertPair) -> Path:
        """Write <workdir>/<name>.kubeconfig for a component's client certificate."""
        return write_kubeconfig(
            self.workdir / f"{name}.kubeconfig",
            server=self.server,
            ca_cert=self.pki.ca.cert,
            user=name,
            client=pair,
        )


def etcd_args(layout: Layout) -> list[str | Path]:
    """etcd over plain HTTP on 127.0.0.1 (nothing else can reach it)."""
    client_url = f"http://127.0.0.1:{layout.ports.etcd_client}"
    peer_url = f"http://127.0.0.1:{layout.ports.etcd_peer}"
    return [
        layout.binaries.etcd,
        "--name=e2e",
        f"--data-dir={layout.workdir / 'etcd'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=e2e={peer_url}",
        # Throwaway data: durability costs seconds per test run on a busy disk.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_args(layout: Layout) -> list[str | Path]:
    """kube-apiserver with RBAC, ServiceAccount tokens, and kwok as every node's kubelet."""
    pki = layout.pki
    return [
        layout.binaries.kube_apiserver,
        f"--etcd-servers=http://127.0.0.1:{layout.ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={layout.ports.apiserver}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        "--authorization-mode=Node,RBAC",
        # Added to the default plugins (NamespaceLifecycle, ServiceAccount, ...).
        "--enable-admission-plugins=NodeRestriction",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        # Pod logs: the apiserver dials the node's InternalIP (127.0.0.1) at the port
        # the node reports, i.e. kwok's server, and verifies kwok's serving cert.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-certificate-authority={pki.ca.cert}",
        f"--kubelet-client-certificate={pki.apiserver_kubelet_client.cert}",
        f"--kubelet-client-key={pki.apiserver_kubelet_client.key}",
        "--allow-privileged=true",
        "--profiling=false",
        f"--cert-dir={layout.workdir / 'apiserver-certs'}",
    ]


def controller_manager_args(layout: Layout) -> list[str | Path]:
    """kube-controller-manager with all default controllers."""
    pki = layout.pki
    kubeconfig = layout.kubeconfig("kube-controller-manager", pki.controller_manager)
    return [
        layout.binaries.kube_controller_manager,
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={layout.ports.controller_manager}",
        f"--cert-dir={layout.workdir / 'controller-manager-certs'}",
        "--leader-elect=false",
        # Each controller acts as its own ServiceAccount, so RBAC applies as in production.
        "--use-service-account-credentials=true",
        f"--root-ca-file={pki.ca.cert}",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--cluster-signing-cert-file={pki.ca.cert}",
        f"--cluster-signing-key-file={pki.ca.key}",
        # The default controllers: job, ttl-after-finished, garbage collector,
        # serviceaccount(-token), node lifecycle (it lifts the not-ready taint the
        # apiserver puts on new nodes), ...
        "--controllers=*",
        # kwok renews node leases; on a loaded CI machine a late renewal must not taint
        # the node and evict running pods, which no test here wants to exercise.
        "--node-monitor-grace-period=300s",
    ]


def scheduler_args(layout: Layout) -> list[str | Path]:
    """kube-scheduler with its defaults."""
    pki = layout.pki
    kubeconfig = layout.kubeconfig("kube-scheduler", pki.scheduler)
    return [
        layout.binaries.kube_scheduler,
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={layout.ports.scheduler}",
        f"--cert-dir={layout.workdir / 'scheduler-certs'}",
        "--leader-elect=false",
    ]


def kwok_args(layout: Layout) -> list[str | Path]:
    """kwok managing the nodes annotated as fake, serving logs on its own port."""
    pki = layout.pki
    kubeconfig = layout.kubeconfig("kwok", pki.kwok)
    return [
        layout.binaries.kwok,
        f"--kubeconfig={kubeconfig}",
        f"--config={write_kwok_config(layout)}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
        "--node-ip=127.0.0.1",
        f"--node-port={layout.ports.kwok}",
        f"--server-address=127.0.0.1:{layout.ports.kwok}",
        f"--tls-cert-file={pki.kwok_serving.cert}",
        f"--tls-private-key-file={pki.kwok_serving.key}",
        "--cidr=10.244.0.0/16",
        # Per-pod log files come from Logs objects created through the API.
        "--enable-crds=Logs",
    ]


def write_kwok_config(layout: Layout) -> Path:
    """Write kwok's --config: our Stages plus a ClusterLogs rule for the default log."""
    # No KwokConfiguration document: with one, kwok skips its defaults (parallelism 0).
    docs = [yaml.safe_load(p.read_text()) for p in sorted(STAGES_DIR.glob("*.yaml"))]
    # Every container without a Logs object of its own serves the default log file.
    docs.append(
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": "default-logs"},
            "spec": {"logs": [{"logsFile": str(layout.default_log), "follow": False}]},
        }
    )
    path = layout.workdir / "kwok.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path

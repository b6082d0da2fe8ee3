"""A real Kubernetes control plane with kwok-simulated nodes for jobbot's end-to-end tests."""

from .binaries import Binaries, BuildError
from .cluster import JOBBOT_NAMESPACE, JOBBOT_SERVICE_ACCOUNT, KubeCluster, cri_log_lines
from .procs import ComponentError
from .wait import WaitTimeout, wait_for

__all__ = [
    "JOBBOT_NAMESPACE",
    "JOBBOT_SERVICE_ACCOUNT",
    "Binaries",
    "BuildError",
    "ComponentError",
    "KubeCluster",
    "WaitTimeout",
    "cri_log_lines",
    "wait_for",
]

"""Locate the control-plane binaries, building them with build.sh when they are missing."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build.sh")


class BuildError(RuntimeError):
    """build.sh failed; the message carries the end of its output."""


@dataclass(frozen=True)
class Binaries:
    """Paths of every executable the cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kwok_logs_crd: Path

    @classmethod
    def build(cls) -> Binaries:
        """Run build.sh (about a second when the cache is warm) and parse the paths it prints."""
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            raise BuildError(f"{BUILD_SCRIPT} failed with status {result.returncode}:\n{output}")
        dirs = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        kube = Path(dirs["kube"])
        kwok = Path(dirs["kwok"])
        binaries = cls(
            etcd=Path(dirs["etcd"]) / "etcd",
            kube_apiserver=kube / "kube-apiserver",
            kube_controller_manager=kube / "kube-controller-manager",
            kube_scheduler=kube / "kube-scheduler",
            kwok=kwok / "kwok",
            kwok_logs_crd=kwok.parent / "crd" / "kwok.x-k8s.io_logs.yaml",
        )
        missing = [str(p) for p in vars(binaries).values() if not Path(p).exists()]
        if missing:
            raise BuildError(f"{BUILD_SCRIPT} succeeded but these are missing: {missing}")
        return binaries

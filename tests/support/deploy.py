"""The tools that build jobbot's own deployment (kustomize, helm), from the project's cache."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "jobbot"
# The Kubernetes versions whose schemas every deployment object is validated against.
VERSIONS = ["1.33.0", "1.34.0"]


def ensured(tool: str) -> str:
    """The path of the pinned `tool`, built into the cache by scripts/ensure-<tool>.sh if absent."""
    result = subprocess.run(["bash", str(ROOT / "scripts" / f"ensure-{tool}.sh")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([ensured("kustomize"), "build", str(path)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ensured("helm"), *args], capture_output=True, text=True, check=False)


def helm_template(*args: str, kube_version: str = VERSIONS[-1],
                  namespace: str = "jobbot") -> list[dict[str, Any]]:
    """The objects `helm install jobbot charts/jobbot --namespace NAMESPACE ARGS` would create."""
    result = helm("template", "jobbot", str(CHART), "--namespace", namespace,
                  "--kube-version", kube_version, *args)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)

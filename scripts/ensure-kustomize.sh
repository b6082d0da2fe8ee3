#!/usr/bin/env bash
# The pinned kustomize, built once into the cache (scripts/go-tool.sh). Prints its path.
set -euo pipefail
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.7.1}"
exec bash "$(dirname "$0")/go-tool.sh" kustomize "$KUSTOMIZE_VERSION" \
  "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" 1.22+

#!/usr/bin/env bash
# The pinned helm, built once into the cache (scripts/go-tool.sh). Prints its path.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v4.3.2}"
major="${HELM_VERSION%%.*}"
# helm reports its version from this variable; a plain `go install` leaves it empty.
exec bash "$(dirname "$0")/go-tool.sh" helm "$HELM_VERSION" \
  "helm.sh/helm/$major/cmd/helm@$HELM_VERSION" 1.25+ \
  -ldflags "-X helm.sh/helm/$major/internal/version.version=$HELM_VERSION"

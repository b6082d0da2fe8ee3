#!/usr/bin/env bash
# Build the pinned helm from the Go module proxy into the cache (outside the checkout),
# once; later calls find it there. Prints the binary's path.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.2}"
CACHE="${JOBBOT_CACHE:-$HOME/.cache/jobbot}"
BIN_DIR="$CACHE/bin"
TARGET="$BIN_DIR/helm-$HELM_VERSION"

if [[ -x "$TARGET" ]]; then
  echo "$TARGET"
  exit 0
fi
GO="$(command -v go || true)"
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]]; then
  echo "ensure-helm: Go is needed to build helm $HELM_VERSION (install Go 1.25+)" >&2
  exit 1
fi
mkdir -p "$BIN_DIR"
exec 9>"$BIN_DIR/.helm.lock"
flock 9
if [[ ! -x "$TARGET" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  major="${HELM_VERSION%%.*}"
  # helm reports its version from this variable; a plain `go install` leaves it empty.
  GOBIN="$work" GOFLAGS=-modcacherw GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" \
    "$GO" install -ldflags "-X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION" >&2
  mv "$work/helm" "$TARGET"
fi
echo "$TARGET"

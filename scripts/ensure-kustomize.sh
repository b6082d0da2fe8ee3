#!/usr/bin/env bash
# Build the pinned kustomize from the Go module proxy into the cache (outside the checkout),
# once; later calls find it there. Prints the binary's path.
set -euo pipefail

KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.7.1}"
CACHE="${JOBBOT_CACHE:-$HOME/.cache/jobbot}"
BIN_DIR="$CACHE/bin"
TARGET="$BIN_DIR/kustomize-$KUSTOMIZE_VERSION"

if [[ -x "$TARGET" ]]; then
  echo "$TARGET"
  exit 0
fi
GO="$(command -v go || true)"
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]]; then
  echo "ensure-kustomize: Go is needed to build kustomize $KUSTOMIZE_VERSION (install Go 1.22+)" >&2
  exit 1
fi
mkdir -p "$BIN_DIR"
exec 9>"$BIN_DIR/.kustomize.lock"
flock 9
if [[ ! -x "$TARGET" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  GOBIN="$work" GOFLAGS=-modcacherw GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" \
    "$GO" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
  mv "$work/kustomize" "$TARGET"
fi
echo "$TARGET"

#!/usr/bin/env bash
# Build a pinned Go tool from the Go module proxy into the cache (outside the checkout), once;
# later calls find it there. Prints the binary's path. Shared by ensure-kustomize.sh and
# ensure-helm.sh:
#   go-tool.sh NAME VERSION PACKAGE@VERSION GO_NEEDED [go install flags...]
set -euo pipefail

NAME="$1" VERSION="$2" PACKAGE="$3" GO_NEEDED="$4"
shift 4
CACHE="${JOBBOT_CACHE:-$HOME/.cache/jobbot}"
BIN_DIR="$CACHE/bin"
TARGET="$BIN_DIR/$NAME-$VERSION"

if [[ -x "$TARGET" ]]; then
  echo "$TARGET"
  exit 0
fi
GO="$(command -v go || true)"
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]]; then
  echo "ensure-$NAME: Go is needed to build $NAME $VERSION (install Go $GO_NEEDED)" >&2
  exit 1
fi
mkdir -p "$BIN_DIR"
exec 9>"$BIN_DIR/.$NAME.lock"
flock 9
if [[ ! -x "$TARGET" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  GOBIN="$work" GOFLAGS=-modcacherw GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" \
    "$GO" install "$@" "$PACKAGE" >&2
  mv "$work/$NAME" "$TARGET"
fi
echo "$TARGET"

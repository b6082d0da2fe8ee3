#!/usr/bin/env bash
# Build (once) and cache the binaries of a real Kubernetes control plane for the e2e suite:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.
#
# Everything lives outside the checkout, under ${JOBBOT_CACHE:-~/.cache/jobbot}, so a fresh
# clone on the same machine reuses it. Each component has its own directory with a stamp
# file; a component whose stamp and binaries exist is skipped.
#
# Prints the directory holding the binaries (one per line: component=dir) on stdout when done.
set -euo pipefail

# v1.34.4 is the newest 1.34 patch release whose go.mod the checksum database verifies from
# here (v1.34.12 exists on the module proxy but its sumdb lookup answers 404).
KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"

CACHE="${JOBBOT_CACHE:-$HOME/.cache/jobbot}"
K8S_CACHE="$CACHE/k8s"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

# Keep Go's caches with ours so a second clone downloads and compiles nothing;
# GOTOOLCHAIN=local because a toolchain switch would be a download we do not want;
# -modcacherw so that `rm -rf` of the cache works without chmod.
export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false -modcacherw"
export CGO_ENABLED=0

log() { echo "build.sh: $*" >&2; }

# Staging/sibling modules are required and replaced by local paths in upstream go.mod
# files; print each such module. Replaces of modules that are not required (etcd's
# ./FORBIDDEN_DEPENDENCY guards) are left out.
local_replaces() {
    "$GO" mod edit -json "$1" | python3 -c '
import json, sys
mod = json.load(sys.stdin)
required = {r["Path"] for r in mod.get("Require") or []}
for r in mod.get("Replace") or []:
    if r["New"]["Path"].startswith(".") and r["Old"]["Path"] in required:
        print(r["Old"]["Path"])
'
}

# build_wrapped DIR MODULE VERSION REPLACE_VERSION LDFLAGS PKG...
# Generates a throwaway module in DIR/src that requires MODULE@VERSION and replaces every
# locally-replaced sibling module by its published REPLACE_VERSION, then builds PKGs into DIR/bin.
build_wrapped() {
    local dir="$1" module="$2" version="$3" replace_version="$4" ldflags="$5"
    shift 5
    local src="$dir/src"
    rm -rf "$src" && mkdir -p "$src" "$dir/bin"
    log "downloading $module@$version"
    local gomod
    gomod="$(cd "$src" && "$GO" mod download -json "$module@$version" | python3 -c '
import json, sys
info = json.load(sys.stdin)
if "Error" in info:
    sys.exit("go mod download failed: " + info["Error"])
print(info["GoMod"])
')"
    {
        echo "module jobbot.local/e2e-wrapper"
        echo
        echo "go $("$GO" mod edit -json "$gomod" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Go"])')"
        echo
        echo "require $module $version"
        echo
        local m
        for m in $(local_replaces "$gomod"); do
            echo "replace $m => $m $replace_version"
        done
    } >"$src/go.mod"
    log "building $* (this is the slow part)"
    (cd "$src" && "$GO" build -mod=mod -trimpath -ldflags "$ldflags" -o "$dir/bin/" "$@")
}

# component_done DIR STAMP: true when DIR's stamp says STAMP.
component_done() { [[ -f "$1/stamp" && "$(cat "$1/stamp")" == "$2" ]]; }

build_etcd() {
    local dir="$K8S_CACHE/etcd-$ETCD_VERSION" stamp="etcd $ETCD_VERSION go=$("$GO" env GOVERSION)"
    if component_done "$dir" "$stamp" && [[ -x "$dir/bin/etcd" ]]; then return; fi
    build_wrapped "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" "-s -w" \
        go.etcd.io/etcd/server/v3
    # Go names the binary after the last non-version path element: "server".
    mv "$dir/bin/server" "$dir/bin/etcd"
    "$dir/bin/etcd" --version >&2
    echo "$stamp" >"$dir/stamp"
}

build_kube() {
    local dir="$K8S_CACHE/$KUBE_VERSION" stamp="kubernetes $KUBE_VERSION go=$("$GO" env GOVERSION)"
    if component_done "$dir" "$stamp" && [[ -x "$dir/bin/kube-apiserver" && -x "$dir/bin/kube-controller-manager" && -x "$dir/bin/kube-scheduler" ]]; then return; fi
    local minor="${KUBE_VERSION#v1.}"
    minor="${minor%%.*}"
    # Without these the binaries report v0.0.0 and the apiserver's /version is useless.
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    build_wrapped "$dir" k8s.io/kubernetes "$KUBE_VERSION" "v0.${KUBE_VERSION#v1.}" "$ldflags" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler
    "$dir/bin/kube-apiserver" --version >&2
    echo "$stamp" >"$dir/stamp"
}

build_kwok() {
    local dir="$K8S_CACHE/kwok-$KWOK_VERSION" stamp="kwok $KWOK_VERSION go=$("$GO" env GOVERSION)"
    local crd="$dir/crd/kwok.x-k8s.io_logs.yaml"
    if component_done "$dir" "$stamp" && [[ -x "$dir/bin/kwok" && -f "$crd" ]]; then return; fi
    mkdir -p "$dir/bin" "$dir/crd"
    log "building kwok $KWOK_VERSION"
    GOBIN="$dir/bin" "$GO" install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    # The cluster installs kwok's Logs CRD so tests can choose a single pod's log file.
    install -m 0644 "$GOMODCACHE/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/crd/bases/kwok.x-k8s.io_logs.yaml" "$crd"
    echo "$stamp" >"$dir/stamp"
}

main() {
    if ! [[ -x "$GO" ]]; then
        echo "build.sh: Go not found (looked on PATH and at /usr/local/go/bin/go); install Go >= 1.26 or set GO=/path/to/go" >&2
        exit 1
    fi
    mkdir -p "$K8S_CACHE"
    # Two clones building at once (parallel CI jobs) must not write the same directories.
    exec 9>"$K8S_CACHE/build.lock"
    flock 9
    local only="${1:-all}"
    case "$only" in
        etcd) build_etcd ;;
        kube) build_kube ;;
        kwok) build_kwok ;;
        all) build_etcd; build_kwok; build_kube ;;
        *) echo "usage: $0 [all|etcd|kube|kwok]" >&2; exit 2 ;;
    esac
    echo "etcd=$K8S_CACHE/etcd-$ETCD_VERSION/bin"
    echo "kube=$K8S_CACHE/$KUBE_VERSION/bin"
    echo "kwok=$K8S_CACHE/kwok-$KWOK_VERSION/bin"
}

main "$@"

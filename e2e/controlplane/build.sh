#!/usr/bin/env bash
# Builds (once) and caches the pinned control-plane binaries the e2e tests run:
# etcd from go.etcd.io/etcd/server/v3, and kube-apiserver, kube-controller-manager and
# kubectl from k8s.io/kubernetes. Kubernetes is consumed as a Go module dependency: its
# go.mod points the k8s.io/* staging modules at ./staging, which a dependant cannot see,
# so we pin each of them with a replace directive to the matching published v0.X.Y.
#
# Usage: e2e/controlplane/build.sh [KUBE_VERSION]      (default: $PSSO_KUBE_VERSION or 1.37.2)
# Prints the directory that holds the binaries on its last line.
# Cache: ${PSSO_CACHE_DIR:-~/.cache/pssession-operator}/controlplane/<kube>-etcd<etcd>/
# Go's module and build caches stay where Go keeps them (GOMODCACHE, GOCACHE), outside the repo.
set -euo pipefail

KUBE_VERSION="${1:-${PSSO_KUBE_VERSION:-1.37.2}}"
KUBE_VERSION="${KUBE_VERSION#v}"
ETCD_VERSION="${PSSO_ETCD_VERSION:-3.7.3}"
CACHE_ROOT="${PSSO_CACHE_DIR:-$HOME/.cache/pssession-operator}/controlplane"
OUT="$CACHE_ROOT/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)

log() { printf '[controlplane-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

complete() {
  for b in "${BINARIES[@]}"; do [[ -x "$OUT/bin/$b" ]] || return 1; done
  [[ -f "$OUT/bin/.complete" ]]
}

if complete; then
  log "cached: $OUT/bin"
  echo "$OUT/bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0
mkdir -p "$OUT/bin"
STAGING_MINOR="0.${KUBE_VERSION#1.}"

# new_module DIR NAME REQUIRE PACKAGE...: a throwaway module that requires REQUIRE and imports the
# main PACKAGEs (behind a build tag), so `go mod tidy` resolves everything they need.
new_module() {
  local dir="$1" name="$2" require="$3"; shift 3
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  go mod init "$name" >/dev/null 2>&1
  go mod edit -require="$require"
  { printf '//go:build tools\n\npackage tools\n\nimport (\n'; printf '\t_ "%s"\n' "$@"; printf ')\n'; } > tools.go
}

# -e: tidy also walks the test imports of every dependency, some of which do not resolve outside
# their own repositories; the build below fails loudly if anything it needs is missing.
resolve() { go mod tidy -e >/dev/null 2>&1 || true; go mod download; }

# build_binary NAME PACKAGE LDFLAGS: builds into the cache, atomically.
build_binary() {
  log "building $1"
  go build -tags tools -trimpath -ldflags "$3" -o "$OUT/bin/$1.tmp" "$2"
  mv "$OUT/bin/$1.tmp" "$OUT/bin/$1"
}

build_k8s() {
  local commands=(kube-apiserver kube-controller-manager kubectl)
  new_module "$OUT/k8s-module" psso.local/controlplane-k8s "k8s.io/kubernetes@v$KUBE_VERSION" \
    "${commands[@]/#/k8s.io/kubernetes/cmd/}"
  # The staging modules kubernetes requires as v0.0.0 and replaces with ./staging/...
  local gomod staging
  gomod="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  staging="$(grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}')"
  [[ -n "$staging" ]] || { log "no staging replaces found in $gomod"; exit 1; }
  for m in $staging; do
    go mod edit -replace="$m=$m@v$STAGING_MINOR"
  done
  log "resolving k8s.io/kubernetes v$KUBE_VERSION (staging v$STAGING_MINOR)"
  resolve
  local version="-X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION"
  version+=" -X k8s.io/component-base/version.gitMajor=1"
  version+=" -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
  version+=" -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION"
  for b in "${commands[@]}"; do
    build_binary "$b" "k8s.io/kubernetes/cmd/$b" "-s -w $version"
  done
}

build_etcd() {
  new_module "$OUT/etcd-module" psso.local/controlplane-etcd "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" \
    go.etcd.io/etcd/server/v3
  log "resolving go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
  resolve
  build_binary etcd go.etcd.io/etcd/server/v3 "-s -w"
}

start=$(date +%s)
[[ -x "$OUT/bin/etcd" ]] || build_etcd
for b in kube-apiserver kube-controller-manager kubectl; do
  [[ -x "$OUT/bin/$b" ]] || { build_k8s; break; }
done
touch "$OUT/bin/.complete"
log "built in $(( $(date +%s) - start ))s: $OUT/bin"
echo "$OUT/bin"

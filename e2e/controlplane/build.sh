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

build_k8s() {
  local mod="$OUT/k8s-module"
  rm -rf "$mod"; mkdir -p "$mod"
  cd "$mod"
  go mod init psso.local/controlplane-k8s >/dev/null 2>&1
  go mod edit -require="k8s.io/kubernetes@v$KUBE_VERSION"
  # The staging modules kubernetes requires as v0.0.0 and replaces with ./staging/...
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  local staging
  staging="$(grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}')"
  [[ -n "$staging" ]] || { log "no staging replaces found in $gomod"; exit 1; }
  for m in $staging; do
    go mod edit -replace="$m=$m@v$STAGING_MINOR"
  done
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "resolving k8s.io/kubernetes v$KUBE_VERSION (staging v$STAGING_MINOR)"
  go mod tidy -e >/dev/null 2>&1 || true
  go mod download
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION"
  for b in kube-apiserver kube-controller-manager kubectl; do
    log "building $b"
    go build -tags tools -trimpath -ldflags "$ldflags" -o "$OUT/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv "$OUT/bin/$b.tmp" "$OUT/bin/$b"
  done
}

build_etcd() {
  local mod="$OUT/etcd-module"
  rm -rf "$mod"; mkdir -p "$mod"
  cd "$mod"
  go mod init psso.local/controlplane-etcd >/dev/null 2>&1
  go mod edit -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  log "resolving go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
  go mod tidy -e >/dev/null 2>&1 || true
  go mod download
  log "building etcd"
  go build -tags tools -trimpath -ldflags "-s -w" -o "$OUT/bin/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$OUT/bin/etcd.tmp" "$OUT/bin/etcd"
}

start=$(date +%s)
[[ -x "$OUT/bin/etcd" ]] || build_etcd
for b in kube-apiserver kube-controller-manager kubectl; do
  [[ -x "$OUT/bin/$b" ]] || { build_k8s; break; }
done
touch "$OUT/bin/.complete"
log "built in $(( $(date +%s) - start ))s: $OUT/bin"
echo "$OUT/bin"

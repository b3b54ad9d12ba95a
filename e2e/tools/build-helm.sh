#!/usr/bin/env bash
# Builds (once) and caches a pinned helm from its published Go module, for the chart's checks
# (helm lint, helm template). No release download site is reachable here; the Go module proxy is.
#
# Usage: e2e/tools/build-helm.sh        prints the helm binary's path on its last line
# Cache: ${PSSO_CACHE_DIR:-~/.cache/pssession-operator}/helm-<version>/helm
set -euo pipefail

HELM_VERSION="${PSSO_HELM_VERSION:-3.22.0}"
OUT="${PSSO_CACHE_DIR:-$HOME/.cache/pssession-operator}/helm-$HELM_VERSION"

if [[ -x "$OUT/helm" ]]; then
  echo "$OUT/helm"
  exit 0
fi
# Tests start operators side by side, and each may ask for helm: one builds, the others wait.
mkdir -p "$(dirname "$OUT")"
exec 9>"$OUT.lock"
flock 9
if [[ -x "$OUT/helm" ]]; then
  echo "$OUT/helm"
  exit 0
fi
command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }
mkdir -p "$OUT"
echo "building helm v$HELM_VERSION from helm.sh/helm/v3 (cached afterwards)" >&2
GOBIN="$OUT.tmp" CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
mv "$OUT.tmp/helm" "$OUT/helm"
rmdir "$OUT.tmp"
echo "$OUT/helm"

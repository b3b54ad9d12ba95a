# Shared by ./test and ./demo: installs what the proving ground needs (Debian packages, the pinned
# Python venv, the Go-built control plane binaries, all cached) and times each phase.
# Sourced, not run: it defines functions and exports PSSO_VENV and PSSO_CONTROLPLANE_BIN.

# musl-tools: the C side (ring) of the statically linked operator binary; binutils: readelf checks it.
# krb5-kdc, krb5-admin-server (kadmin.local), krb5-gss-samples (gss-server): a real KDC and GSS
# acceptor for psrp's Kerberos test (the `kerberos` feature).
APT_PACKAGES=(openssh-server openssh-client socat nftables iproute2 procps musl-tools binutils
  krb5-kdc krb5-admin-server krb5-gss-samples)
PHASES=()

phase() {
  local name="$1"; shift
  local start; start=$(date +%s)
  printf '\n=== %s\n' "$name"
  "$@"
  local took=$(( $(date +%s) - start ))
  PHASES+=("$(printf '%-28s %5ss' "$name" "$took")")
  printf '=== %s: %ss\n' "$name" "$took"
}

install_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "all present: ${APT_PACKAGES[*]}"
  fi
}

python_env() { PSSO_VENV="$(e2e/python-env.sh)"; export PSSO_VENV; echo "venv: $PSSO_VENV"; }
control_plane() { PSSO_CONTROLPLANE_BIN="$(e2e/controlplane/build.sh)"; export PSSO_CONTROLPLANE_BIN; }

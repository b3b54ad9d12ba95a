#!/usr/bin/env bash
# Creates (once) the cached Python venv for the proving ground and prints its path.
# The venv is keyed by the hash of requirements.txt, so a pin change makes a new one.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
key="$(sha256sum "$req" | cut -c1-12)"
venv="${PSSO_CACHE_DIR:-$HOME/.cache/pssession-operator}/venv-$key"
if [[ ! -x "$venv/bin/python" || ! -f "$venv/.complete" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  touch "$venv/.complete"
fi
echo "$venv"

"""Where the harness finds its programs and keeps machine-wide bookkeeping."""
from __future__ import annotations

from pathlib import Path

# The entry point beside this package, not a module in it: the run's own processes (supervisor,
# teardown, relay) re-execute it by path, as e2e/src/hosts.rs and the tests do.
HOSTCTL = Path(__file__).resolve().parent.parent / "hostctl.py"
E2E_DIR = HOSTCTL.parent.parent
PEER_DIR = E2E_DIR / "peer"
PEER_MAIN = PEER_DIR / "psrp_peer" / "__main__.py"
SHIM = PEER_DIR / "pwsh-shim"
PYTHON_ENV_SCRIPT = E2E_DIR / "python-env.sh"
SSHD = "/usr/sbin/sshd"

# Run bookkeeping shared by all runs on the machine. /run is a tmpfs, like the netns mounts in
# /run/netns, so a reboot clears both together.
REGISTRY_DIR = Path("/run/psso-hosts")
